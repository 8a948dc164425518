"""Settings that suit a model, applied when the user picks it.

Each family has its native size; few-step models (SD-Turbo, SDXL-Turbo, LCM,
Lightning, Hyper-SD) need few steps, little or no guidance and the sampler
they were distilled for.
"""

from __future__ import annotations

from dataclasses import dataclass


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


def defaults_for(family: str, name: str, *, v_prediction: bool = False) -> ModelDefaults:
    """The settings that suit a model of ``family`` named ``name``."""
    lowered = name.lower()
    size = _NATIVE_SIZE.get(family, 512)
    if family == "sd2" and not v_prediction:
        size = 512
    if "turbo" in lowered:
        # SD-Turbo and SDXL-Turbo: one to four steps at 512 px, no guidance.
        return ModelDefaults(512, 512, 1, 0.0, "Euler a", "SGM Uniform")
    if "lcm" in lowered:
        return ModelDefaults(size, size, 4, 1.5, "LCM", "Automatic")
    if "lightning" in lowered or "hyper" in lowered:
        return ModelDefaults(size, size, 4, 0.0, "Euler", "SGM Uniform")
    return ModelDefaults(size, size, 25 if family == "sdxl" else 20, 7.0, "DPM++ 2M", "Karras")
