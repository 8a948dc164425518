"""The PyInstaller build: spec and build script checks, and (marked) a real build."""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

import sdstudio

ROOT = Path(__file__).parents[1]
SPEC = ROOT / "packaging" / "sdstudio.spec"


def _load_script(name: str) -> ModuleType:
    """``packaging/<name>.py`` loaded as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"packaging_{name}", ROOT / "packaging" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def build() -> ModuleType:
    """``packaging/build.py`` as a module."""
    return _load_script("build")


def _spec_function(name: str) -> dict[str, object]:
    """Run one function definition of the spec (with its ROOT) without running PyInstaller."""
    tree = ast.parse(SPEC.read_text("utf-8"))
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace: dict[str, object] = {"ROOT": ROOT, "ast": ast}
    exec(compile(ast.Module([function], type_ignores=[]), str(SPEC), "exec"), namespace)
    return namespace


def test_spec_reads_the_package_version_without_importing_it() -> None:
    read_version = _spec_function("read_version")["read_version"]
    assert read_version() == sdstudio.__version__  # type: ignore[operator]


def _spec_calls(name: str) -> list[dict[str, object]]:
    """The literal keyword arguments of each call to ``name`` in the spec."""
    calls = []
    for node in ast.walk(ast.parse(SPEC.read_text("utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name:
            keywords = {}
            for keyword in node.keywords:
                with contextlib.suppress(ValueError):
                    keywords[keyword.arg] = ast.literal_eval(keyword.value)
            calls.append(keywords)
    return calls


def test_spec_builds_a_windowed_app_and_the_cli_in_one_folder() -> None:
    programs = {call["name"]: call for call in _spec_calls("EXE")}
    assert programs.keys() == {"sdstudio", "sdstudio-cli"}
    assert programs["sdstudio"]["console"] is False
    assert programs["sdstudio-cli"]["console"] is True
    assert all(call["exclude_binaries"] is True for call in programs.values())
    assert [call["name"] for call in _spec_calls("COLLECT")] == ["sdstudio"]
    assert [call["name"] for call in _spec_calls("BUNDLE")] == ["sdstudio.app"]
    text = SPEC.read_text("utf-8")
    assert '"sdstudio/resources"' in text
    assert 'BUNDLE_ID = "io.github.sdstudio.SdStudio"' in text
    assert '"packaging" / "launcher.py"' in text


@pytest.mark.slow
def test_spec_keeps_every_module_sdstudio_imports() -> None:
    """An excluded module that sdstudio imports builds fine and then fails at start."""
    tree = ast.parse(SPEC.read_text("utf-8"))
    excludes = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "excludes" for t in node.targets)
    )
    imported = set()
    for source in (ROOT / "sdstudio").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert "PySide6.QtNetwork" in imported
    clashes = {
        name
        for name in imported
        for excluded in excludes
        if name == excluded or name.startswith(excluded + ".")
    }
    assert not clashes


@pytest.mark.parametrize(
    ("program", "expected"), [("/opt/sdstudio/sdstudio-cli", "cli"), ("sdstudio.exe", "app")]
)
def test_launcher_runs_the_cli_or_the_app_by_program_name(
    program: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sdstudio.app
    import sdstudio.cli

    monkeypatch.setattr(sdstudio.cli, "main", lambda: "cli")
    monkeypatch.setattr(sdstudio.app, "main", lambda: "app")
    monkeypatch.setattr(sys, "argv", [program])
    assert _load_script("launcher").main() == expected


def test_build_script_reads_the_same_version(build: ModuleType) -> None:
    assert build.read_version() == sdstudio.__version__


def test_missing_pyinstaller_says_how_to_install_it(
    build: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match=r'pip install -e "\.\[packaging\]"'):
        build.require_pyinstaller()


def _fake_build(tmp_path: Path) -> tuple[Path, Path]:
    app = tmp_path / "dist" / "sdstudio"
    (app / "_internal").mkdir(parents=True)
    exe = app / "sdstudio"
    exe.write_bytes(b"\x7fELF")
    exe.chmod(0o755)
    if sys.platform != "win32":  # links need extra rights on Windows
        (app / "sdstudio-cli").symlink_to("sdstudio")
    (app / "_internal" / "base_library.zip").write_bytes(b"zip")
    resources = tmp_path / "resources"
    (resources / "desktop").mkdir(parents=True)
    (resources / "desktop" / "io.github.sdstudio.SdStudio.desktop").write_text("[Desktop Entry]\n")
    icon_dir = resources / "icons" / "hicolor" / "48x48" / "apps"
    icon_dir.mkdir(parents=True)
    (icon_dir / "io.github.sdstudio.SdStudio.png").write_bytes(b"png")
    return app, resources


def test_archive_holds_the_app_desktop_entry_icons_and_instructions(
    build: ModuleType, tmp_path: Path
) -> None:
    app, resources = _fake_build(tmp_path)
    archive = build.make_archive(app, resources, tmp_path / "dist", "1.2.3", "x86_64")
    assert archive.name == "sdstudio-1.2.3-linux-x86_64.tar.gz"
    top = "sdstudio-1.2.3-linux-x86_64"
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        install = tar.extractfile(f"{top}/INSTALL.txt").read().decode("utf-8")  # type: ignore[union-attr]
    assert {
        f"{top}/sdstudio/sdstudio",
        f"{top}/sdstudio/_internal/base_library.zip",
        f"{top}/desktop/io.github.sdstudio.SdStudio.desktop",
        f"{top}/icons/hicolor/48x48/apps/io.github.sdstudio.SdStudio.png",
        f"{top}/INSTALL.txt",
    } <= members.keys()
    assert all(name.startswith(f"{top}/") or name == top for name in members)
    assert members[f"{top}/sdstudio/sdstudio"].mode & stat.S_IXUSR
    if sys.platform != "win32":
        assert members[f"{top}/sdstudio/sdstudio-cli"].linkname == "sdstudio"
    assert "./sdstudio/sdstudio --install-desktop-entry" in install
    assert "--uninstall-desktop-entry" in install
    assert not list((tmp_path / "dist").glob("*.partial"))


def test_archive_without_desktop_files_still_has_the_app(build: ModuleType, tmp_path: Path) -> None:
    app, _ = _fake_build(tmp_path)
    archive = build.make_archive(app, tmp_path / "none", tmp_path, "1.0", "aarch64")
    with tarfile.open(archive) as tar:
        tops = {name.split("/")[1] for name in tar.getnames() if "/" in name}
    assert tops == {"sdstudio", "INSTALL.txt"}


def test_built_executable_path_matches_the_platform(build: ModuleType, tmp_path: Path) -> None:
    path = build.executable(tmp_path)
    if sys.platform == "darwin":
        assert path == tmp_path / "sdstudio.app" / "Contents" / "MacOS" / "sdstudio"
    elif sys.platform == "win32":
        assert path == tmp_path / "sdstudio" / "sdstudio.exe"
    else:
        assert path == tmp_path / "sdstudio" / "sdstudio"


@pytest.mark.packaging
@pytest.mark.skipif(importlib.util.find_spec("PyInstaller") is None, reason="needs PyInstaller")
def test_frozen_app_builds_and_passes_its_self_test(build: ModuleType, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "packaging" / "build.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "self-test passed" in result.stdout
    summary = json.loads(next(line for line in result.stdout.splitlines() if '"ok"' in line))
    assert summary["ok"] is True and summary["version"] == sdstudio.__version__

    exe = build.executable()
    env = {
        **os.environ,
        "SDSTUDIO_HOME": str(tmp_path / "home"),
        "QT_QPA_PLATFORM": "offscreen",
        "HF_HUB_OFFLINE": "1",
    }
    version = subprocess.run(
        [str(exe), "--version"], env=env, capture_output=True, text=True, timeout=120
    )
    assert version.returncode == 0
    if sys.platform != "win32":  # a windowed Windows program has no stdout
        assert version.stdout.strip() == f"sdstudio {sdstudio.__version__}"
    if sys.platform != "darwin":  # the macOS bundle has no sdstudio-cli
        _frozen_cli_generates_from_a_single_file_checkpoint(exe, env, tmp_path)
    if sys.platform.startswith("linux"):
        arch = build.machine_name()
        assert (ROOT / "dist" / f"sdstudio-{sdstudio.__version__}-linux-{arch}.tar.gz").is_file()


def _frozen_cli_generates_from_a_single_file_checkpoint(
    exe: Path, env: dict[str, str], tmp_path: Path
) -> None:
    from sdstudio.testing import save_tiny_model
    from sdstudio.testing.checkpoints import save_single_file_checkpoint

    folder = save_tiny_model(tmp_path / "tiny")
    checkpoint = save_single_file_checkpoint(folder, tmp_path / "tiny.safetensors")
    cli = exe.with_name(f"sdstudio-cli{exe.suffix}")
    model = ["--model", str(checkpoint), "--config", str(folder)]
    settings = ["--prompt", "a test", "--steps", "2", "--width", "64", "--height", "64"]
    output = ["--seed", "1", "--out", str(tmp_path / "out"), "--json"]
    result = subprocess.run(
        [str(cli), "generate", *model, *settings, *output],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    events = [event for event in events if event["event"] != "notice"]
    assert [event["event"] for event in events] == ["step", "step", "image", "done"]
    assert Path(events[2]["path"]).is_file()
