"""ControlNet from the command line, end to end: a ControlNet file in an A1111
``models/ControlNet`` folder guides ``generate --control``, its ``ControlNet 0`` entry reads
back in A1111's format, ``rerun`` reproduces the pixels, weight 0 gives the unguided image,
and two units work together."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdstudio.cli import main
from sdstudio.engine.metadata.a1111 import split_parameters
from sdstudio.engine.metadata.control_names import read_units
from sdstudio.testing.tiny_control import save_tiny_controlnet


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict]]:
    code = main(list(args))
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture
def webui(tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """An A1111 root whose models/ControlNet holds a tiny SD 1.x ControlNet."""
    root = tmp_path / "webui"
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    # A diffusers folder: a tiny ControlNet's widths are no released family's, which a
    # single file needs to be configured (tests/test_control.py loads single files).
    save_tiny_controlnet(tiny_model, root / "models" / "ControlNet" / "control_tiny_canny")
    assert run_cli(capsys, "models", "add-folder", str(root), "--json")[0] == 0
    return root


@pytest.fixture
def drawing(tmp_path: Path) -> Path:
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).rectangle((12, 16, 50, 48), outline="black", width=3)
    path = tmp_path / "drawing.png"
    image.save(path)
    return path


def generate(capsys, model: Path, out: Path, *extra: str) -> tuple[int, list[dict]]:
    return run_cli(
        capsys, "generate", "--model", str(model), "--prompt", "a house", "--steps", "3",
        "--width", "64", "--height", "64", "--seed", "21", "--out", str(out), "--json", *extra,
    )  # fmt: skip


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_a_controlnet_from_an_a1111_folder_guides_records_and_reruns(
    capsys, webui: Path, tiny_model: Path, drawing: Path, tmp_path: Path
) -> None:
    spec = f"model=control_tiny_canny,image={drawing},preprocessor=canny,weight=1"
    code, events = generate(capsys, tiny_model, tmp_path / "a", "--control", spec)
    assert code == 0, events
    (guided,) = [e for e in events if e["event"] == "image"]
    with Image.open(guided["path"]) as image:
        parameters = image.text["parameters"]  # type: ignore[attr-defined]
    settings = split_parameters(parameters).settings
    entry = settings["ControlNet 0"]
    assert entry.startswith("Module: canny, Model: control_tiny_canny, Weight: 1.0, ")
    assert "Threshold A: 100.0, Threshold B: 200.0" in entry  # canny's defaults, written
    (unit,) = read_units({k.casefold(): v for k, v in settings.items()})
    assert unit.problem == "" and unit.unit("x.png").preprocessor == "canny"
    # rerun from the history reproduces the pixels.
    code, events = run_cli(
        capsys, "rerun", str(guided["id"]), "--out", str(tmp_path / "b"), "--json"
    )
    assert code == 0, events
    (again,) = [e["path"] for e in events if e["event"] == "image"]
    assert np.array_equal(pixels(again), pixels(guided["path"]))
    # Weight 0 is the unguided image; weight 1 is not.
    code, events = generate(capsys, tiny_model, tmp_path / "c")
    (plain,) = [e["path"] for e in events if e["event"] == "image"]
    code, events = generate(
        capsys, tiny_model, tmp_path / "d", "--control", spec.replace("weight=1", "weight=0")
    )
    (zero,) = [e["path"] for e in events if e["event"] == "image"]
    assert np.array_equal(pixels(zero), pixels(plain))
    assert not np.array_equal(pixels(guided["path"]), pixels(plain))


def test_two_units_guide_one_image(
    capsys, webui: Path, tiny_model: Path, drawing: Path, tmp_path: Path
) -> None:
    first = f"model=control_tiny_canny,image={drawing},preprocessor=canny,weight=0.7,end=0.6"
    second = f"model=control_tiny_canny,image={drawing},preprocessor=invert,weight=0.5,start=0.3"
    code, events = generate(
        capsys, tiny_model, tmp_path / "two", "--control", first, "--control", second
    )
    assert code == 0, events
    (path,) = [e["path"] for e in events if e["event"] == "image"]
    with Image.open(path) as image:
        settings = split_parameters(image.text["parameters"]).settings  # type: ignore[attr-defined]
    assert "ControlNet 0" in settings and "ControlNet 1" in settings
    assert "Module: invert" in settings["ControlNet 1"]


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_every_image_of_a_batch_uses_its_own_sampler(
    capsys, webui: Path, tiny_model: Path, drawing: Path, tmp_path: Path
) -> None:
    """A seeded sampler (its noise drawn from each image's seed) under a ControlNet of
    weight 0 gives each image of a batch exactly as without the ControlNet."""
    extra = ("--batch", "2", "--sampler", "DPM++ SDE", "--schedule", "Karras")
    spec = f"model=control_tiny_canny,image={drawing},preprocessor=canny,weight=0"
    code, events = generate(capsys, tiny_model, tmp_path / "p", *extra)
    plain = [e["path"] for e in events if e["event"] == "image"]
    code, events = generate(capsys, tiny_model, tmp_path / "z", *extra, "--control", spec)
    assert code == 0, events
    zero = [e["path"] for e in events if e["event"] == "image"]
    assert len(plain) == len(zero) == 2
    for a, b in zip(plain, zero, strict=True):
        assert np.array_equal(pixels(a), pixels(b))


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_two_units_and_an_image_prompt_guide_one_image_and_rerun(
    capsys, webui: Path, tiny_model: Path, drawing: Path, tmp_path: Path
) -> None:
    """A1111 keeps IP-Adapters beside its ControlNets and their encoders in the
    extension's annotator downloads; all three guide one image, which re-runs exactly."""
    from sdstudio.testing.tiny_ip_adapter import save_tiny_encoder, save_tiny_ip_adapter

    save_tiny_ip_adapter(
        tiny_model, webui / "models" / "ControlNet" / "ip-adapter_tiny.safetensors"
    )
    downloads = webui / "extensions" / "sd-webui-controlnet" / "annotator" / "downloads"
    save_tiny_encoder(downloads / "clip_vision" / "clip_h.safetensors")
    reference = tmp_path / "reference.png"
    Image.new("RGB", (48, 40), (200, 40, 30)).save(reference)
    units = (
        "--control", f"model=control_tiny_canny,image={drawing},preprocessor=canny,weight=0.7",
        "--control", f"model=control_tiny_canny,image={drawing},preprocessor=invert,weight=0.5",
    )  # fmt: skip
    prompt = f"model=ip-adapter_tiny,image={reference},weight=0.8,start=0.2"
    code, events = generate(capsys, tiny_model, tmp_path / "b", *units)
    (controlled,) = [e["path"] for e in events if e["event"] == "image"]
    code, events = generate(capsys, tiny_model, tmp_path / "a", *units, "--ip-adapter", prompt)
    assert code == 0, events
    (made,) = [e for e in events if e["event"] == "image"]
    assert not np.array_equal(pixels(made["path"]), pixels(controlled))
    with Image.open(made["path"]) as image:
        settings = split_parameters(image.text["parameters"]).settings  # type: ignore[attr-defined]
    assert "Module: canny" in settings["ControlNet 0"]
    assert "Module: invert" in settings["ControlNet 1"]
    assert settings["ControlNet 2"].startswith("Module: ip-adapter")
    assert "Model: ip-adapter_tiny [" in settings["ControlNet 2"]
    assert "Weight: 0.8" in settings["ControlNet 2"]
    assert "Guidance Start: 0.2" in settings["ControlNet 2"]
    code, events = run_cli(capsys, "rerun", str(made["id"]), "--out", str(tmp_path / "c"), "--json")
    assert code == 0, events
    (again,) = [e["path"] for e in events if e["event"] == "image"]
    assert np.array_equal(pixels(again), pixels(made["path"]))
