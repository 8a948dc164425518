"""Single-file (original LDM layout) checkpoints written from diffusers folders."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sdstudio.testing.checkpoints import (
    convert_unet_to_original,
    convert_vae_to_original,
    save_single_file_checkpoint,
)

COMPONENT_FILES = {
    "unet": "unet/diffusion_pytorch_model.safetensors",
    "vae": "vae/diffusion_pytorch_model.safetensors",
    "text_encoder": "text_encoder/model.safetensors",
}


class _Records(logging.Handler):
    """Collects diffusers' log records (its loggers do not propagate to caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_keys_use_original_prefixes(tiny_model: Path, tmp_path: Path) -> None:
    path = save_single_file_checkpoint(tiny_model, tmp_path / "tiny.safetensors")
    checkpoint = load_file(str(path))
    prefixes = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.")
    assert all(key.startswith(prefixes) for key in checkpoint)
    for key in (
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.input_blocks.2.0.op.weight",
        "model.diffusion_model.middle_block.1.proj_in.weight",
        "model.diffusion_model.output_blocks.1.2.conv.weight",
        "first_stage_model.decoder.up.3.upsample.conv.weight",
        "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
    ):
        assert key in checkpoint
    assert checkpoint["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (32, 32, 1, 1)
    expected = sum(len(load_file(str(tiny_model / f))) for f in COMPONENT_FILES.values())
    assert len(checkpoint) == expected


@pytest.mark.parametrize(
    ("fixture", "pipeline", "in_channels"),
    [
        ("tiny_model", "StableDiffusionPipeline", 4),
        ("tiny_inpainting_model", "StableDiffusionInpaintPipeline", 9),
    ],
)
def test_single_file_loads_identical_weights(
    fixture: str, pipeline: str, in_channels: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    import diffusers

    folder: Path = request.getfixturevalue(fixture)
    cls = getattr(diffusers, pipeline)
    path = save_single_file_checkpoint(folder, tmp_path / "model.safetensors")

    records = _Records()
    diffusers_logger = logging.getLogger("diffusers")
    diffusers_logger.addHandler(records)
    try:
        pipe = cls.from_single_file(
            str(path),
            config=str(folder),
            local_files_only=True,
            safety_checker=None,
            requires_safety_checker=False,
        )
    finally:
        diffusers_logger.removeHandler(records)
    assert not [m for m in records.messages if "not used" in m or "missing" in m.lower()]

    for name, file in COMPONENT_FILES.items():
        expected = load_file(str(folder / file))
        loaded = getattr(pipe, name).state_dict()
        assert loaded.keys() == expected.keys(), name
        for key, tensor in expected.items():
            assert loaded[key].dtype == tensor.dtype, key
            assert torch.equal(loaded[key], tensor), key
    assert pipe.unet.config.in_channels == in_channels


def test_dtype_option_stores_float16(tiny_model: Path, tmp_path: Path) -> None:
    path = save_single_file_checkpoint(
        tiny_model, tmp_path / "fp16.safetensors", dtype=torch.float16
    )
    assert {tensor.dtype for tensor in load_file(str(path)).values()} == {torch.float16}


def test_sd15_architecture_round_trips_through_diffusers_converters() -> None:
    """The real SD 1.5 shapes (built on the meta device, so no memory) map back exactly."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        CHECKPOINT_KEY_NAMES,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=768)
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
        )

    unet_state = unet.state_dict()
    original = convert_unet_to_original(unet_state, unet.config)
    for key in (
        CHECKPOINT_KEY_NAMES["v1"],
        "model.diffusion_model.input_blocks.9.0.op.weight",
        "model.diffusion_model.output_blocks.2.1.conv.weight",
        "model.diffusion_model.output_blocks.8.2.conv.weight",
        "model.diffusion_model.middle_block.2.out_layers.3.weight",
    ):
        assert key in original
    back = convert_ldm_unet_checkpoint(original, dict(unet.config))
    assert back.keys() == unet_state.keys()
    assert all(back[key] is unet_state[key] for key in unet_state)

    vae_state = vae.state_dict()
    original = convert_vae_to_original(vae_state, vae.config)
    assert "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight" in original
    attention_out = original["first_stage_model.decoder.mid.attn_1.proj_out.weight"]
    assert attention_out.shape == (512, 512, 1, 1)
    back = convert_ldm_vae_checkpoint(original, dict(vae.config))
    assert back.keys() == vae_state.keys()
    assert all(back[key].shape == vae_state[key].shape for key in vae_state)
