"""Build the one-folder sdstudio app with PyInstaller, check it, and archive it.

``python packaging/build.py`` builds ``dist/sdstudio/`` (``dist/sdstudio.app``
on macOS) from ``packaging/sdstudio.spec``, runs the built app's
``--self-test`` (a window offscreen and one generation with a tiny model), and
on Linux packs ``dist/sdstudio-<version>-linux-<arch>.tar.gz`` with the
desktop entry and icons. Install the tool first: ``pip install -e ".[packaging]"``.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "packaging" / "sdstudio.spec"
BUILD_DIR = ROOT / "build" / "pyinstaller"
DIST_DIR = ROOT / "dist"
APP_NAME = "sdstudio"
DESKTOP_ID = "io.github.sdstudio.SdStudio"

INSTALL_TEXT = """\
sdstudio {version} for Linux ({arch})

Install
-------
Unpack the archive anywhere (it holds one folder, {name}/),
for example in ~/Applications, and go into it:

    mkdir -p ~/Applications
    tar -xzf {name}.tar.gz -C ~/Applications
    cd ~/Applications/{name}

Run the app:

    ./sdstudio/sdstudio

Add it to the applications menu (and let file managers open images with
it), once:

    ./sdstudio/sdstudio --install-desktop-entry

This writes the desktop entry {desktop_id}.desktop, its icons and
metainfo under ~/.local/share (or $XDG_DATA_HOME), pointing at this copy of
sdstudio; run it again after moving the folder. The desktop/ and icons/
folders here hold the same entry and icons, for packagers.

The command line is ./sdstudio/sdstudio-cli (try --help). The app's
`./sdstudio/sdstudio --self-test` checks that it works: it generates a tiny
test image offscreen, prints a JSON summary and exits with status 0.

Uninstall
---------
    ./sdstudio/sdstudio --uninstall-desktop-entry
    rm -r ~/Applications/{name}

Images, history and settings stay in ~/Pictures/sdstudio,
~/.local/share/sdstudio and ~/.config/sdstudio; delete those too to remove
everything.
"""


def read_version(root: Path = ROOT) -> str:
    """``sdstudio.__version__``, read from the source without importing anything."""
    tree = ast.parse((root / "sdstudio" / "__init__.py").read_text("utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__version__" for target in node.targets
        ):
            return str(ast.literal_eval(node.value))
    raise SystemExit("sdstudio/__init__.py has no __version__")


def machine_name() -> str:
    """The CPU architecture as archive names spell it (``x86_64``, ``aarch64``)."""
    arch = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def require_pyinstaller() -> None:
    """Stop with the install command if PyInstaller is missing."""
    if importlib.util.find_spec("PyInstaller") is None:
        raise SystemExit(
            "PyInstaller is not installed. Install it with:\n"
            f'    {Path(sys.executable).name} -m pip install -e ".[packaging]"\n'
            "(or: pip install 'pyinstaller>=6.10')"
        )


def run_pyinstaller() -> None:
    """Build ``dist/sdstudio`` from the spec, replacing an earlier build."""
    command = [
        sys.executable,
        "-m",
        "PyInstaller",
        "--noconfirm",
        "--clean",
        "--workpath",
        str(BUILD_DIR),
        "--distpath",
        str(DIST_DIR),
        str(SPEC),
    ]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def executable(dist: Path = DIST_DIR) -> Path:
    """The built app's executable."""
    if sys.platform == "darwin":
        return dist / f"{APP_NAME}.app" / "Contents" / "MacOS" / APP_NAME
    suffix = ".exe" if sys.platform == "win32" else ""
    return dist / APP_NAME / f"{APP_NAME}{suffix}"


def self_test(exe: Path) -> None:
    """Run the built app's ``--self-test`` offscreen and offline; fail unless it exits 0."""
    with tempfile.TemporaryDirectory(prefix="sdstudio-build-") as home:
        env = {
            **os.environ,
            "QT_QPA_PLATFORM": "offscreen",
            "SDSTUDIO_HOME": home,
            "HF_HUB_OFFLINE": "1",
        }
        print(f"+ {exe} --self-test", flush=True)
        started = time.perf_counter()
        result = subprocess.run(
            [str(exe), "--self-test"], env=env, capture_output=True, text=True, timeout=900
        )
    print(result.stdout.strip())
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-6000:])
        raise SystemExit(f"SELF-TEST FAILED: {exe} --self-test exited with {result.returncode}")
    print(f"self-test passed in {time.perf_counter() - started:.1f} s")


def folder_size(folder: Path) -> int:
    """Bytes in all files under ``folder`` (links not followed)."""
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def make_archive(app_folder: Path, resources: Path, out_dir: Path, version: str, arch: str) -> Path:
    """Pack the app folder, the desktop entry, the icons and INSTALL.txt as a .tar.gz.

    Members: ``sdstudio/…`` (the app), ``desktop/…`` and ``icons/…`` when
    ``resources`` has them, and ``INSTALL.txt``; all under one top folder
    named like the archive.
    """
    name = f"{APP_NAME}-{version}-linux-{arch}"
    archive = out_dir / f"{name}.tar.gz"
    text = INSTALL_TEXT.format(version=version, arch=arch, name=name, desktop_id=DESKTOP_ID)
    with tempfile.TemporaryDirectory() as tmp:
        install = Path(tmp) / "INSTALL.txt"
        install.write_text(text, "utf-8")
        partial = archive.with_suffix(".partial")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(app_folder, arcname=f"{name}/{APP_NAME}")
            for extra in ("desktop", "icons"):
                if (resources / extra).is_dir():
                    tar.add(resources / extra, arcname=f"{name}/{extra}")
            tar.add(install, arcname=f"{name}/INSTALL.txt")
        partial.replace(archive)
    return archive


def megabytes(size: int) -> str:
    """A byte count in MB, as people read folder sizes."""
    return f"{size / 1_000_000:,.0f} MB"


def main(argv: list[str] | None = None) -> int:
    """Build, self-test and archive; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-self-test", action="store_true", help="do not run the built app")
    parser.add_argument("--no-archive", action="store_true", help="do not make the .tar.gz")
    args = parser.parse_args(argv)

    require_pyinstaller()
    version = read_version()
    started = time.perf_counter()
    run_pyinstaller()
    build_seconds = time.perf_counter() - started
    exe = executable()
    if not exe.is_file():
        raise SystemExit(f"PyInstaller finished but {exe} is missing")
    app_folder = DIST_DIR / (f"{APP_NAME}.app" if sys.platform == "darwin" else APP_NAME)
    size = megabytes(folder_size(app_folder))
    print(f"built {app_folder} in {build_seconds / 60:.1f} min, {size}")

    if not args.skip_self_test:
        self_test(exe)
    if sys.platform.startswith("linux") and not args.no_archive:
        archive = make_archive(app_folder, ROOT / "resources", DIST_DIR, version, machine_name())
        print(f"archive {archive}: {megabytes(archive.stat().st_size)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
