"""A corpus of images as popular tools write them, with the settings each one holds.

Every :class:`Sample` writes one image (made by code from the tool's public
format) and says what a reader should find in it. A field left ``None`` is
one the image does not hold. Used by ``benchmarks/metadata_corpus.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import metadata_samples_comfyui as comfy
from metadata_samples import A1111_TEXT
from metadata_samples_corpus_data import (
    A1111,
    A1111_HIRES,
    BIG_SEED,
    CIVITAI_TEXT,
    COMFY_STOCK,
    DREAM,
    FOOOCUS_A1111,
    FOOOCUS_EXPECTED,
    FOOOCUS_JSON,
    FORGE_TEXT,
    HIRES_EXPECTED,
    INVOKE2,
    INVOKE2_EXPECTED,
    INVOKE3,
    JAPANESE,
    LORA_PROMPT,
    NOVELAI_BASE,
    NOVELAI_V4,
    RUINED,
    SDNEXT_TEXT,
    STABILITY_MATRIX,
    SWARM,
    SWARM_EXPECTED,
    TENSORART,
    WEB_DEMO,
    comfy_webp,
    lora_chain,
    workflow,
)
from metadata_samples_more import (
    novelai_texts,
    write_stealth_png,
    write_text_png,
    write_user_comment,
)


@dataclass(frozen=True)
class Sample:
    """One image of the corpus: how to write it and what it holds."""

    tool: str
    name: str
    write: Callable[[Path], Path]
    """Writes the image under the given stem; returns its path."""
    sources: tuple[str, ...]
    """The ``ImageSettings.source`` values that mean the format was recognised."""
    prompt: str | None = None
    negative: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    schedule: str | None = None
    size: tuple[int, int] | None = None
    model: str | None = None
    model_hash: str | None = None
    extras: tuple[str, ...] = field(default=())
    """Names of settings beyond the core ones (hires, LoRA hashes...) the image holds."""


def _png(texts: dict[str, str]) -> Callable[[Path], Path]:
    return lambda stem: write_text_png(stem.with_suffix(".png"), texts)


def _comment(text: str, suffix: str) -> Callable[[Path], Path]:
    return lambda stem: write_user_comment(stem.with_suffix(suffix), text)


def _sdstudio(stem: Path) -> Path:
    from PIL import Image

    from sdstudio.engine.metadata import ImageRecord, png_info
    from sdstudio.engine.request import GenerationRequest

    request = GenerationRequest(
        model="v1-5-pruned-emaonly.safetensors",
        prompt="a watercolor fox",
        negative_prompt="photo",
        sampler="Euler a",
        schedule="Automatic",
        steps=24,
        guidance_scale=6.0,
        seed=99,
        width=512,
        height=640,
    )
    record = ImageRecord(request=request, model_name="v1-5-pruned-emaonly", model_hash="6ce0161689")
    path = stem.with_suffix(".png")
    Image.new("RGB", (64, 96)).save(path, pnginfo=png_info(record))
    return path


def corpus() -> list[Sample]:
    """Every sample, grouped by tool in the order the table lists them."""
    a1 = ("a1111",)
    comfy_src = ("comfyui",)
    invoke = ("invokeai",)
    fooocus = ("fooocus",)
    novelai = ("novelai",)
    swarm = ("swarmui",)
    return [
        Sample("A1111", "png", _png({"parameters": A1111_TEXT}), a1, **A1111),
        Sample("A1111", "jpeg exif", _comment(A1111_TEXT, ".jpg"), a1, **A1111),
        Sample("A1111", "webp exif", _comment(A1111_TEXT, ".webp"), a1, **A1111),
        Sample("A1111", "hires + lora", _png({"parameters": A1111_HIRES}), a1, **HIRES_EXPECTED),
        Sample(
            "Forge",
            "flux hires",
            _png({"parameters": FORGE_TEXT}),
            a1,
            prompt="a cat astronaut floating in space",
            negative="",
            seed=2024,
            steps=20,
            cfg=1.0,
            sampler="Euler",
            schedule="Beta",
            size=(896, 1152),
            model="flux1-dev-bnb-nf4-v2",
            model_hash="bea01d51bd",
            # The hires fix (and the distilled CFG) are read into the request.
            extras=("Hires Module 1",),
        ),
        Sample(
            "SD.Next",
            "png",
            _png({"parameters": SDNEXT_TEXT}),
            (*a1, "sdnext"),
            prompt="portrait of an old sailor, film grain",
            negative="cartoon",
            seed=31337,
            steps=25,
            cfg=6.0,
            sampler="DPM++ 2M",
            schedule="Automatic",
            size=(1024, 1024),
            model="sd_xl_base_1.0",
            model_hash="31e35c80fc",
        ),
        Sample(
            "InvokeAI",
            "3.x metadata",
            _png({"invokeai_metadata": json.dumps(INVOKE3)}),
            invoke,
            prompt="a cozy cabin in the snow",
            negative="people",
            seed=4242,
            steps=30,
            cfg=7.5,
            sampler="DPM++ 2M",
            schedule="Karras",
            size=(768, 512),
            model="stable-diffusion-v1-5",
        ),
        Sample(
            "InvokeAI",
            "2.x sd-metadata",
            _png({"sd-metadata": json.dumps(INVOKE2)}),
            invoke,
            model="stable-diffusion-1.5",
            **INVOKE2_EXPECTED,
        ),
        Sample("InvokeAI", "dream", _png({"Dream": DREAM}), invoke, **INVOKE2_EXPECTED),
        Sample(
            "ComfyUI",
            "stock",
            _png({"prompt": json.dumps(comfy.txt2img())}),
            comfy_src,
            **COMFY_STOCK,
        ),
        Sample(
            "ComfyUI",
            "sdxl",
            _png({"prompt": json.dumps(comfy.sdxl())}),
            comfy_src,
            **{
                **COMFY_STOCK,
                "prompt": "a fox",
                "negative": "ugly",
                "size": (1024, 1024),
                "model": "sd_xl_base_1.0",
            },
        ),
        Sample(
            "ComfyUI",
            "custom advanced",
            _png({"prompt": json.dumps(comfy.custom_advanced())}),
            comfy_src,
            prompt="a red kite",
            negative="",
            seed=42,
            steps=28,
            cfg=4.5,
            sampler="DPM++ 2M",
            schedule="Karras",
            size=(1152, 896),
            model="sd3.5_medium",
        ),
        Sample(
            "ComfyUI",
            "two-pass hires",
            _png({"prompt": json.dumps(comfy.two_pass())}),
            comfy_src,
            **COMFY_STOCK,
        ),
        Sample(
            "ComfyUI",
            "lora chain",
            _png({"prompt": json.dumps(lora_chain())}),
            comfy_src,
            # sdstudio carries LoRAs as A1111 prompt tags.
            **{**COMFY_STOCK, "prompt": LORA_PROMPT},
        ),
        Sample(
            "ComfyUI",
            "workflow only",
            _png({"workflow": json.dumps(workflow())}),
            comfy_src,
            **COMFY_STOCK,
        ),
        Sample("ComfyUI", "webp exif Prompt:", comfy_webp, comfy_src, **COMFY_STOCK),
        Sample(
            "Fooocus",
            "scheme fooocus",
            _png({"parameters": json.dumps(FOOOCUS_JSON), "fooocus_scheme": "fooocus"}),
            fooocus,
            **FOOOCUS_EXPECTED,
        ),
        Sample(
            "Fooocus",
            "scheme a1111",
            _png({"parameters": FOOOCUS_A1111, "fooocus_scheme": "a1111"}),
            fooocus + a1,
            **FOOOCUS_EXPECTED,
        ),
        Sample(
            "RuinedFooocus",
            "png",
            _png({"parameters": json.dumps(RUINED)}),
            (*fooocus, "ruinedfooocus"),
            prompt="a knight in a misty forest",
            negative="blurry",
            seed=77,
            steps=24,
            cfg=7.0,
            sampler="DPM++ 2M",
            schedule="Karras",
            size=(1024, 1024),
            model="sd_xl_base_1.0",
            model_hash="31e35c80fc",
        ),
        Sample("NovelAI", "png", _png(novelai_texts()), novelai, **NOVELAI_BASE),
        Sample(
            "NovelAI",
            "webp exif",
            _comment(json.dumps(novelai_texts()), ".webp"),
            novelai,
            **NOVELAI_BASE,
        ),
        Sample(
            "NovelAI",
            "v4 characters",
            _png(novelai_texts(NOVELAI_V4)),
            novelai,
            **{**NOVELAI_BASE, "prompt": "2girls, library, warm light", "negative": "lowres"},
        ),
        Sample(
            "NovelAI",
            "stealth alpha",
            lambda stem: write_stealth_png(
                stem.with_suffix(".png"), json.dumps(novelai_texts()), compressed=True
            ),
            novelai,
            **NOVELAI_BASE,
        ),
        Sample("SwarmUI", "png", _png({"parameters": SWARM}), swarm, **SWARM_EXPECTED),
        Sample("SwarmUI", "jpeg", _comment(SWARM, ".jpg"), swarm, **SWARM_EXPECTED),
        Sample("SwarmUI", "webp", _comment(SWARM, ".webp"), swarm, **SWARM_EXPECTED),
        Sample(
            "Stability Matrix", "png", _png(STABILITY_MATRIX), (*a1, "stabilitymatrix"), **A1111
        ),
        Sample(
            "TensorArt",
            "png",
            _png(TENSORART),
            ("tensorart", "comfyui"),
            **{**COMFY_STOCK, "model": "dreamshaper_8", "model_hash": "879db523c3"},
        ),
        Sample(
            "Civitai",
            "jpeg",
            _comment(CIVITAI_TEXT, ".jpg"),
            (*a1, "civitai"),
            **A1111,
            extras=("Civitai resources",),
        ),
        Sample(
            "Web demo JSON",
            "png",
            _png({"parameters": json.dumps(WEB_DEMO)}),
            ("webdemo",),
            prompt="an astronaut riding a horse",
            negative="low quality",
            seed=12345,
            steps=25,
            cfg=7.5,
            sampler="Euler",
            schedule="Automatic",
            size=(1024, 768),
            model="stable-diffusion-xl-base-1.0",
        ),
        Sample(
            "64-bit seed",
            "png",
            _png({"parameters": BIG_SEED}),
            a1,
            **{**A1111, "seed": 18446744073709551615},
        ),
        Sample(
            "UTF-8 Japanese",
            "png",
            _png({"parameters": JAPANESE}),
            a1,
            **{**A1111, "prompt": "桜の木の下の猫、夕焼け"},
        ),
        Sample(
            "sdstudio",
            "png",
            _sdstudio,
            ("sdstudio",),
            prompt="a watercolor fox",
            negative="photo",
            seed=99,
            steps=24,
            cfg=6.0,
            sampler="Euler a",
            schedule="Automatic",
            size=(512, 640),
            model="v1-5-pruned-emaonly",
            model_hash="6ce0161689",
        ),
    ]
