"""LoRA training's kohya targets (transformer blocks, text MLPs, LoCon convolutions), its
kohya options (clip skip, flip and colour augmentation) and the written file applied in
full when generating."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.training.datasets import Batch, BucketOptions, color_augment, load_fitted
from sdstudio.engine.training.lora_file import lora_metadata
from sdstudio.engine.training.lora_network import (
    CONV_BLOCKS,
    UNET_BLOCKS,
    kohya_modules,
    network_args,
    sgm_unet_name,
)
from sdstudio.engine.training.lora_trainer import LoraTrainer, train_lora
from sdstudio.engine.training.options import LoraOptions, TrainingOptions


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two random images with tag captions, one wide (its crop is told when flipped)."""
    root = tmp_path_factory.mktemp("dataset")
    folder = root / "1_shapes"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i, size in enumerate([(64, 64), (101, 64)]):
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"shape, colour {i}", "utf-8")
    return root


def options(model: Path, data: Path, out: Path, **network: Any) -> LoraOptions:
    base = TrainingOptions(
        model=model,
        data=data,
        name="targets",
        output_dir=out / "lora",
        state_dir=out / "state",
        learning_rate=1e-2,
        max_train_steps=2,
        device="cpu",
        buckets=BucketOptions((64, 64), 64, 128, 64, enable_bucket=False),
        cache_latents=network.pop("cache_latents", False),
    )
    return LoraOptions(base, network_dim=4, network_alpha=4, **network)


@pytest.fixture(scope="module")
def trained(tiny_model: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA of the tiny SD 1.x model with its text encoder and LoCon convolutions."""
    out = tmp_path_factory.mktemp("trained")
    opts = options(tiny_model, dataset, out, train_text_encoder=True, conv_dim=2, conv_alpha=1)
    path = train_lora(opts, on_event=lambda e: None)
    assert path is not None
    return path


@pytest.fixture(scope="module")
def pipe(tiny_model: Path) -> Any:
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)


@pytest.fixture(scope="module")
def plain(pipe: Any) -> np.ndarray:
    """The tiny model's image without a LoRA."""
    return image(pipe)


def applied(pipe: Any, adapter: str) -> list[Any]:
    """The peft layers of ``pipe`` that carry ``adapter``."""
    from peft.tuners.lora import LoraLayer

    modules = [*pipe.unet.modules(), *pipe.text_encoder.modules()]
    return [m for m in modules if isinstance(m, LoraLayer) and adapter in m.lora_A]


def image(pipe: Any) -> np.ndarray:
    generator = torch.Generator().manual_seed(3)
    out = pipe("a shape", num_inference_steps=2, width=64, height=64, generator=generator)
    return np.asarray(out.images[0], dtype=np.int16)


def test_the_file_has_kohyas_keys_and_every_one_is_applied(
    trained: Path, pipe: Any, plain: np.ndarray
) -> None:
    from sdstudio.engine.networks import Networks

    tensors = load_file(str(trained))
    modules = {key.split(".")[0] for key in tensors}
    block = "lora_unet_down_blocks_1_attentions_0"
    for name in (
        f"{block}_proj_in",
        f"{block}_proj_out",
        f"{block}_transformer_blocks_0_ff_net_0_proj",
        f"{block}_transformer_blocks_0_ff_net_2",
        f"{block}_transformer_blocks_0_attn2_to_out_0",
        "lora_te_text_model_encoder_layers_0_mlp_fc1",
        "lora_te_text_model_encoder_layers_1_mlp_fc2",
        "lora_te_text_model_encoder_layers_1_self_attn_v_proj",
        "lora_unet_down_blocks_0_resnets_0_conv1",
        "lora_unet_down_blocks_0_resnets_0_time_emb_proj",
        "lora_unet_down_blocks_0_downsamplers_0_conv",
        "lora_unet_up_blocks_0_upsamplers_0_conv",
    ):
        assert name in modules, name
    # SD 1.x's proj_in is a 1 x 1 convolution; LoCon's 3 x 3 ones take conv_dim and conv_alpha
    assert tensors[f"{block}_proj_in.lora_down.weight"].shape == (4, 64, 1, 1)
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"
    assert tensors[f"{conv}.lora_down.weight"].shape == (2, 32, 3, 3)
    assert tensors[f"{conv}.alpha"].item() == 1 and tensors[f"{block}_proj_in.alpha"].item() == 4
    # kohya's count on this UNet: 48 layers in its transformer blocks (+ 31 LoCon), 6 per CLIP layer
    assert len(modules) == 48 + 31 + 2 * 6
    with safe_open(str(trained), "pt") as file:
        metadata = file.metadata()
    assert metadata["ss_network_args"] == '{"conv_dim": "2", "conv_alpha": "1"}'

    networks = Networks(lambda: [trained.parent], lambda: [])
    networks.apply(pipe, "a shape <lora:targets:1>", "")
    layers = applied(pipe, "lora_targets")
    assert len(layers) == len(modules)  # every key of the file reached a layer
    scales = {round(float(layer.scaling["lora_targets"]), 3) for layer in layers}
    assert scales == {1.0, 0.5}  # alpha / rank: 4 / 4, and conv_alpha / conv_dim 1 / 2
    changed = image(pipe)
    networks.apply(pipe, "a shape <lora:targets:0>", "")
    assert np.array_equal(image(pipe), plain)
    assert np.abs(changed - plain).max() > 0
    networks.apply(pipe, "a shape", "")


def test_a_lora_of_only_feed_forward_layers_changes_the_image(
    trained: Path, pipe: Any, plain: np.ndarray, tmp_path: Path
) -> None:
    from sdstudio.engine.networks import Networks

    tensors = load_file(str(trained))
    ff = {}
    for key, tensor in tensors.items():
        if "_ff_net_" in key:  # its trained change, made large enough to show in 8-bit pixels
            ff[key] = tensor * 20 if ".lora_up." in key else tensor
    assert ff and any(t.abs().sum() > 0 for k, t in ff.items() if ".lora_up." in k)
    folder = tmp_path / "Lora"
    folder.mkdir()
    save_file(ff, folder / "ff_only.safetensors")
    networks = Networks(lambda: [folder], lambda: [])
    networks.apply(pipe, "a shape <lora:ff_only:1>", "")
    assert len(applied(pipe, "lora_ff_only")) == len(ff) // 3
    assert np.abs(image(pipe) - plain).max() > 0
    networks.apply(pipe, "a shape", "")


def test_linear_proj_weights_load_into_sd1s_pointwise_convolutions(
    trained: Path, pipe: Any, tmp_path: Path
) -> None:
    """A file whose proj_in/proj_out were made for linear layers (SD 2.x, SDXL style) is
    used on SD 1.x's 1 x 1 convolutions, as AUTOMATIC1111 uses it."""
    from sdstudio.engine.networks import Networks

    tensors = load_file(str(trained))
    linear = {k: t.flatten(1) if "_proj_" in k and t.dim() == 4 else t for k, t in tensors.items()}
    key = "lora_unet_down_blocks_1_attentions_0_proj_in.lora_down.weight"
    assert linear[key].dim() == 2
    folder = tmp_path / "Lora"
    folder.mkdir()
    save_file(linear, folder / "linear_proj.safetensors")
    torch.save(linear, folder / "linear_pickle.pt")
    networks = Networks(lambda: [folder], lambda: [])
    for stem in ("linear_proj", "linear_pickle"):
        networks.apply(pipe, f"a shape <lora:{stem}:1>", "")
        assert len(applied(pipe, f"lora_{stem}")) == len(tensors) // 3
        layer = pipe.unet.down_blocks[1].attentions[0].proj_in
        assert torch.equal(layer.lora_A[f"lora_{stem}"].weight.half(), tensors[key])
    networks.apply(pipe, "a shape", "")


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_kohyas_module_count_for_sd15_and_sdxl_names_map_back() -> None:
    from diffusers import UNet2DConditionModel

    from sdstudio.engine.prompting.lycoris_patch import ldm_name

    configs = Path(__file__).parents[1] / "resources" / "model_configs"
    with torch.device("meta"):
        sd15 = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(configs / "sd1" / "unet")
        )
        sdxl = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(configs / "sdxl" / "unet")
        )
    assert len(kohya_modules(sd15, UNET_BLOCKS)) == 192  # kohya: "create LoRA for U-Net: 192"
    names = kohya_modules(sdxl, UNET_BLOCKS + CONV_BLOCKS)
    attention = frozenset(i for i, b in enumerate(sdxl.up_blocks) if hasattr(b, "attentions"))
    per_block = sdxl.config.layers_per_block
    for name in names:
        sgm = sgm_unet_name(name, per_block, attention).replace(".", "_")
        assert ldm_name(sgm, per_block) == name.replace(".", "_"), (name, sgm)
    assert sgm_unet_name("up_blocks.1.upsamplers.0.conv", 2, attention) == "output_blocks.5.2.conv"
    assert sgm_unet_name("down_blocks.0.downsamplers.0.conv", 2) == "input_blocks.3.0.op"


def test_network_args_are_kohyas_words() -> None:
    assert network_args([]) == (None, 1.0)
    assert network_args(["conv_dim=8", "conv_alpha=0.5"]) == (8, 0.5)
    for bad in (["dropout=0.1"], ["conv_dim"], ["conv_dim=x"], ["conv_alpha=2"]):
        with pytest.raises(InvalidRequest, match="--network-args"):
            network_args(bad)


def test_clip_skip_two_conditions_on_the_penultimate_layer(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    trainer = LoraTrainer(options(tiny_model, dataset, tmp_path, clip_skip=2), on_event=print)
    pipe = trainer.model.pipe
    seen: list[torch.Tensor] = []
    hook = pipe.unet.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(
            (args[2] if len(args) > 2 else kwargs["encoder_hidden_states"]).detach()
        ),
        with_kwargs=True,
    )
    try:
        trainer.loss(0)
    finally:
        hook.remove()
    captions = trainer.data.captions_at(0, trainer.data.batch_at(0))
    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    ids = tokenizer(
        captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        out = encoder(ids, output_hidden_states=True)
        expected = encoder.final_layer_norm(out.hidden_states[-2])
    assert torch.allclose(seen[0], expected) and not torch.allclose(seen[0], out[0])
    metadata = lora_metadata(
        trainer.lora,
        trainer.facts,
        trainer.data.dataset,
        trainer.data.buckets,
        steps_done=0,
        epoch=0,
    )
    assert metadata["ss_clip_skip"] == "2" and metadata["ss_flip_aug"] == "False"
    with pytest.raises(InvalidRequest, match="--clip-skip"):
        options(tiny_model, dataset, tmp_path, clip_skip=0).check()


def test_flip_aug_mirrors_deterministically_per_step_and_caches_both(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    opts = options(tiny_model, dataset, tmp_path, flip_aug=True, cache_latents=True)
    trainer = LoraTrainer(opts, on_event=lambda e: None)
    data = trainer.data
    wide = data.dataset.images[1]
    plain, mirrored = load_fitted(wide, (64, 64)), load_fitted(wide, (64, 64), flip=True)
    assert torch.equal(mirrored.pixels, plain.pixels.flip(-1))
    assert plain.crop_top_left == (0, 18) and mirrored.crop_top_left == (0, 19)  # 101 - 64 - 18

    batch = Batch((64, 64), (0, 1))
    draws = [tuple(data.flipped(step, batch)) for step in range(12)]
    assert draws == [tuple(data.flipped(step, batch)) for step in range(12)]
    assert {flip for draw in draws for flip in draw} == {True, False}
    assert len(data._latents) == 4  # each image, plain and mirrored, as kohya caches them
    step = next(s for s, draw in enumerate(draws) if draw == (True, False))
    latents, fitted = data.latents_at(step, batch, trainer.model)
    assert torch.equal(latents[0], data._latents[(0, True)][0])
    assert torch.equal(latents[1], data._latents[(1, False)][0])
    assert fitted[0].crop_top_left == (0, 0)
    metadata = lora_metadata(opts, trainer.facts, data.dataset, data.buckets, steps_done=0, epoch=0)
    assert metadata["ss_flip_aug"] == "True" and metadata["ss_clip_skip"] == "None"


def test_color_aug_varies_hue_or_gamma_and_refuses_cached_latents(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    pixels = torch.rand(3, 8, 8) * 2 - 1
    changed = [color_augment(pixels, random.Random(seed)) for seed in range(12)]
    again = [color_augment(pixels, random.Random(seed)) for seed in range(12)]
    assert all(torch.equal(a, b) for a, b in zip(changed, again, strict=True))
    assert any(torch.equal(c, pixels) for c in changed)  # two thirds of the time: unchanged
    assert any(not torch.allclose(c, pixels, atol=0.02) for c in changed)
    with pytest.raises(InvalidRequest, match="--color-aug"):
        options(tiny_model, dataset, tmp_path, color_aug=True, cache_latents=True).check()


@pytest.mark.slow
def test_an_sdxl_locon_is_applied_in_full(dataset: Path, tmp_path: Path) -> None:
    from diffusers import StableDiffusionXLPipeline
    from peft.tuners.lora import LoraLayer

    from sdstudio.testing.tiny_refiner import save_tiny_sdxl

    model = save_tiny_sdxl(tmp_path / "xl")
    with pytest.raises(InvalidRequest, match="SDXL models have no clip skip"):
        LoraTrainer(options(model, dataset, tmp_path, clip_skip=2), on_event=lambda e: None)
    opts = options(model, dataset, tmp_path, train_text_encoder=True, conv_dim=2)
    path = train_lora(opts, on_event=lambda e: None)
    assert path is not None
    modules = {key.split(".")[0] for key in load_file(str(path))}
    assert "lora_unet_input_blocks_1_0_in_layers_2" in modules
    assert "lora_te2_text_model_encoder_layers_0_mlp_fc1" in modules
    pipe = StableDiffusionXLPipeline.from_pretrained(model)
    pipe.load_lora_weights(str(path), adapter_name="xl")
    parts = (pipe.unet, pipe.text_encoder, pipe.text_encoder_2)
    count = sum(isinstance(m, LoraLayer) for part in parts for m in part.modules())
    assert count == len(modules)
