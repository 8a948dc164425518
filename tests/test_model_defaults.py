"""Per-model defaults: native sizes and few-step models."""

from __future__ import annotations

from sdstudio.engine.models.defaults import defaults_for
from sdstudio.engine.request import GenerationRequest


def test_native_sizes_by_family() -> None:
    assert (defaults_for("sd1", "v1-5").width, defaults_for("sdxl", "base").width) == (512, 1024)
    assert defaults_for("sd2", "v2-1_768", v_prediction=True).height == 768
    assert defaults_for("sd2", "v2-1_512").height == 512


def test_few_step_models() -> None:
    turbo = defaults_for("sd2", "sd-turbo")
    assert (turbo.steps, turbo.guidance_scale, turbo.sampler) == (1, 0.0, "Euler a")
    assert defaults_for("sd1", "dreamshaper-lcm").sampler == "LCM"
    assert defaults_for("sdxl", "sdxl-lightning-4step").steps == 4


def test_defaults_make_valid_requests() -> None:
    for family in ("sd1", "sd2", "sdxl", "unknown"):
        for name in ("base", "sd-turbo", "x-lcm", "y-lightning"):
            d = defaults_for(family, name)
            GenerationRequest(
                model="m",
                prompt="p",
                width=d.width,
                height=d.height,
                steps=d.steps,
                guidance_scale=d.guidance_scale,
                sampler=d.sampler,
                schedule=d.schedule,
            )
