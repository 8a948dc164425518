"""``sdstudio-cli`` with a Flux.1 diffusers folder: listed with its family, one step
event per step, re-run pixel for pixel, Forge's Distilled CFG Scale written."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_cli import images_of, run_cli
from tests.test_cli_models import run as run_models


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdstudio.testing.tiny_flow import save_tiny_flux

    return save_tiny_flux(tmp_path_factory.mktemp("m") / "tiny-flux-dev", guidance_embeds=True)


def test_generate_lists_and_reruns_a_flux_model(
    capsys, flux_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    root = tmp_path / "models"
    shutil.copytree(flux_folder, root / "tiny-flux-dev")
    status, _, _ = run_models("add-folder", str(root))
    assert status == 0
    status, out, _ = run_models("list", "--json")
    listing = json.loads(out[out.index("[") :])
    assert [(e["name"], e["family"], e["variant"], e["family_label"]) for e in listing] == [
        ("tiny-flux-dev", "flux1", "dev", "Flux.1 dev")
    ]
    code, events, err = run_cli(
        capsys,
        "generate",
        "--model",
        "tiny-flux-dev",
        "--prompt",
        "a lighthouse",
        "--steps",
        "3",
        "--width",
        "64",
        "--height",
        "64",
        "--seed",
        "5",
        "--distilled-cfg",
        "2.5",
        "--out",
        str(tmp_path / "out"),
        "--json",
    )
    assert code == 0, err
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3]
    [path] = images_of(events)
    with Image.open(path) as image:
        parameters = image.text["parameters"]
        first = np.asarray(image.convert("RGB"))
    assert "Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 2.5" in (
        parameters
    )
    code, events, err = run_cli(capsys, "rerun", path, "--out", str(tmp_path / "again"), "--json")
    assert code == 0, err
    [again] = images_of(events)
    with Image.open(again) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), first)
