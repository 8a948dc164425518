"""Opt-in fast modes: DeepCache and token merging on the UNet families, the first-block
cache on the transformer families; recorded, read back and re-run pixel-exactly, and
gone from the model once the request is done."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata.a1111 import format_parameters, read_parameters
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.speed import check
from sdstudio.engine.speed.fast_mode import DEFAULT_LAYER, FastMode, parse_fast_mode

STEPS = 4


def _pixels(engine, request: GenerationRequest):
    (generated,) = list(engine.generate(request))
    return np.asarray(generated.image), generated.record


def _request(model: Path, fast: FastMode | None = None, **values) -> GenerationRequest:
    settings = {"prompt": "a red house", "seed": 7, "steps": STEPS, "width": 64, "height": 64}
    return GenerationRequest(model=str(model), fast=fast, **{**settings, **values})


@pytest.fixture(scope="module")
def full_image(tiny_model: Path, manager):
    """The tiny SD model's image without a fast mode."""
    from sdstudio.engine.generation import Engine

    engine = Engine(manager, tiny_model.parent / "fast-inputs")
    return _pixels(engine, _request(tiny_model))[0]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"method": "turbo"}, "Fast mode 'turbo' is unknown; valid: first-block-cache"),
        ({"method": "deep-cache", "interval": 1}, "Fast interval must be between 2 and 10"),
        ({"method": "deep-cache", "interval": 2.5}, "Fast interval must be a whole number"),
        ({"method": "deep-cache", "branch": -1}, "Fast branch must be between 0 and 3"),
        ({"method": "token-merging", "ratio": 0}, "Fast ratio must be above 0 and at most 0.75"),
        ({"method": "token-merging", "ratio": 0.9}, "at most 0.75, not 0.9"),
        ({"method": "first-block-cache", "threshold": -0.1}, "between 0 and 1, not -0.1"),
        ({"method": "first-block-cache", "threshold": "high"}, "must be a number, not 'high'"),
    ],
)
def test_bad_settings_are_refused_with_what_is_allowed(values, message) -> None:
    with pytest.raises(InvalidRequest, match=message):
        FastMode(**values)
    with pytest.raises(InvalidRequest, match=message):  # as a request's JSON part
        GenerationRequest.from_dict({"model": "m", "prompt": "p", "fast": values})


def test_the_short_form_gives_the_mode_and_refuses_other_parameters() -> None:
    assert parse_fast_mode("deep-cache,interval=2, branch=1") == FastMode(
        "deep-cache", interval=2, branch=1, layer=DEFAULT_LAYER
    )
    assert parse_fast_mode("Token-Merging,ratio=0.4") == FastMode("token-merging", ratio=0.4)
    assert parse_fast_mode("first-block-cache") == FastMode("first-block-cache", threshold=0.05)
    assert parse_fast_mode("off") is None and parse_fast_mode("") is None
    with pytest.raises(InvalidRequest, match=r"'ratio=0.3' is not one of deep-cache's"):
        parse_fast_mode("deep-cache,ratio=0.3")
    with pytest.raises(InvalidRequest, match="Fast interval 'two' is not a number"):
        parse_fast_mode("deep-cache,interval=two")


def test_the_cli_option_gives_the_request_part() -> None:
    from sdstudio.cli.fast_options import add_fast_options, fast_options

    parser = argparse.ArgumentParser()
    add_fast_options(parser)
    assert fast_options(parser.parse_args(["--fast", "deep-cache,interval=3"])) == {
        "fast": FastMode("deep-cache", interval=3, layer=DEFAULT_LAYER)
    }
    assert fast_options(parser.parse_args([])) == {"fast": None}


def test_the_mode_is_written_read_back_and_kept_in_json(tiny_model: Path) -> None:
    request = _request(tiny_model, FastMode("deep-cache", interval=4, branch=1))
    assert GenerationRequest.from_json(request.to_json()) == request
    text = format_parameters(request, model_name="tiny")
    assert "Fast mode: deep-cache, Fast interval: 4, Fast branch: 1" in text
    assert read_parameters(text).request.fast == request.fast
    merging = request.replace(fast=FastMode("token-merging", ratio=0.3))
    assert "Fast mode: token-merging, Fast ratio: 0.3" in format_parameters(merging)
    assert "Fast" not in format_parameters(request.replace(fast=None))


def test_the_info_panel_and_cli_info_show_the_mode(
    tiny_model: Path, tmp_path: Path, capsys
) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from sdstudio.cli import main
    from sdstudio.ui.info_panel import ShownImage

    request = _request(tiny_model, FastMode("deep-cache", interval=3, layer=0))
    said = "deep-cache, interval 3, branch 0, layer 0"
    assert [("Fast mode", said)] in ShownImage("a.png", request).lines()
    assert not any(
        label == "Fast mode"
        for line in ShownImage("a.png", request.replace(fast=None)).lines()
        for label, _value in line
    )
    image = tmp_path / "fast.png"
    text = PngInfo()
    text.add_text("parameters", format_parameters(request, model_name="tiny"))
    Image.new("RGB", (8, 8)).save(image, pnginfo=text)
    assert main(["info", str(image)]) == 0
    assert f"Fast mode: {said}" in capsys.readouterr().out


def test_an_unusable_recorded_mode_is_kept_as_written_with_a_note(tiny_model: Path) -> None:
    text = format_parameters(_request(tiny_model, FastMode("deep-cache")), model_name="tiny")
    parsed = read_parameters(text.replace("Fast interval: 3", "Fast interval: 99"))
    assert parsed.request.fast is None
    assert parsed.extras["Fast interval"] == "99" and parsed.extras["Fast mode"] == "deep-cache"
    assert any("Fast interval must be between 2 and 10" in note for note in parsed.notes)


@pytest.mark.parametrize(
    "fast", [FastMode("deep-cache", interval=2), FastMode("token-merging", ratio=0.5)]
)
def test_a_unet_mode_changes_the_image_is_recorded_and_reruns_exactly(
    engine, tiny_model: Path, full_image, fast: FastMode
) -> None:
    image, record = _pixels(engine, _request(tiny_model, fast))
    assert np.abs(image.astype(int) - full_image).mean() > 0.1
    assert record.request.fast == fast
    text = format_parameters(record.request, model_name="tiny")
    again = read_parameters(text, model=str(tiny_model)).request.replace(model=str(tiny_model))
    assert again.fast == fast
    assert np.array_equal(_pixels(engine, again)[0], image)
    # The hooks left with the request: the model computes what it did before.
    assert np.array_equal(_pixels(engine, _request(tiny_model))[0], full_image)


def test_deep_cache_reuses_the_deep_features_between_full_steps() -> None:
    import torch

    from sdstudio.engine.speed.deep_cache import deep_cache
    from sdstudio.testing import build_tiny_pipeline

    unet = build_tiny_pipeline().unet
    sample = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(2, 77, unet.config.cross_attention_dim)

    def step(t: int):
        return unet(sample, t, encoder_hidden_states=text).sample

    with torch.no_grad():
        full = [step(t) for t in (900, 600, 300)]
        with deep_cache(unet, interval=2, branch=0) as state:
            cached = [step(t) for t in (900, 600, 300)]
        after = step(600)
    assert (state.calls, state.reused) == (3, 1)  # steps 0 and 2 ran in full
    assert torch.equal(cached[0], full[0]) and torch.equal(cached[2], full[2])
    assert not torch.equal(cached[1], full[1])
    assert torch.equal(after, full[1])
    assert not unet._diffusers_hook.hooks


def test_the_benchmark_runs_its_code_path_on_the_tiny_model(
    manager, tiny_model: Path, full_image
) -> None:
    from sdstudio.engine.request import Mode
    from tests.test_benchmarks import load

    benchmark = load("fast_modes")
    pipe = manager.pipeline(str(tiny_model), Mode.TXT2IMG)  # loaded already
    models = (pipe.unet, pipe.vae, pipe.unet.config.cross_attention_dim)
    summary = benchmark.measure(models, 64, 3, 2, ["deep-cache,interval=2"])
    json.dumps(summary)  # the line it prints
    cached = summary["deep-cache,interval=2"]
    assert cached["reused_calls"] == 1 and cached["mean_abs_diff"] > 0 and cached["repeatable"]
    assert summary["full"]["mean_abs_diff"] == 0 and cached["denoise_median_s"] > 0


@pytest.mark.slow  # the command line loads the model for each command
def test_the_cli_records_the_mode_and_reruns_it_exactly(
    capsys, tiny_model: Path, tmp_path: Path
) -> None:
    from PIL import Image

    from tests.test_cli import generate, images_of, pixels, run_cli

    code, events, _ = generate(
        capsys, tiny_model, tmp_path / "out", "--fast", "deep-cache,interval=2"
    )
    assert code == 0
    [path] = images_of(events)
    with Image.open(path) as image:
        assert "Fast mode: deep-cache, Fast interval: 2, Fast branch: 0" in image.text["parameters"]
    code, events, _ = run_cli(capsys, "rerun", path, "--out", str(tmp_path / "again"), "--json")
    assert code == 0
    [again] = images_of(events)
    assert np.array_equal(pixels(again), pixels(path))
    code, events, _ = generate(
        capsys, tiny_model, tmp_path / "bad", "--fast", "deep-cache,interval=1"
    )
    assert code != 0
    assert any("Fast interval must be between 2 and 10" in str(e) for e in events)


def test_a_branch_deeper_than_the_unet_is_refused(engine, tiny_model: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"DeepCache branch 1 is too deep .* 0 to 0"):
        list(engine.generate(_request(tiny_model, FastMode("deep-cache", branch=1))))


def test_a_mode_of_the_other_kind_of_model_is_refused(engine, tiny_model: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"runs on transformer models .* use deep-cache"):
        list(engine.generate(_request(tiny_model, FastMode("first-block-cache"))))
    flux = SimpleNamespace(transformer=SimpleNamespace())
    with pytest.raises(InvalidRequest, match=r"runs on UNet models .* use first-block-cache"):
        check(FastMode("deep-cache"), flux, "Flux.1")


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdstudio.testing.tiny_flow import save_tiny_flux

    return save_tiny_flux(tmp_path_factory.mktemp("models") / "tiny-flux")


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_first_block_cache_on_flux_is_recorded_and_reruns_exactly(engine, tiny_flux: Path) -> None:
    values = {"guidance_scale": 1.0, "steps": 6}
    full, _ = _pixels(engine, _request(tiny_flux, **values))
    fast = FastMode("first-block-cache", threshold=0.5)
    image, record = _pixels(engine, _request(tiny_flux, fast, **values))
    assert not np.array_equal(image, full) and record.request.fast == fast
    again = read_parameters(format_parameters(record.request)).request
    assert again.fast == fast
    assert np.array_equal(_pixels(engine, record.request.replace(fast=again.fast))[0], image)
    assert np.array_equal(_pixels(engine, _request(tiny_flux, **values))[0], full)


def test_first_block_cache_counts_its_reuse_on_qwen_image() -> None:
    import torch

    from sdstudio.engine.speed.block_cache import first_block_cache
    from sdstudio.testing.tiny_flow import build_tiny_qwen_image

    pipe = build_tiny_qwen_image()

    def run():
        generator = torch.Generator().manual_seed(1)
        return pipe(
            prompt="a cat",
            num_inference_steps=5,
            width=64,
            height=64,
            generator=generator,
            output_type="np",
        ).images[0]

    full = run()
    with first_block_cache(pipe.transformer, 0.0, "Qwen-Image") as never:
        assert np.array_equal(run(), full)
    with first_block_cache(pipe.transformer, 0.5, "Qwen-Image") as often:
        cached = run()
    assert (never.calls, never.reused) == (5, 0)
    assert often.calls == 5 and often.reused > 0 and not np.array_equal(cached, full)
    assert np.array_equal(run(), full)


def test_the_families_the_cache_cannot_take_are_refused() -> None:
    from sdstudio.testing.tiny_flow import build_tiny_sd3

    pipe = build_tiny_sd3()
    with pytest.raises(InvalidRequest, match=r"does not run on SD 3.x models .* Flux.1"):
        check(FastMode("first-block-cache"), pipe, "SD 3.x")


def test_the_advanced_row_gives_and_shows_the_mode(qtbot) -> None:
    from sdstudio.ui.fast_mode_row import FastModeRow

    row = FastModeRow()
    qtbot.addWidget(row)
    assert row.values() == {"fast": None} and row.describe() == ""
    fast = FastMode("deep-cache", interval=4, branch=1)
    row.load(fast)
    assert row.values() == {"fast": fast}
    assert row.describe() == "fast: deep-cache, interval 4, branch 1"
    row.load(FastMode("token-merging", ratio=0.3))
    assert row.values() == {"fast": FastMode("token-merging", ratio=0.3)}
    row.load(None)
    assert row.values() == {"fast": None}
