"""Upscale jobs as requests: their checks, their JSON, their metadata, and the app's
Upscale dialog turning a choice into a request."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import png_info, upscale_names
from sdstudio.engine.metadata.a1111 import format_parameters, split_parameters
from sdstudio.engine.metadata.record import ImageRecord
from sdstudio.engine.refine.upscale_job import check_upscaled_size
from sdstudio.engine.refine.upscale_settings import Upscale
from sdstudio.engine.request import GenerationRequest, Mode


def _upscale(**changes: object) -> GenerationRequest:
    values: dict[str, object] = {
        "model": "",
        "prompt": "",
        "mode": Mode.UPSCALE,
        "init_image": "/inputs/a.png",
        "width": 2000,
        "height": 1500,
        "upscale": Upscale("4x-UltraSharp", 4.0),
    }
    values.update(changes)
    return GenerationRequest(**values)  # type: ignore[arg-type]


def test_an_upscale_job_needs_no_model_and_keeps_any_size() -> None:
    request = _upscale(width=1001, height=77)  # not multiples of 8: the result's own size
    again = GenerationRequest.from_json(request.to_json())
    assert again == request
    assert again.upscale == Upscale("4x-UltraSharp", 4.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"upscale": None}, "needs its upscaler"),
        ({"init_image": None}, "needs an init image"),
        ({"width": 20000}, "between 1 and 16384"),
        ({"upscale": {"upscaler": "x", "scale": 9}}, "between 1 and 8"),
        ({"upscale": {"upscaler": " "}}, "No upscaler"),
        ({"upscale": {"upscaler": "x", "tile": 8}}, "at least 32"),
    ],
)
def test_unusable_upscale_jobs_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        _upscale(**changes)


def test_sd_upscale_is_image_to_image_only() -> None:
    with pytest.raises(InvalidRequest, match="does not run with txt2img"):
        GenerationRequest(model="m", prompt="p", upscale=Upscale("Lanczos", 2.0))
    sd = GenerationRequest(
        model="m", prompt="p", mode=Mode.IMG2IMG, init_image="/a.png", upscale=Upscale()
    )
    assert GenerationRequest.from_json(sd.to_json()) == sd


def test_too_large_results_are_refused_before_anything_runs() -> None:
    assert check_upscaled_size(512, 384, 4) == (2048, 1536)
    with pytest.raises(InvalidRequest, match="choose a smaller scale"):
        check_upscaled_size(4096, 4096, 8)


def test_an_upscaled_image_keeps_its_sources_parameters_and_says_how(tmp_path: Path) -> None:
    source_text = "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512"
    record = ImageRecord(
        request=_upscale(),
        model_name="4x-UltraSharp",
        extra={"source": {"name": "a.png", "width": 500, "height": 375, "parameters": source_text}},
    )
    assert format_parameters(record.request, extra=record.extra) == source_text
    info = png_info(record)
    path = tmp_path / "up.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    with Image.open(path) as image:
        texts = dict(image.text)  # type: ignore[attr-defined]
    assert texts["parameters"] == source_text
    assert texts[upscale_names.POSTPROCESSING_KEY] == (
        "Postprocess upscale by: 4, Postprocess upscaler: 4x-UltraSharp"
    )
    assert ImageRecord.from_json(texts["sdstudio"]).request == record.request


def test_an_image_upscaled_from_one_without_settings_has_no_parameters(tmp_path: Path) -> None:
    record = ImageRecord(request=_upscale(), extra={"source": {"name": "photo.jpg"}})
    path = tmp_path / "up.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info(record))
    with Image.open(path) as image:
        assert "parameters" not in image.text  # type: ignore[attr-defined]


def test_sd_upscale_is_written_with_a1111s_names() -> None:
    request = GenerationRequest(
        model="m",
        prompt="castle",
        mode=Mode.IMG2IMG,
        init_image="/a.png",
        strength=0.3,
        upscale=Upscale("R-ESRGAN 4x+", 2.0, overlap=96),
    )
    settings = split_parameters(format_parameters(request)).settings
    assert settings["SD upscale overlap"] == "96"
    assert settings["SD upscale upscaler"] == "R-ESRGAN 4x+"
    assert settings["SD upscale scale"] == "2"
    assert settings["Denoising strength"] == "0.3"
