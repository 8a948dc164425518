"""Settings that suit a model, applied when the user picks it.

Each family has its native size; few-step models (SD-Turbo, SDXL-Turbo, LCM,
Lightning, Hyper-SD) need few steps, little or no guidance and the sampler
they were distilled for. A source image proposes its own size: its shape at the
model's native number of pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sdstudio.engine.request import MAX_SIZE, round_to_multiple_of_8


@dataclass(frozen=True, slots=True)
class ModelDefaults:
    """What to put in the prompt panel for a model."""

    width: int
    height: int
    steps: int
    guidance_scale: float
    sampler: str
    schedule: str


_NATIVE_SIZE = {"sd1": 512, "sd2": 768, "sdxl": 1024, "sdxl-refiner": 1024}


def native_size(family: str, *, v_prediction: bool = False) -> int:
    """The side of the square a model of ``family`` was trained at: 512 for SD 1.x and
    SD 2.x base, 768 for SD 2.x v-prediction, 1024 for SDXL; 512 when unknown."""
    if family == "sd2" and not v_prediction:
        return 512
    return _NATIVE_SIZE.get(family, 512)


def size_for_source(width: int, height: int, native: int) -> tuple[int, int]:
    """The size to generate at from a ``width`` x ``height`` source image: its shape, in
    multiples of 8, scaled down to at most ``native`` squared pixels when it has more.

    A source within the model's pixel budget keeps its own size. Each side stays within
    the request's limits, so a very long and thin image loses some of its shape.
    """
    scale = min(1.0, math.sqrt(native * native / (width * height)))
    return _side(width * scale), _side(height * scale)


def _side(value: float) -> int:
    return min(MAX_SIZE, round_to_multiple_of_8(round(value)))


def defaults_for(family: str, name: str, *, v_prediction: bool = False) -> ModelDefaults:
    """The settings that suit a model of ``family`` named ``name``."""
    from sdstudio.engine.families import FAMILIES

    lowered = name.lower()
    size = native_size(family, v_prediction=v_prediction)
    kind = FAMILIES.get(family)
    if kind is not None and kind.flow:
        # Flux.1 schnell, SD 3.5 Large Turbo, Z-Image Turbo and Qwen-Image Lightning
        # are distilled to a few steps without CFG.
        few = any(word in lowered for word in ("schnell", "turbo", "lightning"))
        steps, guidance = (
            (kind.few_steps, kind.few_guidance)
            if few
            else (kind.default_steps, kind.default_guidance)
        )
        return ModelDefaults(kind.native_size, kind.native_size, steps, guidance, "Euler", "Simple")
    if "turbo" in lowered:
        # SD-Turbo and SDXL-Turbo: one to four steps at 512 px, no guidance.
        return ModelDefaults(512, 512, 1, 0.0, "Euler a", "SGM Uniform")
    if "lcm" in lowered:
        return ModelDefaults(size, size, 4, 1.5, "LCM", "Automatic")
    if "lightning" in lowered or "hyper" in lowered:
        return ModelDefaults(size, size, 4, 0.0, "Euler", "SGM Uniform")
    return ModelDefaults(size, size, 25 if family == "sdxl" else 20, 7.0, "DPM++ 2M", "Karras")
