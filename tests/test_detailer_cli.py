"""``generate --detail``: the detailer's options go into the request and the image's
``parameters`` under ADetailer's names; ``rerun`` keeps the detailer; detectors that
cannot run are refused with one clear line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.cli import main
from sdstudio.cli.detail_options import add_detail_options, detail_options, recorded_detailer
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import read_image_settings
from sdstudio.engine.refine.detailer_settings import Detailer


def events_of(capsys) -> list[dict]:
    lines = capsys.readouterr().out.splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def parsed(*options: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_detail_options(parser)
    return parser.parse_args(list(options))


def test_the_options_make_the_detailer(tmp_path: Path) -> None:
    assert detail_options(parsed()) is None
    assert detail_options(parsed("--detail", "FACE")) == Detailer()
    assert detail_options(parsed("--detail-prompt", "a smile")) == Detailer(prompt="a smile")
    every = parsed(
        "--detail", "face", "--detail-prompt", "a", "--detail-negative", "b",
        "--detail-denoise", "0.3", "--detail-confidence", "0.5", "--detail-padding", "16",
        "--detail-blur", "2", "--detail-dilate", "-4", "--detail-steps", "12", "--detail-max", "3",
    )  # fmt: skip
    assert detail_options(every) == Detailer(
        prompt="a",
        negative_prompt="b",
        denoise=0.3,
        confidence=0.5,
        padding=16,
        mask_blur=2,
        dilate=-4,
        steps=12,
        max_faces=3,
    )
    onnx = tmp_path / "face_detection_yunet_2023mar.onnx"
    onnx.write_bytes(b"x")
    found = detail_options(parsed("--detail", str(onnx)))
    assert found is not None and found.detector == str(onnx.resolve())
    assert recorded_detailer(found).detector == onnx.name
    with pytest.raises(InvalidRequest, match="denoising strength of 0 repaints nothing"):
        detail_options(parsed("--detail-denoise", "0"))


def test_generate_details_and_rerun_keeps_it(capsys, tmp_path: Path, tiny_model: Path) -> None:
    base = ["generate", "--model", str(tiny_model), "--prompt", "a sailor", "--steps", "2"]
    base += ["--width", "64", "--height", "64", "--seed", "3", "--sampler", "Euler"]
    base += ["--out", str(tmp_path / "out"), "--json"]
    detail = ["--detail", "face", "--detail-prompt", "a smiling face", "--detail-denoise", "0.5"]
    assert main([*base, *detail]) == 0
    events = events_of(capsys)
    notices = [e["message"] for e in events if e["event"] == "notice"]
    # The tiny model's random picture may hold no face; either way the pass says so.
    assert any(n.startswith(("Detailer: no face found", "Detailing face 1 of")) for n in notices)
    [image] = [e for e in events if e["event"] == "image"]
    settings = read_image_settings(image["path"])
    assert settings.request.detailer == Detailer(prompt="a smiling face", denoise=0.5)
    assert 'ADetailer model: face, ADetailer prompt: "a smiling face"' not in settings.parameters
    assert "ADetailer model: face, ADetailer prompt: a smiling face" in settings.parameters
    assert "ADetailer denoising strength: 0.5" in settings.parameters

    again = ["rerun", str(image["id"]), "--out", str(tmp_path / "again"), "--json"]
    assert main(again) == 0
    [rerun] = [e for e in events_of(capsys) if e["event"] == "image"]
    assert read_image_settings(rerun["path"]).request.detailer == settings.request.detailer
    with Image.open(image["path"]) as first, Image.open(rerun["path"]) as second:
        assert np.array_equal(np.asarray(first), np.asarray(second))


@pytest.mark.parametrize(
    ("detector", "message"),
    [
        ("face_yolov8n.pt", "needs the ultralytics library"),
        ("eyes_finder", "The detector 'eyes_finder' was not found"),
    ],
)
def test_a_detector_that_cannot_run_is_refused(
    capsys, tmp_path: Path, tiny_model: Path, detector: str, message: str
) -> None:
    args = ["generate", "--model", str(tiny_model), "--prompt", "a", "--steps", "4"]
    args += ["--width", "64", "--height", "64", "--detail", detector, "--json"]
    assert main(args) == 1
    assert message in events_of(capsys)[-1]["message"]
