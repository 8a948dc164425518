"""Model families from headers, shipped offline configs, restricted pickles, clear errors."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sdstudio.engine.errors import ModelError
from sdstudio.engine.models.families import (
    CONV_IN,
    Family,
    ModelInfo,
    detect_family,
    detect_family_from_header,
    detect_folder_family,
)
from sdstudio.engine.models.loading import config_folder, configs_root, load_pickle_state_dict

FAMILY_FOLDERS = {"sd1": Family.SD1, "sd2": Family.SD2, "sdxl": Family.SDXL}


def meta_shapes(family: str) -> dict[str, tuple[int, ...]]:
    """Original-layout names and shapes of a full-size family, built on the meta device."""
    from sdstudio.testing.checkpoints import random_original_checkpoint

    state = random_original_checkpoint(configs_root() / family, device="meta")
    return {key: tuple(value.shape) for key, value in state.items()}


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdstudio.testing.checkpoints import save_single_file_checkpoint

    folder = tmp_path_factory.mktemp("checkpoints")
    return save_single_file_checkpoint(tiny_model, folder / "tiny.safetensors")


class Payload:
    """A pickled object that would create ``marker`` when unpickled without restrictions."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.marker), "w"))


# Detection from headers and folders (fast).


def test_tiny_single_files_are_detected_from_their_header(
    tiny_checkpoint: Path, tiny_inpainting_model: Path, tmp_path: Path
) -> None:
    from sdstudio.testing.checkpoints import save_single_file_checkpoint

    info = detect_family(tiny_checkpoint)
    assert info == ModelInfo(Family.SD1, inpainting=False, prediction_type=None)
    assert info.label == "SD 1.x"
    inpaint = detect_family(
        save_single_file_checkpoint(tiny_inpainting_model, tmp_path / "inpaint.safetensors")
    )
    assert (inpaint.family, inpaint.inpainting, inpaint.label) == (
        Family.SD1,
        True,
        "SD 1.x inpainting",
    )


@pytest.mark.parametrize(("folder", "family"), FAMILY_FOLDERS.items())
@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_full_size_families_are_detected_from_names_and_shapes(folder: str, family) -> None:
    shapes = meta_shapes(folder)
    assert detect_family_from_header(shapes) == ModelInfo(family)
    out_channels = shapes[CONV_IN][0]
    inpainting = detect_family_from_header({**shapes, CONV_IN: (out_channels, 9, 3, 3)})
    assert inpainting.inpainting and inpainting.family is family


def test_detection_falls_back_to_the_cross_attention_width() -> None:
    for folder, family in FAMILY_FOLDERS.items():
        unet_only = {k: v for k, v in meta_shapes(folder).items() if k.startswith("model.")}
        assert detect_family_from_header(unet_only).family is family


def test_sdxl_refiner_and_non_models_are_told_apart() -> None:
    sdxl = meta_shapes("sdxl")
    refiner = {
        k.replace("conditioner.embedders.1.", "conditioner.embedders.0."): v
        for k, v in sdxl.items()
        if not k.startswith("conditioner.embedders.0.")
    }
    assert detect_family_from_header(refiner).label == "SDXL refiner"
    lora = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)}
    assert detect_family_from_header(lora).family is Family.UNKNOWN
    assert detect_family_from_header({**sdxl, "v_pred": ()}).prediction_type == "v_prediction"


def test_folders_are_detected_from_their_configs(
    tiny_model: Path, tiny_inpainting_model: Path
) -> None:
    assert detect_folder_family(tiny_model) == ModelInfo(Family.SD1, False, "epsilon")
    assert detect_folder_family(tiny_inpainting_model).inpainting
    for folder, family in FAMILY_FOLDERS.items():
        assert detect_family(configs_root() / folder).family is family


def test_a_sidecar_yaml_says_v_prediction(tiny_checkpoint: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "sd21-768.safetensors"
    checkpoint.symlink_to(tiny_checkpoint)
    checkpoint.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert detect_family(checkpoint).prediction_type == "v_prediction"
    assert "v-prediction" in detect_family(checkpoint).label


@pytest.mark.parametrize(
    "damage",
    [lambda data: data[: len(data) // 2], lambda data: data[:5], lambda data: b"<html>" + data],
)
def test_truncated_or_foreign_files_give_a_clear_error(
    tiny_checkpoint: Path, tmp_path: Path, damage
) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(damage(tiny_checkpoint.read_bytes()))
    with pytest.raises(ModelError, match=r"broken\.safetensors is truncated or damaged"):
        detect_family(broken)


# Shipped configs (fast: configs and tokenizers only).


def test_shipped_tokenizer_matches_openai_clip() -> None:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(configs_root() / "clip_tokenizer")
    assert len(tokenizer) == 49408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer("an astronaut riding a horse").input_ids == [
        49406, 550, 18376, 6765, 320, 4558, 49407,
    ]  # fmt: skip
    open_clip = CLIPTokenizer.from_pretrained(configs_root() / "clip_tokenizer", pad_token="!")
    assert open_clip.pad_token_id == 0


@pytest.mark.parametrize(
    ("folder", "parameters"),
    [("sd1", 859_520_964), ("sd2", 865_910_724), ("sdxl", 2_567_463_684)],
)
def test_shipped_unet_configs_have_the_official_sizes(folder: str, parameters: int) -> None:
    import torch
    from diffusers import UNet2DConditionModel

    config = json.loads((configs_root() / folder / "unet" / "config.json").read_text())
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    assert sum(p.numel() for p in unet.parameters()) == parameters


def test_variants_patch_a_copy_of_the_shipped_configs(tmp_path: Path) -> None:
    assert config_folder(ModelInfo(Family.SD1), tmp_path) == configs_root() / "sd1"
    folder = config_folder(ModelInfo(Family.SD2, True, "v_prediction"), tmp_path)
    unet = json.loads((folder / "unet" / "config.json").read_text())
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert (unet["in_channels"], unet["sample_size"], scheduler["prediction_type"]) == (
        9,
        96,
        "v_prediction",
    )
    shipped = json.loads((configs_root() / "sd2" / "unet" / "config.json").read_text())
    assert shipped["in_channels"] == 4


def test_unknown_and_unsupported_checkpoints_are_refused(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from sdstudio.engine.models.loading import load_single_file

    lora = tmp_path / "style-lora.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(lora))
    with pytest.raises(
        ModelError, match=r"not a Stable Diffusion checkpoint.*SD 1\.x, SD 2\.x and SDXL"
    ):
        load_single_file(lora, dtype=torch.float32)


# Pickles.


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_a_pickle_with_code_is_refused_and_never_runs(tmp_path: Path, writer: str) -> None:
    import torch

    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "evil.ckpt"
    data = {"state_dict": {"w": torch.ones(2), "x": Payload(marker)}}
    if writer == "torch":
        torch.save(data, checkpoint)
    else:
        checkpoint.write_bytes(pickle.dumps(data))
    with pytest.raises(ModelError, match=r"holds code.*Convert it to \.safetensors"):
        load_pickle_state_dict(checkpoint)
    assert not marker.exists()


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_a_clean_ckpt_loads_like_the_safetensors(
    tiny_model: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.generation import Engine
    from sdstudio.engine.models.loading import inspect_checkpoint
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.engine.request import GenerationRequest

    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_file(str(tiny_checkpoint)), "global_step": 1}, ckpt)
    assert inspect_checkpoint(ckpt).family is Family.SD1
    images = []
    for model in (ckpt, tiny_checkpoint):
        manager = PipelineManager(choose_device("cpu"), single_file_config=tiny_model)
        request = GenerationRequest(
            model=str(model), prompt="a red boat", steps=2, width=64, height=64, seed=3
        )
        images.append(np.asarray(next(Engine(manager, tmp_path / "in").generate(request)).image))
        manager.unload()
    assert np.array_equal(images[0], images[1])


def test_cli_reports_a_truncated_checkpoint_in_one_line(
    capsys, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from sdstudio.cli import main

    broken = tmp_path / "half.safetensors"
    broken.write_bytes(tiny_checkpoint.read_bytes()[:4000])
    code = main(["generate", "--model", str(broken), "--prompt", "x", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and "half.safetensors is truncated or damaged" in errors[0]
    assert err[-1] == errors[0] and "Traceback" not in "".join(err)


# Full-size architecture, offline, no config given (slow: ~2 GB file, ~7 GB peak).


@pytest.fixture(scope="module")
def full_size_sd15(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 2 GB SD 1.5 checkpoint of random fp16 weights, built once and removed afterwards."""
    import gc
    import shutil

    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("full-size")
    generator = torch.Generator().manual_seed(0)
    state = {
        key: torch.randn(shape, generator=generator, dtype=torch.float16) * 0.02
        for key, shape in meta_shapes("sd1").items()
    }
    checkpoint = folder / "sd15-random.safetensors"
    save_file(state, str(checkpoint))
    del state
    gc.collect()
    yield checkpoint
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_full_size_sd15_single_file_generates_offline_without_a_config(
    full_size_sd15: Path, tmp_path: Path
) -> None:
    checkpoint = full_size_sd15
    assert detect_family(checkpoint) == ModelInfo(Family.SD1)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_ENDPOINT": "http://127.0.0.1:9",  # any hub request would fail at once
        "SDSTUDIO_HOME": str(tmp_path / "home"),
    }
    command = [sys.executable, "-m", "sdstudio.cli", "generate", "--model", str(checkpoint)]
    command += ["--prompt", "a cat", "--steps", "1", "--width", "64", "--height", "64"]
    command += ["--out", str(tmp_path / "out"), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events][-2:] == ["image", "done"]
    assert len(list((tmp_path / "out").glob("*.png"))) == 1


# A tiny SDXL (same layout and code paths, small sizes), loaded with its own config folder.


def write_tiny_sdxl_folder(folder: Path) -> Path:
    """A diffusers SDXL config folder (no weights) of tiny sizes, with its tokenizers."""
    from sdstudio.testing.vocab import tiny_vocabulary, write_tiny_clip_tokenizer

    shipped = configs_root() / "sdxl"
    vocab_size = len(tiny_vocabulary()[0])
    text = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4}
    text |= {"num_hidden_layers": 2, "vocab_size": vocab_size, "projection_dim": 32}
    changes = {
        "unet": {
            "block_out_channels": [32, 64],
            "attention_head_dim": [2, 4],
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
            "transformer_layers_per_block": [1, 2],
            "cross_attention_dim": 32 + 48,
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 6 * 8 + 48,
            "layers_per_block": 1,
            "sample_size": 16,
        },
        "vae": {"block_out_channels": [32, 32], "layers_per_block": 1, "sample_size": 32},
        "text_encoder": text,
        # diffusers tells SDXL's two encoders apart by their widths, so they must differ.
        "text_encoder_2": text | {"hidden_size": 48, "projection_dim": 48},
    }
    for name in ("model_index.json", "scheduler/scheduler_config.json", *changes):
        source = shipped / name if name.endswith(".json") else shipped / name / "config.json"
        target = folder / source.relative_to(shipped)
        target.parent.mkdir(parents=True, exist_ok=True)
        config = json.loads(source.read_text())
        target.write_text(json.dumps(config | changes.get(name, {})))
    for name in ("tokenizer", "tokenizer_2"):
        write_tiny_clip_tokenizer(folder / name)
    vae = folder / "vae" / "config.json"
    config = json.loads(vae.read_text())
    config["down_block_types"] = config["down_block_types"][:2]
    config["up_block_types"] = config["up_block_types"][:2]
    vae.write_text(json.dumps(config))
    return folder


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_tiny_sdxl_single_file_is_detected_and_runs_every_mode(
    tmp_path: Path, init_image: Path, mask_image: Path
) -> None:
    from safetensors.torch import save_file

    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.generation import Engine
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.engine.request import GenerationRequest, Mode
    from sdstudio.testing.checkpoints import random_original_checkpoint

    folder = write_tiny_sdxl_folder(tmp_path / "tiny-sdxl")
    checkpoint = tmp_path / "tiny-sdxl.safetensors"
    state = random_original_checkpoint(folder)
    save_file(
        {k: v * 0.1 if v.is_floating_point() else v for k, v in state.items()}, str(checkpoint)
    )
    assert detect_family(checkpoint) == ModelInfo(Family.SDXL)
    manager = PipelineManager(choose_device("cpu"), single_file_config=folder)
    engine = Engine(manager, tmp_path / "inputs")
    base = {"model": str(checkpoint), "prompt": "a boat", "steps": 2, "width": 64, "height": 64}
    requests = [
        GenerationRequest(**base),
        GenerationRequest(**base, mode=Mode.IMG2IMG, init_image=str(init_image), strength=0.6),
        GenerationRequest(
            **base, mode=Mode.INPAINT, init_image=str(init_image), mask=str(mask_image)
        ),
    ]
    for request in requests:
        result = next(engine.generate(request))
        assert result.image.size == (64, 64)
        pipe = manager.pipeline(str(checkpoint), request.mode)
        assert type(pipe).__name__.startswith("StableDiffusionXL")
    manager.unload()


def test_tiny_sdxl_inpainting_single_file_loads_the_xl_inpaint_pipeline(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.generation import Engine
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.engine.request import GenerationRequest, Mode
    from sdstudio.testing.checkpoints import random_original_checkpoint

    folder = write_tiny_sdxl_folder(tmp_path / "tiny-sdxl-inpaint")
    unet_config = folder / "unet" / "config.json"
    unet_config.write_text(json.dumps(json.loads(unet_config.read_text()) | {"in_channels": 9}))
    checkpoint = tmp_path / "tiny-sdxl-inpaint.safetensors"
    save_file(random_original_checkpoint(folder), str(checkpoint))
    assert detect_family(checkpoint) == ModelInfo(Family.SDXL, inpainting=True)
    manager = PipelineManager(choose_device("cpu"), single_file_config=folder)
    request = GenerationRequest(
        model=str(checkpoint), prompt="a boat", steps=2, width=64, height=64
    )
    assert next(Engine(manager, tmp_path / "inputs").generate(request)).image.size == (64, 64)
    pipe = manager.pipeline(str(checkpoint), Mode.TXT2IMG)
    assert type(pipe).__name__ == "StableDiffusionXLInpaintPipeline"
    manager.unload()


# SD 2.x files do not say whether they predict v (768 px) or noise (512 px).


@pytest.mark.parametrize(("bias", "expected"), [(-2.0, True), (0.0, False), (1.0, False)])
def test_v_prediction_is_told_by_denoising_a_flat_latent(
    tiny_model: Path, bias: float, expected: bool
) -> None:
    import torch
    from diffusers import UNet2DConditionModel

    from sdstudio.engine.models.loading import predicts_v

    unet = UNet2DConditionModel.from_pretrained(tiny_model / "unet")
    with torch.no_grad():
        unet.conv_out.weight.zero_()
        unet.conv_out.bias.fill_(bias)  # the output is exactly the bias: 0.5 - bias apart
    assert predicts_v(unet) is expected


def test_sd2_files_found_to_predict_v_get_the_v_scheduler(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.models.attention_processor import Attention

    from sdstudio.engine.models import loading

    checkpoint = tmp_path / "v2-1_768-ema-pruned.safetensors"
    checkpoint.write_bytes(b"")
    pipes = []

    def fake_load(path, config, info, dtype, *, tokenizers):  # type: ignore[no-untyped-def]
        pipe = StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
        with torch.no_grad():
            pipe.unet.conv_out.weight.zero_()
            pipe.unet.conv_out.bias.fill_(-3.0 if "768" in path.name else 0.0)
        pipes.append(pipe)
        return pipe

    monkeypatch.setattr(loading, "_from_single_file", fake_load)
    monkeypatch.setattr(loading, "shipped_tokenizers", lambda info: {})
    monkeypatch.setattr(loading, "inspect_checkpoint", lambda path: ModelInfo(Family.SD2))
    v_model = loading.load_single_file(checkpoint, dtype=torch.float32)
    assert v_model.scheduler.config.prediction_type == "v_prediction"
    assert v_model.unet.config.upcast_attention
    assert all(m.upcast_attention for m in v_model.unet.modules() if isinstance(m, Attention))
    epsilon = loading.load_single_file(tmp_path / "v2-1_512.safetensors", dtype=torch.float32)
    assert epsilon.scheduler.config.prediction_type == "epsilon"
    monkeypatch.setattr(
        loading, "inspect_checkpoint", lambda path: ModelInfo(Family.SD2, False, "epsilon")
    )
    told = loading.load_single_file(checkpoint, dtype=torch.float32)  # a sidecar yaml said so
    assert told.scheduler.config.prediction_type == "epsilon"
