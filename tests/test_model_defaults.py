"""Per-model defaults: native sizes and few-step models."""

from __future__ import annotations

from sdstudio.engine.models.defaults import defaults_for, native_size, size_for_source
from sdstudio.engine.request import MAX_SIZE, MIN_SIZE, GenerationRequest


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


def test_native_size_is_the_models_pixel_budget() -> None:
    assert [native_size(f) for f in ("sd1", "sd2", "sdxl", "unknown")] == [512, 512, 1024, 512]
    assert native_size("sd2", v_prediction=True) == 768


def test_a_large_source_proposes_its_shape_within_the_models_pixel_budget() -> None:
    width, height = size_for_source(8000, 6000, 512)
    assert (width, height) == (592, 440)
    assert width % 8 == 0 and height % 8 == 0
    assert abs(width - height * 8000 / 6000) <= 8  # the shape, within one 8-px step
    assert width * height <= 512 * 512 * 1.03
    assert size_for_source(6000, 8000, 1024) == (888, 1184)
    assert size_for_source(8000, 6000, 768) == (888, 664)


def test_a_source_within_the_budget_keeps_its_size_in_multiples_of_8() -> None:
    assert size_for_source(80, 72, 512) == (80, 72)
    assert size_for_source(897, 481, 1024) == (896, 480)


def test_a_very_long_source_stays_within_the_size_limits() -> None:
    width, height = size_for_source(100_000, 40, 512)
    assert (width, height) == (MAX_SIZE, MIN_SIZE)
    GenerationRequest(model="m", prompt="p", width=width, height=height)
