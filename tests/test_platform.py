"""Data locations, device choice and the engine's independence from Qt."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sdstudio.engine.devices import choose_device
from sdstudio.engine.errors import DeviceError
from sdstudio.engine.paths import AppPaths


def test_sdstudio_home_moves_every_location(tmp_path: Path) -> None:
    paths = AppPaths.default({"SDSTUDIO_HOME": str(tmp_path)})
    for folder in (
        paths.config_dir,
        paths.data_dir,
        paths.cache_dir,
        paths.log_dir,
        paths.outputs_dir,
        paths.models_dir,
        paths.inputs_dir,
        paths.history_db,
        paths.settings_file,
    ):
        assert folder.is_relative_to(tmp_path)


def test_default_locations_are_per_user_and_outputs_visible() -> None:
    paths = AppPaths.default({})
    assert paths.outputs_dir.name == "sdstudio"
    assert "sdstudio" in str(paths.data_dir)
    assert not paths.outputs_dir.name.startswith(".")


def test_cpu_is_chosen_here_in_float32() -> None:
    config = choose_device()
    assert (config.device, config.precision, config.attention_slicing) == ("cpu", "float32", False)
    import torch

    assert choose_device("cpu", "bfloat16").dtype is torch.bfloat16


def test_unavailable_or_unknown_devices_are_refused() -> None:
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU is available"):
            choose_device("cuda")
    with pytest.raises(DeviceError, match="Unknown device 'tpu'"):
        choose_device("tpu")
    with pytest.raises(DeviceError, match="Unknown precision"):
        choose_device("cpu", "float8")


ENGINE_MODULES = [
    "sdstudio.engine",
    "sdstudio.engine.request",
    "sdstudio.engine.samplers",
    "sdstudio.engine.devices",
    "sdstudio.engine.paths",
    "sdstudio.engine.images",
    "sdstudio.engine.fileio",
    "sdstudio.engine.hashing",
    "sdstudio.engine.previews",
    "sdstudio.engine.pipelines",
    "sdstudio.engine.generation",
    "sdstudio.engine.outputs",
    "sdstudio.engine.metadata",
    "sdstudio.cli",
]


def _modules_after_import(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint('\\n'.join(sys.modules))"
    output = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    return set(output.split())


def test_engine_never_imports_qt() -> None:
    loaded = _modules_after_import("\n".join(f"import {m}" for m in ENGINE_MODULES))
    assert not {m for m in loaded if m.split(".")[0] in ("PySide6", "shiboken6", "PyQt5", "PyQt6")}


def test_engine_package_import_is_cheap() -> None:
    loaded = _modules_after_import("import sdstudio.engine, sdstudio.engine.request")
    assert "torch" not in loaded
    assert "diffusers" not in loaded


def test_no_engine_source_mentions_qt() -> None:
    engine = Path(__file__).parents[1] / "sdstudio" / "engine"
    for source in engine.rglob("*.py"):
        text = source.read_text("utf-8")
        assert "PySide6" not in text and "PyQt" not in text, source


def test_shipped_resources_are_found() -> None:
    from sdstudio.resource_files import resource_path

    icon = resource_path("sdstudio.svg")
    assert icon.is_file()
    assert icon.read_text("utf-8").startswith("<svg")


def test_every_package_is_listed_for_installation() -> None:
    import tomllib

    root = Path(__file__).parents[1]
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "sdstudio").rglob("__init__.py")
    }
    assert found | {"sdstudio.resources"} == listed
