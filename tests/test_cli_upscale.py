"""``sdstudio-cli upscale``: an ESRGAN file from an A1111 folder makes a 4x image in tiles,
recorded in the history, re-run exactly; clear errors for what cannot be upscaled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.cli import main
from sdstudio.testing.tiny_upscalers import write_tiny_upscaler


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict]]:
    code = main(list(args))
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.fixture
def a1111(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """An A1111 root with a tiny ESRGAN in models/ESRGAN, added as a model folder."""
    root = tmp_path / "webui"
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    write_tiny_upscaler(root / "models" / "ESRGAN" / "4x-tiny.pth", "esrgan", 4)
    code, _ = run_cli(capsys, "models", "add-folder", str(root), "--json")
    assert code == 0
    return root


def _source(path: Path, size: tuple[int, int]) -> Path:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.slow
def test_an_esrgan_file_upscales_4x_in_tiles_into_the_history(
    capsys: pytest.CaptureFixture[str], a1111: Path, tmp_path: Path
) -> None:
    source = _source(tmp_path / "photo.png", (512, 512))
    out = tmp_path / "out"
    code, events = run_cli(
        capsys, "upscale", str(source), "--upscaler", "4x-tiny", "--scale", "4",
        "--tile", "256", "--out", str(out), "--json",
    )  # fmt: skip
    assert code == 0, events
    (image_event,) = [e for e in events if e["event"] == "image"]
    with Image.open(image_event["path"]) as image:
        assert image.size == (2048, 2048)
        texts = dict(image.text)  # type: ignore[attr-defined]
    assert texts["postprocessing"] == "Postprocess upscale by: 4, Postprocess upscaler: 4x-tiny"
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) >= 4 and steps[-1]["step"] == steps[-1]["total"]  # one per tile
    assert main(["history", "show", str(image_event["id"]), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["mode"] == "upscale" and (shown["width"], shown["height"]) == (2048, 2048)
    # The record names its source and re-runs to the same pixels.
    code, events = run_cli(
        capsys, "rerun", str(image_event["id"]), "--out", str(tmp_path / "again"), "--json"
    )
    assert code == 0, events
    (again,) = [e["path"] for e in events if e["event"] == "image"]
    with Image.open(again) as a, Image.open(image_event["path"]) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_built_in_upscalers_need_no_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = _source(tmp_path / "s.png", (50, 30))
    code, events = run_cli(
        capsys, "upscale", str(source), "--scale", "2.5", "--upscaler", "nearest",
        "--out", str(tmp_path / "o"), "--json",
    )  # fmt: skip
    assert code == 0, events
    (path,) = [e["path"] for e in events if e["event"] == "image"]
    with Image.open(path) as image:
        assert image.size == (125, 75)
        assert "parameters" not in image.text  # type: ignore[attr-defined]


def test_what_cannot_be_upscaled_is_refused_clearly(
    capsys: pytest.CaptureFixture[str], a1111: Path, tmp_path: Path
) -> None:
    source = _source(tmp_path / "s.png", (64, 64))
    code, events = run_cli(capsys, "upscale", str(source), "--upscaler", "missing-4x", "--json")
    assert code == 1 and "missing-4x" in events[-1]["message"]
    code, events = run_cli(capsys, "upscale", str(source), "--scale", "12", "--json")
    assert code == 1 and "between 1 and 8" in events[-1]["message"]
    code, events = run_cli(capsys, "upscale", str(tmp_path / "nope.png"), "--json")
    assert code == 1 and "does not exist" in events[-1]["message"]
    big = _source(tmp_path / "big.png", (4096, 64))
    code, events = run_cli(capsys, "upscale", str(big), "--scale", "8", "--json")
    assert code == 1 and "smaller scale" in events[-1]["message"]


def test_generate_sd_upscales_an_init_image_in_tiles(
    capsys: pytest.CaptureFixture[str], tiny_model: Path, tmp_path: Path
) -> None:
    source = _source(tmp_path / "small.png", (48, 40))
    common = ["generate", "--model", str(tiny_model), "--prompt", "a harbour", "--json"]
    code, events = run_cli(
        capsys, *common, "--init-image", str(source), "--sd-upscale", "2",
        "--width", "64", "--height", "64", "--steps", "2", "--strength", "0.5",
        "--sd-upscale-overlap", "16", "--seed", "4", "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 0, events
    (path,) = [e["path"] for e in events if e["event"] == "image"]
    with Image.open(path) as image:
        assert image.size == (96, 80)
        parameters = image.text["parameters"]  # type: ignore[attr-defined]
    assert "SD upscale overlap: 16" in parameters and "SD upscale upscaler: Lanczos" in parameters
    assert "Size: 64x64" in parameters  # the tiles' size, as A1111 writes it
    code, events = run_cli(capsys, *common, "--sd-upscale-overlap", "8")
    assert code == 1 and "need --sd-upscale" in events[-1]["message"]
    code, events = run_cli(capsys, *common, "--sd-upscale", "2")
    assert code == 1 and "--init-image" in events[-1]["message"]
