"""The locked dependency set: the install is what the lock pins; the lock fits pyproject."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def lock() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock_tool", ROOT / "tools" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["lock_tool"] = module
    spec.loader.exec_module(module)
    return module


def test_installed_packages_are_the_locked_ones(lock: ModuleType) -> None:
    pins = lock.read_lock(lock.LOCK.read_text(encoding="utf-8"))
    problems = lock.differences(pins)
    assert not problems, (
        "The installed packages differ from requirements.lock:\n  "
        + "\n  ".join(problems)
        + f"\nInstall the locked set: {lock.INSTALL_COMMAND}"
    )


def test_the_lock_satisfies_pyproject(lock: ModuleType) -> None:
    pins = lock.read_lock(lock.LOCK.read_text(encoding="utf-8"))
    problems = lock.stale_requirements(pins)
    assert not problems, f"Refresh the lock ({lock.REFRESH_COMMAND}): {problems}"


def test_differences_name_each_wrong_or_missing_package(lock: ModuleType) -> None:
    pins = lock.read_lock(
        "torch==2.13.0\n"
        "    # via sdstudio\n"
        "Pillow==13.0.0\n"
        "colorama==0.4.6 ; sys_platform == 'never'\n"
        "pytest==9.2.0\n"
        "pyinstaller==6.22.3\n"
    )
    assert [p.name for p in pins] == ["torch", "pillow", "colorama", "pytest", "pyinstaller"]
    found = {"torch": "2.13.0+cpu", "pillow": "12.0.0", "pytest": None, "pyinstaller": None}
    required = {"torch", "pillow", "pytest"}
    assert lock.differences(pins, found, required) == [
        "pillow 12.0.0 is installed but the lock says 13.0.0",
        "pytest 9.2.0 is locked but not installed",
    ]


def test_what_sdstudio_needs_is_followed_through_requirements(lock: ModuleType) -> None:
    needed = lock.needed()
    assert {"diffusers", "transformers", "tokenizers", "pytest", "pluggy"} <= needed
    assert "pyinstaller" not in needed
    assert "pytest" not in lock.needed(extras=())


def test_a_line_that_is_not_a_pin_is_refused(lock: ModuleType) -> None:
    with pytest.raises(ValueError, match="not a pinned requirement"):
        lock.read_lock("torch>=2.4\n")


def test_a_lock_outside_pyproject_ranges_is_stale(lock: ModuleType, tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\ndependencies = ["transformers>=4.46,<5.24", "pillow>=10"]\n'
        '[project.optional-dependencies]\ndev = ["pytest>=8"]\n',
        encoding="utf-8",
    )
    pins = lock.read_lock(
        "transformers==5.24.0\npytest==9.2.0\ntorch==2.14.1\ntorchvision==0.29.1\n"
    )
    problems = lock.stale_requirements(pins, pyproject)
    assert problems == [
        "the lock's transformers 5.24.0 is outside 'transformers>=4.46,<5.24'",
        "pillow is required but not in the lock",
    ]


def test_the_gpu_runtime_is_left_to_the_torch_build(lock: ModuleType) -> None:
    text = (
        "# header\n"
        "nvidia-cudnn-cu13==9.20.0.48 ; sys_platform == 'linux'\n"
        "    # via torch\n"
        "pillow==13.0.0\n"
        "    # via sdstudio (pyproject.toml)\n"
        "triton==3.7.1 ; sys_platform == 'linux'\n"
        "    # via torch\n"
        "cuda-toolkit==13.0.3.0\n"
        "torch==2.13.0\n"
    )
    assert lock.without_gpu_runtime(text) == (
        "# header\npillow==13.0.0\n    # via sdstudio (pyproject.toml)\ntorch==2.13.0\n"
    )
    locked = lock.LOCK.read_text(encoding="utf-8")
    assert not re.search(r"^(nvidia-|cuda-|triton)", locked, re.MULTILINE)


def test_the_readme_installs_the_locked_torch_and_the_lock(lock: ModuleType) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    torch_commands = re.findall(r"pip install[^\n`]*\btorch==[^\n`]*", readme)
    assert torch_commands, "the README names no torch version to install"
    for command in torch_commands:
        assert lock.TORCH in command, command
        assert lock.TORCHVISION in command, f"torchvision must come from torch's index: {command}"
    assert lock.INSTALL_COMMAND in readme
    locked = lock.LOCK.read_text(encoding="utf-8").splitlines()
    assert lock.TORCH in locked
    assert lock.TORCHVISION in locked


def test_torch_floor_excludes_the_bypassable_weights_only_loader() -> None:
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    torch = next(Requirement(r) for r in project["dependencies"] if r.startswith("torch"))
    assert not torch.specifier.contains("2.5.1"), "torch before 2.6 lets pickles run code"
    assert torch.specifier.contains("2.6.0")
