"""The TaylorSeer cache on every transformer family (Flux.1, Flux.2 Klein, SD 3.x,
Qwen-Image, Z-Image, Chroma): it changes the image, is recorded, read back and re-run
pixel-exactly, and leaves the model as it was; bad settings and other models are
refused before anything runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata.a1111 import format_parameters, read_parameters
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.speed import check
from sdstudio.engine.speed.fast_mode import FastMode, parse_fast_mode

FAST = FastMode("taylorseer-cache", interval=2, warmup=2)
STEPS = 6
"""Steps 0 and 1 run in full, then 2 is forecast, 3 runs, 4 is forecast, 5 runs."""

SAVERS = {
    "flux": ("save_tiny_flux", {"guidance_scale": 1.0}),
    "sd3": ("save_tiny_sd3", {"guidance_scale": 1.0}),
    "zimage": ("save_tiny_zimage", {"guidance_scale": 1.0}),
    "qwen": ("save_tiny_qwen_image", {"guidance_scale": 1.0}),
    "klein": ("save_tiny_flux2_klein", {"guidance_scale": 1.0}),
    "chroma": ("save_tiny_chroma", {"guidance_scale": 3.0, "negative_prompt": "blurry"}),
}
"""Each family's tiny model and the settings it runs with (Chroma with real CFG: two
transformer passes a step, each with its own forecast)."""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sdstudio.testing import tiny_flow

    folder = tmp_path_factory.mktemp("models")
    return {name: getattr(tiny_flow, saver)(folder / name) for name, (saver, _) in SAVERS.items()}


def _request(model: Path, fast: FastMode | None, family: str) -> GenerationRequest:
    values = {"prompt": "a red boat", "seed": 7, "steps": STEPS, "width": 64, "height": 64}
    return GenerationRequest(model=str(model), fast=fast, **{**values, **SAVERS[family][1]})


def _pixels(engine, request: GenerationRequest):
    (generated,) = list(engine.generate(request))
    return np.asarray(generated.image).astype(int), generated.record


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"warmup": 0}, "Fast warmup must be between 1 and 50 steps, not 0"),
        ({"warmup": 51}, "Fast warmup must be between 1 and 50 steps, not 51"),
        ({"warmup": 2.5}, "Fast warmup must be a whole number, not 2.5"),
        ({"order": 3}, "Fast order must be 1 or 2, not 3"),
        ({"order": 0}, "Fast order must be 1 or 2, not 0"),
        ({"order": True}, "Fast order must be a whole number, not True"),
        ({"interval": 1}, "Fast interval must be between 2 and 10 steps, not 1"),
    ],
)
def test_bad_settings_are_refused_with_what_is_allowed(values, message) -> None:
    with pytest.raises(InvalidRequest, match=message):
        FastMode("taylorseer-cache", **values)
    settings = {"method": "taylorseer-cache", **values}
    with pytest.raises(InvalidRequest, match=message):
        GenerationRequest.from_dict({"model": "m", "prompt": "p", "fast": settings})


def test_the_short_form_and_the_cli_option_give_the_mode() -> None:
    from sdstudio.cli.fast_options import add_fast_options, fast_options

    assert parse_fast_mode("TaylorSeer-Cache, interval=4, warmup=5, order=2") == FastMode(
        "taylorseer-cache", interval=4, warmup=5, order=2
    )
    assert parse_fast_mode("taylorseer-cache") == FastMode(
        "taylorseer-cache", interval=3, warmup=3, order=1
    )
    with pytest.raises(InvalidRequest, match=r"'threshold=0.1' is not one of taylorseer-cache's"):
        parse_fast_mode("taylorseer-cache,threshold=0.1")
    with pytest.raises(InvalidRequest, match="Fast warmup 'two' is not a number"):
        parse_fast_mode("taylorseer-cache,warmup=two")
    with pytest.raises(InvalidRequest, match="Fast order must be 1 or 2, not 5"):
        parse_fast_mode("taylorseer-cache,order=5")
    parser = argparse.ArgumentParser()
    add_fast_options(parser)
    args = parser.parse_args(["--fast", "taylorseer-cache,interval=2,warmup=2"])
    assert fast_options(args) == {"fast": FAST}


def test_the_mode_is_written_read_back_and_kept_in_json() -> None:
    fast = FastMode("taylorseer-cache", interval=4, warmup=5, order=2)
    request = GenerationRequest(model="m", prompt="a boat", fast=fast)
    assert GenerationRequest.from_json(request.to_json()) == request
    text = format_parameters(request, model_name="tiny")
    assert "Fast mode: taylorseer-cache, Fast interval: 4, Fast warmup: 5, Fast order: 2" in text
    assert read_parameters(text).request.fast == fast
    assert fast.describe() == "taylorseer-cache, interval 4, warmup 5, order 2"
    parsed = read_parameters(text.replace("Fast order: 2", "Fast order: 7"))
    assert parsed.request.fast is None and parsed.extras["Fast order"] == "7"
    assert any("Fast order must be 1 or 2, not 7" in note for note in parsed.notes)


@pytest.mark.parametrize("family", list(SAVERS))
@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_each_family_changes_records_and_reruns_exactly(engine, models, family: str) -> None:
    model = models[family]
    full, _ = _pixels(engine, _request(model, None, family))
    image, record = _pixels(engine, _request(model, FAST, family))
    assert np.abs(image - full).mean() > 0 and record.request.fast == FAST
    again = read_parameters(format_parameters(record.request)).request
    assert again.fast == FAST
    assert np.array_equal(_pixels(engine, record.request.replace(fast=again.fast))[0], image)
    # The hooks left with the request: the model computes what it did before.
    assert np.array_equal(_pixels(engine, _request(model, None, family))[0], full)


def _run(pipe, **values):
    import torch

    generator = torch.Generator().manual_seed(1)
    settings = {"prompt": "a cat", "num_inference_steps": STEPS, "width": 64, "height": 64}
    output = pipe(**settings, **values, generator=generator, output_type="np")
    return output.images[0]


def _hooks_left(model) -> list[str]:
    return [
        name
        for name, module in model.named_modules()
        if getattr(module, "_diffusers_hook", None) is not None and module._diffusers_hook.hooks
    ]


def test_each_pass_of_a_step_keeps_its_own_forecast_on_chroma() -> None:
    from sdstudio.engine.speed.taylorseer import taylorseer_cache
    from sdstudio.testing.tiny_flow import build_tiny_chroma

    pipe = build_tiny_chroma()
    values = {"guidance_scale": 3.0, "negative_prompt": "blurry"}
    full = _run(pipe, **values)
    with taylorseer_cache(pipe.transformer, 2, 2, 1, "Chroma") as state:
        cached = _run(pipe, **values)
    # Two passes a step (prompt and negative prompt), each forecast at steps 2 and 4;
    # one forecast shared by both passes would count the calls as twelve steps.
    assert (state.calls, state.reused) == (2 * STEPS, 4)
    assert not np.array_equal(cached, full)
    assert not _hooks_left(pipe.transformer)
    assert np.array_equal(_run(pipe, **values), full)


@pytest.mark.parametrize(("interval", "warmup", "order", "reused"), [(2, 2, 1, 2), (3, 1, 2, 3)])
def test_forecasts_follow_the_interval_and_warmup_on_sd3(interval, warmup, order, reused) -> None:
    from sdstudio.engine.speed.taylorseer import taylorseer_cache
    from sdstudio.testing.tiny_flow import build_tiny_sd3

    pipe = build_tiny_sd3()
    with taylorseer_cache(pipe.transformer, interval, warmup, order, "SD 3.x") as state:
        first = _run(pipe, guidance_scale=1.0)
    with taylorseer_cache(pipe.transformer, interval, warmup, order, "SD 3.x"):
        second = _run(pipe, guidance_scale=1.0)
    assert (state.calls, state.reused) == (STEPS, reused)
    assert np.array_equal(first, second)
    assert not _hooks_left(pipe.transformer)


def test_the_order_changes_the_forecast_on_qwen_image() -> None:
    from sdstudio.engine.speed.taylorseer import taylorseer_cache
    from sdstudio.testing.tiny_flow import build_tiny_qwen_image

    pipe = build_tiny_qwen_image()
    images = []
    for order in (1, 2):
        with taylorseer_cache(pipe.transformer, 3, 3, order, "Qwen-Image") as state:
            images.append(_run(pipe))
        assert state.reused == 2  # steps 3 and 5
    assert not np.array_equal(images[0], images[1])


def test_models_it_cannot_take_are_refused(engine, tiny_model: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"runs on transformer models .* use deep-cache"):
        list(engine.generate(_request(tiny_model, FAST, "flux")))
    other = SimpleNamespace(transformer=SimpleNamespace())
    with pytest.raises(InvalidRequest, match=r"TaylorSeer cache does not run on Lumina models"):
        check(FAST, other, "Lumina")
    flux = SimpleNamespace(transformer=SimpleNamespace())
    with pytest.raises(InvalidRequest, match=r"use first-block-cache or taylorseer-cache"):
        check(FastMode("deep-cache"), flux, "Flux.1")


@pytest.mark.parametrize(
    ("builder", "label"),
    [
        ("build_tiny_sd3", "SD 3.x"),
        ("build_tiny_zimage", "Z-Image"),
        ("build_tiny_flux2_klein", "Flux.2 Klein"),
        ("build_tiny_chroma", "Chroma"),
    ],
)
def test_the_first_block_cache_is_refused_where_it_fails(builder: str, label: str) -> None:
    from sdstudio.testing import tiny_flow

    pipe = getattr(tiny_flow, builder)()
    with pytest.raises(InvalidRequest, match=rf"does not run on {label} .* use taylorseer-cache"):
        check(FastMode("first-block-cache"), pipe, label)
    check(FAST, pipe, label)


def test_the_advanced_row_offers_and_shows_the_mode(qtbot) -> None:
    from sdstudio.ui.fast_mode_row import FastModeRow

    row = FastModeRow()
    qtbot.addWidget(row)
    fast = FastMode("taylorseer-cache", interval=4, warmup=5, order=2)
    row.load(fast)
    assert row.values() == {"fast": fast}
    assert row.describe() == "fast: taylorseer-cache, interval 4, warmup 5, order 2"
    row.parameter.setValue(6)
    assert row.values() == {"fast": FastMode("taylorseer-cache", interval=6, warmup=5, order=2)}
    row.load(None)
    row.mode.setCurrentIndex(row.mode.findData("taylorseer-cache"))
    assert row.values() == {"fast": FastMode("taylorseer-cache")}
