"""LoRAs on the flow families through the real engine: tiny Flux.1 dev and Z-Image
models, tiny LoRA files in the layouts trainers write (sdstudio.testing.tiny_loras),
a ComfyUI split-layout (GGUF) Flux, and the family a LoRA file is told to be for."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.generation import Engine
from sdstudio.engine.metadata import png_info
from sdstudio.engine.metadata.a1111 import split_parameters
from sdstudio.engine.models.layouts import network_family, read_safetensors_header
from sdstudio.engine.networks import Networks
from sdstudio.engine.request import GenerationRequest
from sdstudio.testing import tiny_loras as tl


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny Flux.1 dev and a tiny Z-Image folder."""
    from sdstudio.testing.tiny_flow import save_tiny_flux, save_tiny_zimage

    root = tmp_path_factory.mktemp("flow-models")
    return {
        "flux": save_tiny_flux(root / "tiny-flux-dev", guidance_embeds=True),
        "zimage": save_tiny_zimage(root / "tiny-zimage"),
    }


@pytest.fixture(scope="module")
def loras(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA folder: one Flux.1 LoRA in each layout, a second Flux.1 LoRA, an
    XLabs-sized pair, Z-Image LoRAs in each layout, and files that must be refused."""
    from diffusers import FluxTransformer2DModel, ZImageTransformer2DModel
    from safetensors.torch import load_file
    from transformers import CLIPTextModel

    folder = tmp_path_factory.mktemp("Lora")
    flux = FluxTransformer2DModel.from_pretrained(models["flux"] / "transformer")
    clip = CLIPTextModel.from_pretrained(models["flux"] / "text_encoder")
    layers = tl.flux_lora(flux, clip, alpha=2.0)
    for layout in ("diffusers", "kohya", "bfl"):
        tl.write_flux_lora(folder / f"flux_{layout}.safetensors", layers, layout)
    attention = tl.flux_lora(flux, modules=tl.XLABS_MODULES, seed=1)
    tl.write_flux_lora(folder / "attention_diffusers.safetensors", attention, "diffusers")
    tl.write_flux_lora(folder / "attention_xlabs.safetensors", attention, "xlabs")
    tl.write_flux_lora(folder / "second.safetensors", tl.flux_lora(flux, seed=2), "diffusers")
    clip_only = {k: v for k, v in layers.items() if k.startswith(tl.TEXT_ENCODER)}
    tl.write_flux_lora(folder / "clip_only.safetensors", clip_only, "kohya")
    every = tl.flux_lora(flux, modules=".*", seed=3)  # with linear1, at the tiny width
    tl.write_flux_lora(folder / "linear1_kohya.safetensors", every, "kohya")
    zimage = ZImageTransformer2DModel.from_pretrained(models["zimage"] / "transformer")
    z_layers = tl.zimage_lora(zimage, alpha=2.0)
    for layout in tl.ZIMAGE_LAYOUTS:
        tl.write_zimage_lora(folder / f"z_{layout}.safetensors", z_layers, layout)
    z_file = folder / "z_diffusers.safetensors"
    with_text = {**load_file(str(z_file)), **_qwen3_layer("text_encoder.layers.0.self_attn.q_proj")}
    save_file(with_text, str(folder / "z_with_text.safetensors"))
    _write_extras(folder)
    return folder


def _qwen3_layer(name: str) -> dict[str, torch.Tensor]:
    return {f"{name}.lora_A.weight": torch.ones(4, 32), f"{name}.lora_B.weight": torch.ones(32, 4)}


def _write_extras(folder: Path) -> None:
    """Files that are partly or not at all usable, from the kohya Flux file's tensors."""
    from safetensors.torch import load_file

    kohya = load_file(str(folder / "flux_kohya.safetensors"))
    t5 = "lora_te2_encoder_block_0_layer_0_SelfAttention_q"
    with_t5 = {
        **kohya,
        f"{t5}.lora_down.weight": torch.ones(4, 64),
        f"{t5}.lora_up.weight": torch.ones(64, 4),
    }
    save_file(with_t5, str(folder / "with_t5.safetensors"))
    loha = {}
    for key, value in kohya.items():
        if key.endswith(".lora_down.weight") and key.startswith("lora_unet_"):
            base = key.removesuffix(".lora_down.weight")
            loha[f"{base}.hada_w1_a"] = value.T.contiguous()
            loha[f"{base}.hada_w1_b"] = value.clone()
    save_file(loha, str(folder / "flux_loha.safetensors"))
    sd_key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    sd_style = {
        f"{sd_key}.lora_down.weight": torch.zeros(4, 768),
        f"{sd_key}.lora_up.weight": torch.zeros(320, 4),
    }
    save_file(sd_style, str(folder / "sd15_style.safetensors"))
    elsewhere = "transformer.transformer_blocks.7.attn.to_q"  # the tiny model has one block
    deeper = {
        f"{elsewhere}.lora_A.weight": torch.ones(4, 32),
        f"{elsewhere}.lora_B.weight": torch.ones(32, 4),
    }
    save_file(deeper, str(folder / "deeper_model.safetensors"))


@pytest.fixture(scope="module")
def engine(loras: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """An engine with its own pipeline manager (LoRAs must not reach the shared one)."""
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.pipelines import PipelineManager

    manager = PipelineManager(choose_device("cpu"))
    networks = Networks(lambda: [loras], lambda: [], manager.hash_cache)
    return Engine(manager, tmp_path_factory.mktemp("inputs"), networks=networks)


def request(model: Path, prompt: str, **changes: Any) -> GenerationRequest:
    values: dict[str, Any] = {"steps": 2, "width": 64, "height": 64, "seed": 7, "sampler": "Euler"}
    values["guidance_scale"] = 1.0
    values.update(changes)
    return GenerationRequest(model=str(model), prompt=prompt, **values)


def pixels(engine: Engine, req: GenerationRequest, notices: list[str] | None = None) -> np.ndarray:
    on_status = notices.append if notices is not None else None
    return np.asarray(next(engine.generate(req, on_status=on_status)).image).astype(int)


@pytest.fixture(scope="module")
def flux_images(engine: Engine, models: dict[str, Path]) -> dict[str, np.ndarray]:
    """The tiny Flux.1 dev's "a cat" bare and with the diffusers-layout LoRA at weight 1."""
    flux = models["flux"]
    return {
        "bare": pixels(engine, request(flux, "a cat")),
        "lora": pixels(engine, request(flux, "a cat <lora:flux_diffusers:1>")),
    }


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal but for float rounding of the same LoRA written another way."""
    return bool(np.abs(a - b).max() <= 1)


def test_flux_lora_layouts_change_the_image_alike(
    engine: Engine, models: dict[str, Path], flux_images: dict[str, np.ndarray]
) -> None:
    flux, bare, reference = models["flux"], flux_images["bare"], flux_images["lora"]
    assert np.abs(reference - bare).max() > 8
    for layout in ("kohya", "bfl"):
        assert close(pixels(engine, request(flux, f"a cat <lora:flux_{layout}:1>")), reference)
    attention = pixels(engine, request(flux, "a cat <lora:attention_diffusers:1>"))
    assert not np.array_equal(attention, bare)
    assert close(pixels(engine, request(flux, "a cat <lora:attention_xlabs:1>")), attention)
    # Flux.1's CLIP part is applied (kohya lora_te1_): the pooled prompt changes.
    assert not np.array_equal(pixels(engine, request(flux, "a cat <lora:clip_only:1>")), bare)


def test_flux_weights_removal_and_several_loras(
    engine: Engine,
    models: dict[str, Path],
    flux_images: dict[str, np.ndarray],
    loras: Path,
    tmp_path: Path,
) -> None:
    flux, bare = models["flux"], flux_images["bare"]
    one = request(flux, "a cat <lora:flux_kohya:0.8>")
    result = next(engine.generate(one))
    full = np.asarray(result.image).astype(int)
    assert not np.array_equal(full, bare)
    assert np.array_equal(pixels(engine, request(flux, "a cat<lora:flux_kohya:0>")), bare)
    negative = pixels(engine, request(flux, "a cat <lora:flux_kohya:-0.8>"))
    assert not np.array_equal(negative, bare) and not np.array_equal(negative, full)
    both = pixels(engine, request(flux, "a cat <lora:flux_kohya:0.8> <lora:second:1>"))
    second = pixels(engine, request(flux, "a cat <lora:second:1>"))
    assert not np.array_equal(both, full) and not np.array_equal(both, second)
    assert np.array_equal(pixels(engine, request(flux, "a cat")), bare)  # no tag: bare model
    assert np.array_equal(pixels(engine, result.record.request), full)  # re-run
    lora_hash = hashlib.sha256((loras / "flux_kohya.safetensors").read_bytes()).hexdigest()[:12]
    assert result.record.extra["loras"] == [
        {"name": "flux_kohya", "weight": 0.8, "hash": lora_hash}
    ]
    path = tmp_path / "image.png"
    result.image.save(path, pnginfo=png_info(result.record))
    with Image.open(path) as image:
        settings = split_parameters(image.text["parameters"]).settings  # type: ignore[attr-defined]
    assert settings["Lora hashes"] == f"flux_kohya: {lora_hash}"


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_zimage_lora_layouts(engine: Engine, models: dict[str, Path]) -> None:
    zimage = models["zimage"]
    plain = request(zimage, "a house", guidance_scale=0.0)
    bare = pixels(engine, plain)
    reference = pixels(engine, plain.replace(prompt="a house <lora:z_diffusers:1>"))
    assert np.abs(reference - bare).max() > 8
    for layout in ("ai-toolkit", "kohya", "original"):
        image = pixels(engine, plain.replace(prompt=f"a house <lora:z_{layout}:1>"))
        assert close(image, reference), layout
    # No space before the tag: its removal leaves "a house", which Qwen3 reads as the bare prompt.
    assert np.array_equal(pixels(engine, plain.replace(prompt="a house<lora:z_kohya:0>")), bare)
    assert np.array_equal(pixels(engine, plain), bare)


def test_loras_of_another_family_are_refused_before_loading(
    engine: Engine, models: dict[str, Path]
) -> None:
    flux, zimage = models["flux"], models["zimage"]
    with pytest.raises(
        InvalidRequest, match=r"flux_bfl is made for Flux\.1 models; the chosen model is Z-Image"
    ):
        next(engine.generate(request(zimage, "a cat <lora:flux_bfl:1>", guidance_scale=0.0)))
    with pytest.raises(
        InvalidRequest, match=r"z_kohya is made for Z-Image models; the chosen model is Flux\.1"
    ):
        next(engine.generate(request(flux, "a cat <lora:z_kohya:1>")))
    with pytest.raises(InvalidRequest, match=r"sd15_style is made for SD 1\.x models"):
        next(engine.generate(request(flux, "a cat <lora:sd15_style:1>")))
    pipe = engine.pipelines.pipeline(str(flux), request(flux, "").mode)
    loaded = {name for names in pipe.get_list_adapters().values() for name in names}
    assert "lora_z_kohya" not in loaded and "lora_sd15_style" not in loaded


def test_unreadable_layouts_get_a_clear_error(
    engine: Engine, models: dict[str, Path], flux_images: dict[str, np.ndarray]
) -> None:
    flux = models["flux"]
    with pytest.raises(ModelError, match=r"flux_loha.safetensors is a LyCORIS LoHa file"):
        next(engine.generate(request(flux, "a cat <lora:flux_loha:1>")))
    with pytest.raises(ModelError, match=r"cannot convert its kohya/sd-scripts layout for Flux\.1"):
        next(engine.generate(request(flux, "a cat <lora:linear1_kohya:1>")))
    with pytest.raises(ModelError, match=r"deeper_model.safetensors \(diffusers layout\)"):
        next(engine.generate(request(flux, "a cat <lora:deeper_model:1>")))
    assert np.array_equal(pixels(engine, request(flux, "a cat")), flux_images["bare"])


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_parts_not_applied_are_said(
    engine: Engine, models: dict[str, Path], flux_images: dict[str, np.ndarray]
) -> None:
    notices: list[str] = []
    with_t5 = pixels(engine, request(models["flux"], "a cat <lora:with_t5:1>"), notices)
    assert any("with_t5 was not applied: its T5 text-encoder layers" in n for n in notices)
    assert close(with_t5, flux_images["lora"])
    plain = request(models["zimage"], "a house", guidance_scale=0.0)
    with_text = pixels(engine, plain.replace(prompt="a house <lora:z_with_text:1>"), notices)
    assert any("z_with_text was not applied: its text-encoder layers" in n for n in notices)
    assert np.array_equal(
        with_text, pixels(engine, plain.replace(prompt="a house <lora:z_diffusers:1>"))
    )


def test_a_split_layout_gguf_flux_takes_a_lora(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A ComfyUI tree (transformer GGUF file, text encoders, VAE): diffusers applies LoRAs
    to GGUF-quantized layers too."""
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.testing.tiny_denoiser_files import build_tiny_denoiser
    from sdstudio.testing.tiny_split import save_tiny_comfyui_model

    root = tmp_path_factory.mktemp("ComfyUI")
    model = save_tiny_comfyui_model(root, "flux1", gguf="Q8_0", guidance_embeds=True)
    folder = root / "models" / "loras"
    layers = tl.flux_lora(build_tiny_denoiser("flux1", guidance_embeds=True), alpha=2.0)
    tl.write_flux_lora(folder / "split_bfl.safetensors", layers, "bfl")
    manager = PipelineManager(choose_device("cpu"))
    split = Engine(manager, root / "inputs", networks=Networks(lambda: [folder], lambda: []))
    bare = pixels(split, request(model, "a cat"))
    result = next(split.generate(request(model, "a cat <lora:split_bfl:1>")))
    with_lora = np.asarray(result.image).astype(int)
    assert np.abs(with_lora - bare).max() > 8
    assert np.array_equal(pixels(split, result.record.request), with_lora)
    assert np.array_equal(pixels(split, request(model, "a cat")), bare)


def _header(shapes: dict[str, list[int]]) -> dict[str, Any]:
    return {
        "__metadata__": {},
        **{k: {"dtype": "F16", "shape": s, "data_offsets": [0, 0]} for k, s in shapes.items()},
    }


def _lora(
    names: list[str], width: int, outs: dict[str, int] | None = None, *, suffix: str = "lora_A"
) -> dict[str, Any]:
    """A header of rank-4 LoRA layers taking ``width`` features (``outs`` for up rows)."""
    up = "lora_B" if suffix == "lora_A" else "lora_up"
    shapes: dict[str, list[int]] = {}
    for name in names:
        shapes[f"{name}.{suffix}.weight"] = [4, width]
        shapes[f"{name}.{up}.weight"] = [(outs or {}).get(name, width), 4]
    return _header(shapes)


def test_the_family_of_each_tiny_lora_file(loras: Path) -> None:
    expected = {"flux_diffusers": "flux1", "flux_kohya": "flux1", "flux_bfl": "flux1",
                "attention_xlabs": "flux1", "with_t5": "flux1", "z_original": "zimage",
                "z_diffusers": "zimage", "z_ai-toolkit": "zimage", "z_kohya": "zimage",
                "sd15_style": "sd1"}  # fmt: skip
    for name, family in expected.items():
        assert (
            network_family(read_safetensors_header(loras / f"{name}.safetensors"))[0] == family
        ), name


KOHYA = "lora_down"
FAMILY_CASES = [
    # Flux.1: 19 double blocks, 3072 wide; MLPs 4 times the width.
    (["lora_unet_double_blocks_18_img_attn_qkv", "lora_unet_single_blocks_37_linear2"], 3072,
     {"lora_unet_double_blocks_18_img_attn_qkv": 9216}, KOHYA, "flux1", "Flux.1"),
    (["diffusion_model.double_blocks.0.img_mlp.0"], 3072,
     {"diffusion_model.double_blocks.0.img_mlp.0": 12288}, "lora_A", "flux1", "Flux.1"),
    (["transformer.transformer_blocks.0.attn.to_q"], 3072, {}, "lora_A", "flux1", "Flux.1"),
    # Flux.2: MLPs 6 times the width; Klein 4B 3072, 9B 4096, dev 6144 wide.
    (["diffusion_model.double_blocks.0.img_mlp.0"], 3072,
     {"diffusion_model.double_blocks.0.img_mlp.0": 18432}, "lora_A", "flux2-klein",
     "Flux.2 Klein 4B"),
    (["diffusion_model.double_blocks.0.img_attn.qkv"], 4096, {}, "lora_A", "flux2-klein",
     "Flux.2 Klein 9B"),
    (["transformer.single_transformer_blocks.0.attn.to_qkv_mlp_proj"], 6144, {}, "lora_A",
     "flux2-dev", "Flux.2 dev"),
    (["lora_unet_double_blocks_4_img_attn_qkv", "lora_unet_single_blocks_19_linear1"], 3072,
     {"lora_unet_single_blocks_19_linear1": 27648}, KOHYA, "flux2-klein", "Flux.2 Klein 4B"),
    (["lora_unet_double_blocks_0_img_mod_lin"], 3072, {}, KOHYA, "flux1", "Flux.1"),
    # Qwen-Image: 60 blocks 3072 wide, img_mlp.net.
    (["transformer.transformer_blocks.59.attn.to_q"], 3072, {}, "lora_A", "qwen-image",
     "Qwen-Image"),
    (["transformer.transformer_blocks.3.img_mlp.net.0.proj"], 3072, {}, "lora_A", "qwen-image",
     "Qwen-Image"),
    # SD 3: 1536 or 2432 wide, attn2 (3.5 Medium), joint_blocks (original names).
    (["transformer.transformer_blocks.23.attn.to_q"], 1536, {}, "lora_A", "sd3", "SD 3.x"),
    (["transformer.transformer_blocks.2.attn2.to_k"], 1536, {}, "lora_A", "sd3", "SD 3.x"),
    (["lora_unet_joint_blocks_0_x_block_attn_qkv"], 1536, {}, KOHYA, "sd3", "SD 3.x"),
    # Z-Image, and Lumina Image 2.0 (the same names, 2304 wide).
    (["diffusion_model.layers.0.attention.to_q"], 3840, {}, "lora_A", "zimage", "Z-Image"),
    (["lora_unet_layers_3_feed_forward_w1"], 3840, {}, KOHYA, "zimage", "Z-Image"),
    (["diffusion_model.layers.0.attention.qkv"], 2304, {}, "lora_A", "lumina2",
     "Lumina Image 2.0"),
    # Stable Diffusion results stay what they were.
    (["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"], 768, {}, KOHYA,
     "sd1", "SD 1.x"),
    (["lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"], 2048, {}, KOHYA, "sdxl",
     "SDXL"),
    (["lora_te2_text_model_encoder_layers_0_self_attn_q_proj"], 1280, {}, KOHYA, "sdxl", "SDXL"),
    (["lora_te1_text_model_encoder_layers_0_self_attn_q_proj"], 768, {}, KOHYA, "unknown",
     "Unknown"),
]  # fmt: skip


@pytest.mark.parametrize(("names", "width", "outs", "suffix", "family", "label"), FAMILY_CASES)
def test_network_family_tells_flow_families(
    names: list[str], width: int, outs: dict[str, int], suffix: str, family: str, label: str
) -> None:
    assert network_family(_lora(names, width, outs, suffix=suffix)) == (family, label)


def test_plain_prompts_lose_the_spaces_a_removed_tag_leaves() -> None:
    from sdstudio.engine.families import family
    from sdstudio.engine.family_settings import plain_arguments

    arguments = plain_arguments(
        family("zimage"), "a  house <lora:x:0>", "blurry <lora:y:1>  , dark"
    )
    assert arguments == {"prompt": "a house", "negative_prompt": "blurry , dark"}


def test_the_lora_menu_greys_out_loras_of_other_flow_families() -> None:
    from sdstudio.ui.network_picker import _other_family

    assert _other_family("flux1", "sdxl") and _other_family("zimage", "flux1")
    assert not _other_family("flux1", "flux1") and not _other_family("unknown", "flux1")
