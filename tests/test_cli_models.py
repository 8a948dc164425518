"""``sdstudio-cli models``: list, add-folder, remove-folder (download: test_models_download.py)."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from sdstudio.cli import models
from sdstudio.cli.report import Reporter
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.settings import load_settings


def run(*argv: str) -> tuple[int, str, str]:
    """Run ``models ARGV`` with fresh settings and return (status, stdout, stderr)."""
    parser = argparse.ArgumentParser()
    models.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", *argv])
    paths = AppPaths.default()
    out, err = io.StringIO(), io.StringIO()
    context = SimpleNamespace(
        paths=paths,
        settings=load_settings(paths),
        reporter=Reporter(getattr(args, "json", False), out, err),
    )
    status = models.run(args, context)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def private_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Listing never looks at the real Hugging Face cache."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture
def a1111(tmp_path: Path) -> Path:
    """An AUTOMATIC1111 root with one checkpoint."""
    import torch
    from safetensors.torch import save_file

    root = tmp_path / "webui"
    (root / "models/Stable-diffusion").mkdir(parents=True)
    save_file({"w": torch.zeros(1)}, str(root / "models/Stable-diffusion/sd-turbo.safetensors"))
    (root / "models/Stable-diffusion/bad.safetensors").write_bytes(b"junk")
    return root


def test_add_list_and_remove_a_folder(a1111: Path) -> None:
    status, out, _ = run("list")
    assert status == 0 and "No models found" in out

    status, out, _ = run("add-folder", str(a1111), "--json")
    assert status == 0
    assert json.loads(out) == {"event": "done", "folders": [str(a1111.resolve())]}
    assert load_settings(AppPaths.default()).model_folders == (str(a1111.resolve()),)

    status, out, err = run("list")
    assert status == 0
    assert "sd-turbo" in out and "a1111" in out and "few-step" in out and "safetensors" in out
    assert "skipped" in err and "bad.safetensors" in err

    status, out, _ = run("list", "--json")
    entries = [json.loads(line) for line in out.splitlines() if line.startswith('{"event"')]
    listing = json.loads(out[out.index("[") :])
    assert entries[0]["event"] == "skipped"
    assert [(e["name"], e["kind"], e["format"], e["source"]) for e in listing] == [
        ("sd-turbo", "checkpoint", "safetensors", "a1111")
    ]
    assert {"family", "family_label", "size_bytes", "path", "flags"} <= listing[0].keys()

    status, out, _ = run("remove-folder", str(a1111))
    assert status == 0 and "(none)" in out
    assert load_settings(AppPaths.default()).model_folders == ()


def test_folder_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="does not exist"):
        run("add-folder", str(tmp_path / "missing"))
    with pytest.raises(InvalidRequest, match="not one of the model folders"):
        run("remove-folder", str(tmp_path))
