"""The locked dependency set: refresh ``requirements.lock``, or check an install against it.

    python tools/lock.py              # re-resolve, keeping the pinned versions that still fit
    python tools/lock.py --upgrade    # re-resolve to the newest versions pyproject.toml allows
    python tools/lock.py --check      # exit 1, saying what differs, unless the installed
                                      # packages are exactly the locked ones

The lock pins every package sdstudio, its test tools and its build tool need, for Linux,
Windows and macOS and every Python sdstudio supports (uv's universal
resolution writes environment markers where they differ). It leaves out the
CUDA runtime that PyPI's Linux torch pulls in (``nvidia-*``, ``cuda-*``,
``triton``): the torch build chosen for the hardware brings its own, pinned
by torch itself, and the CPU and Apple builds need none.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
TORCH = "torch==2.14.1"
"""The torch the tests run with; the README's install commands name the same version."""
TORCHVISION = "torchvision==0.29.1"
"""The torchvision built for that torch: installed with it, from the same index."""
PYTHON = "3.11"
"""The oldest Python sdstudio supports: the resolution holds from it on."""
REFRESH_COMMAND = "python tools/lock.py"
INSTALL_COMMAND = 'python -m pip install -c requirements.lock -e ".[dev]"'
_GPU_RUNTIME = re.compile(r"^(nvidia-|cuda-|triton$)")


@dataclass(frozen=True, slots=True)
class Pin:
    """One locked package: its name, version and the environments it is for."""

    name: str
    version: str
    marker: str = ""


def normalize(name: str) -> str:
    """A package name in PEP 503 form (``PySide6_Essentials`` → ``pyside6-essentials``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(text: str) -> list[Pin]:
    """The pins of a lock in requirements format (comments and options skipped)."""
    pins = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement, _, marker = line.partition(";")
        name, sep, version = requirement.strip().partition("==")
        if not sep:
            raise ValueError(f"not a pinned requirement in the lock: {raw.strip()!r}")
        pins.append(Pin(normalize(name), version.strip(), marker.strip()))
    return pins


def pins_for_this_environment(pins: list[Pin]) -> dict[str, Pin]:
    """The pins whose markers hold here, by name."""
    from packaging.markers import Marker

    return {pin.name: pin for pin in pins if not pin.marker or Marker(pin.marker).evaluate()}


def installed_version(name: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def needed(root: str = "sdstudio", extras: tuple[str, ...] = ("dev",)) -> set[str]:
    """The installed distributions ``root[extras]`` needs, followed through their requirements."""
    from packaging.requirements import Requirement

    found: set[str] = set()
    stack = [(root, set(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while stack:
        name, wanted_extras = stack.pop()
        key = (normalize(name), frozenset(wanted_extras))
        if key in seen:
            continue
        seen.add(key)
        found.add(key[0])
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requirements:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker and not any(marker.evaluate({"extra": e}) for e in wanted_extras | {""}):
                continue
            stack.append((requirement.name, set(requirement.extras)))
    return found


def differences(
    pins: list[Pin],
    installed: dict[str, str | None] | None = None,
    required: set[str] | None = None,
) -> list[str]:
    """What differs between the install and the lock, one sentence each.

    Every locked package that is installed must have its locked version; one
    that is ``required`` (by default: what ``sdstudio[dev]`` needs) must be
    installed. A local version label (``2.14.1+cpu``) matches its public
    version: it names the build (CPU, CUDA), not another release.
    """
    wanted = pins_for_this_environment(pins)
    required = needed() if required is None else required
    problems = []
    for name, pin in sorted(wanted.items()):
        found = installed.get(name) if installed is not None else installed_version(name)
        if found is None:
            if name in required:
                problems.append(f"{name} {pin.version} is locked but not installed")
        elif found.split("+", 1)[0] != pin.version:
            problems.append(f"{name} {found} is installed but the lock says {pin.version}")
    return problems


def stale_requirements(pins: list[Pin], pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """Requirements of pyproject.toml (with its extras) that the lock does not satisfy."""
    from packaging.requirements import Requirement

    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"].values()
    wanted = [*project["dependencies"], *(r for extra in extras for r in extra), TORCH, TORCHVISION]
    locked: dict[str, list[str]] = {}
    for pin in pins:
        locked.setdefault(pin.name, []).append(pin.version)
    problems = []
    for text in wanted:
        requirement = Requirement(text)
        versions = locked.get(normalize(requirement.name))
        if not versions:
            problems.append(f"{requirement.name} is required but not in the lock")
            continue
        for version in versions:
            if not requirement.specifier.contains(version, prereleases=True):
                problems.append(f"the lock's {requirement.name} {version} is outside {text!r}")
    return problems


def check() -> int:
    """Compare the install and pyproject.toml with the lock; print what differs."""
    pins = read_lock(LOCK.read_text(encoding="utf-8"))
    stale = stale_requirements(pins)
    wrong = differences(pins)
    for problem in stale:
        print(f"requirements.lock is out of date: {problem}. Refresh it: {REFRESH_COMMAND}")
    for problem in wrong:
        print(f"{problem}. Install the locked set: {INSTALL_COMMAND}")
    if stale or wrong:
        return 1
    print(f"The installed packages match requirements.lock ({len(pins)} pins).")
    return 0


def without_gpu_runtime(text: str) -> str:
    """The lock text without the CUDA runtime packages and their ``# via`` lines."""
    kept: list[str] = []
    skipping = False
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            skipping = bool(_GPU_RUNTIME.match(normalize(line.split("==", 1)[0])))
        elif line.startswith("#") or not line:
            skipping = False
        if not skipping:
            kept.append(line)
    return "\n".join(kept) + "\n"


def refresh(upgrade: bool) -> int:
    """Re-resolve the lock with uv (``pip install uv`` if it is missing)."""
    uv = shutil.which("uv")
    command = [uv] if uv else [sys.executable, "-m", "uv"]
    with tempfile.TemporaryDirectory() as folder:
        constraints = Path(folder) / "torch.txt"
        constraints.write_text(f"{TORCH}\n{TORCHVISION}\n", encoding="utf-8")
        output = Path(folder) / "requirements.lock"
        if LOCK.exists() and not upgrade:
            shutil.copyfile(LOCK, output)  # uv keeps the pins of an existing output
        arguments = [
            *command, "pip", "compile", str(ROOT / "pyproject.toml"), "--all-extras",
            "--universal", "--python-version", PYTHON, "--constraint", str(constraints),
            "--custom-compile-command", REFRESH_COMMAND, "--quiet", "--output-file", str(output),
        ]  # fmt: skip
        if upgrade:
            arguments.append("--upgrade")
        try:
            subprocess.run(arguments, check=True, cwd=ROOT)
        except FileNotFoundError:
            print("uv is needed to resolve the lock: python -m pip install uv")
            return 1
        except subprocess.CalledProcessError as error:
            return error.returncode or 1
        text = output.read_text(encoding="utf-8")
        text = text.replace(f"-c {constraints}", "the tested torch (tools/lock.py)")
    LOCK.write_text(without_gpu_runtime(text), encoding="utf-8")
    print(f"Wrote {LOCK.relative_to(ROOT)}; install it with: {INSTALL_COMMAND}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Refresh or check the lock."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="compare the install with the lock")
    group.add_argument("--upgrade", action="store_true", help="take the newest allowed versions")
    args = parser.parse_args(argv)
    return check() if args.check else refresh(args.upgrade)


if __name__ == "__main__":
    sys.exit(main())
