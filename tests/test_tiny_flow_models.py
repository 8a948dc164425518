"""The tiny random flow-matching pipelines: built offline, saved, loaded, run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

# family -> (saver name, pipeline class, latents shape the step callback sees at 64x64,
#            image-to-image class, inpainting class or None)
FAMILIES: dict[str, tuple[str, str, tuple[int, ...], str, str | None]] = {
    "flux": (
        "save_tiny_flux",
        "FluxPipeline",
        (1, 16, 64),
        "FluxImg2ImgPipeline",
        "FluxInpaintPipeline",
    ),
    "sd3": (
        "save_tiny_sd3",
        "StableDiffusion3Pipeline",
        (1, 16, 8, 8),
        "StableDiffusion3Img2ImgPipeline",
        "StableDiffusion3InpaintPipeline",
    ),
    "zimage": (
        "save_tiny_zimage",
        "ZImagePipeline",
        (1, 16, 8, 8),
        "ZImageImg2ImgPipeline",
        "ZImageInpaintPipeline",
    ),
    "qwen_image": (
        "save_tiny_qwen_image",
        "QwenImagePipeline",
        (1, 16, 64),
        "QwenImageImg2ImgPipeline",
        "QwenImageInpaintPipeline",
    ),
    # FLUX.2 klein's image-to-image pipeline is itself (reference images, no
    # strength); its inpainting pipeline is not in AutoPipelineForInpainting.
    "flux2_klein": (
        "save_tiny_flux2_klein",
        "Flux2KleinPipeline",
        (1, 16, 128),
        "Flux2KleinPipeline",
        None,
    ),
}


@pytest.fixture(scope="session")
def flow_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sdstudio.testing import tiny_flow

    root = tmp_path_factory.mktemp("flow-models")
    return {
        family: getattr(tiny_flow, saver)(root / family)
        for family, (saver, *_rest) in FAMILIES.items()
    }


@pytest.fixture(scope="session")
def flow_pipelines(flow_models: dict[str, Path]) -> dict[str, Any]:
    from diffusers import DiffusionPipeline

    pipes = {}
    for family, folder in flow_models.items():
        pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        pipes[family] = pipe
    return pipes


def _txt2img(pipe: Any, seed: int, **kwargs: Any) -> Any:
    import torch

    return pipe(
        prompt="a red cat on a blue mat, café 日本 🙂",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    ).images[0]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_saved_folder_is_small_safetensors(flow_models: dict[str, Path], family: str) -> None:
    folder = flow_models[family]
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 6_000_000
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".pt", ".ckpt")]
    assert weights
    assert all(p.suffix == ".safetensors" for p in weights)
    index = json.loads((folder / "model_index.json").read_text("utf-8"))
    assert index["_class_name"] == FAMILIES[family][1]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_txt2img_is_deterministic(flow_pipelines: dict[str, Any], family: str) -> None:
    import numpy as np

    pipe = flow_pipelines[family]
    assert type(pipe).__name__ == FAMILIES[family][1]
    assert pipe.vae_scale_factor == 8
    seen: list[tuple[int, ...]] = []

    def on_step(_pipe: Any, _i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        seen.append(tuple(kwargs["latents"].shape))
        return kwargs

    first = _txt2img(pipe, 7, callback_on_step_end=on_step)
    second = _txt2img(pipe, 7)
    other = _txt2img(pipe, 8)
    assert first.size == (64, 64)
    assert first.mode == "RGB"
    assert np.array_equal(np.asarray(first), np.asarray(second))
    assert not np.array_equal(np.asarray(first), np.asarray(other))
    assert seen == [FAMILIES[family][2]] * 2


@pytest.mark.parametrize("family", list(FAMILIES))
def test_builds_are_identical(family: str) -> None:
    import torch

    from sdstudio.testing import tiny_flow

    build = getattr(tiny_flow, "build_tiny_" + family)
    first, second = build(), build()
    for name, component in first.components.items():
        if isinstance(component, torch.nn.Module):
            a, b = component.state_dict(), second.components[name].state_dict()
            assert a.keys() == b.keys()
            assert all(torch.equal(a[key], b[key]) for key in a), name


@pytest.mark.parametrize("family", list(FAMILIES))
def test_image_to_image_and_inpainting_pipelines(
    flow_pipelines: dict[str, Any], family: str
) -> None:
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    pipe = flow_pipelines[family]
    *_, img2img_class, inpaint_class = FAMILIES[family]
    img2img = AutoPipelineForImage2Image.from_pipe(pipe)
    assert type(img2img).__name__ == img2img_class
    assert img2img.transformer is pipe.transformer
    if inpaint_class is None:
        with pytest.raises(ValueError):
            AutoPipelineForInpainting.from_pipe(pipe)
    else:
        inpaint = AutoPipelineForInpainting.from_pipe(pipe)
        assert type(inpaint).__name__ == inpaint_class
        assert inpaint.vae is pipe.vae


def test_image_to_image_and_inpainting_run() -> None:
    import numpy as np
    import torch
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting
    from PIL import Image

    from sdstudio.testing.tiny_flow import build_tiny_flux

    pipe = build_tiny_flux()
    init = Image.new("RGB", (64, 64), (200, 60, 30))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    common = {"prompt": "a cat", "num_inference_steps": 4, "height": 64, "width": 64}
    img2img = AutoPipelineForImage2Image.from_pipe(pipe)
    img2img.set_progress_bar_config(disable=True)
    out = img2img(image=init, strength=0.5, generator=torch.Generator().manual_seed(1), **common)
    inpaint = AutoPipelineForInpainting.from_pipe(pipe)
    inpaint.set_progress_bar_config(disable=True)
    filled = inpaint(
        image=init,
        mask_image=mask,
        strength=0.9,
        generator=torch.Generator().manual_seed(1),
        **common,
    )
    assert out.images[0].size == (64, 64)
    assert np.asarray(filled.images[0]).shape == (64, 64, 3)


def test_flux_dev_layout(tmp_path: Path) -> None:
    from diffusers import FluxPipeline

    from sdstudio.testing.tiny_flow import save_tiny_flux

    folder = save_tiny_flux(tmp_path / "dev", guidance_embeds=True)
    pipe = FluxPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.transformer.config.guidance_embeds is True
    assert pipe.scheduler.config.use_dynamic_shifting is True
    assert pipe.scheduler.config.max_shift == 1.15
    assert _txt2img(pipe, 1, guidance_scale=3.5).size == (64, 64)


def test_flux_latents_unpack_to_vae_layout(flow_pipelines: dict[str, Any]) -> None:
    import torch

    pipe = flow_pipelines["flux"]
    packed = torch.arange(1 * 24 * 64, dtype=torch.float32).view(1, 24, 64)  # 64x96 pixels
    manual = packed.view(1, 4, 6, 16, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(1, 16, 8, 12)
    assert torch.equal(pipe._unpack_latents(packed, 64, 96, pipe.vae_scale_factor), manual)


def test_t5_tokenizer(tmp_path: Path) -> None:
    from transformers import T5TokenizerFast

    from sdstudio.testing.tiny_tokenizers import write_tiny_t5_tokenizer

    tokenizer = T5TokenizerFast.from_pretrained(write_tiny_t5_tokenizer(tmp_path / "t5"))
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert tokenizer.model_max_length == 512
    ids = tokenizer("a cat, 日本 🙂", padding="max_length", max_length=16).input_ids
    assert len(ids) == 16
    assert ids[ids.index(1) + 1 :] == [0] * (15 - ids.index(1))
    assert tokenizer.decode(ids, skip_special_tokens=True).startswith("a cat,")


def test_qwen_tokenizer(tmp_path: Path) -> None:
    from transformers import Qwen2TokenizerFast

    from sdstudio.testing.tiny_tokenizers import write_tiny_qwen_tokenizer

    tokenizer = Qwen2TokenizerFast.from_pretrained(write_tiny_qwen_tokenizer(tmp_path / "q"))
    text = "café 日本 🙂"
    assert tokenizer.decode(tokenizer(text).input_ids) == text
    # Qwen-Image drops the first 34 tokens of its template: exactly the system part.
    template = (
        "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture,"
        " quantity, text, spatial relationships of the objects and background:<|im_end|>\n"
        "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tokenizer(template.format(text)).input_ids
    assert tokenizer.decode(ids[34:]).startswith(text + "<|im_end|>")
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
