"""The freedesktop desktop entry, icons and metainfo, and installing them for a user."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from PIL import Image

import sdstudio
from sdstudio import desktop_entry
from sdstudio.desktop_entry import (
    APP_ID,
    ICON_SIZES,
    DesktopEntryError,
    exec_argument,
    find_command,
    install_desktop_entry,
    shipped_files,
    uninstall_desktop_entry,
)
from sdstudio.resource_files import resource_path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_ENTRY = resource_path(f"desktop/{APP_ID}.desktop")
SHIPPED_METAINFO = resource_path(f"desktop/{APP_ID}.metainfo.xml")
ENTRY = f"applications/{APP_ID}.desktop"


def make_command(folder: Path) -> Path:
    """A stand-in ``sdstudio`` launcher."""
    folder.mkdir(parents=True, exist_ok=True)
    command = folder / "sdstudio"
    command.write_text("#!/bin/sh\nexit 0\n")
    command.chmod(0o755)
    return command


def entry_values(path: Path) -> dict[str, str]:
    lines = path.read_text("utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def validate_entry(path: Path) -> None:
    """desktop-file-validate reports neither errors nor warnings (hints are allowed)."""
    if shutil.which("desktop-file-validate") is None:
        pytest.skip("desktop-file-validate is not installed")
    result = subprocess.run(
        ["desktop-file-validate", str(path)], capture_output=True, text=True, check=False
    )
    problems = [line for line in result.stdout.splitlines() if "hint:" not in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "data"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home


def test_install_writes_the_entry_icons_and_metainfo(data_home: Path, tmp_path: Path) -> None:
    command = make_command(tmp_path / "bin")

    written = install_desktop_entry(command=str(command))

    expected = {data_home / relative for relative in shipped_files()}
    assert set(written) == expected and len(written) == len(expected)
    assert all(path.is_file() for path in expected)
    values = entry_values(data_home / ENTRY)
    assert values["Exec"] == f"{command} %F"
    assert values["TryExec"] == str(command)
    shipped = entry_values(SHIPPED_ENTRY)
    assert {k: v for k, v in values.items() if k not in ("Exec", "TryExec")} == {
        k: v for k, v in shipped.items() if k not in ("Exec", "TryExec")
    }
    assert (data_home / f"metainfo/{APP_ID}.metainfo.xml").read_bytes() == (
        SHIPPED_METAINFO.read_bytes()
    )
    for size in ICON_SIZES:
        with Image.open(data_home / f"icons/hicolor/{size}x{size}/apps/{APP_ID}.png") as icon:
            assert (icon.format, icon.size, icon.mode) == ("PNG", (size, size), "RGBA")
    scalable = data_home / f"icons/hicolor/scalable/apps/{APP_ID}.svg"
    assert scalable.read_bytes() == resource_path("sdstudio.svg").read_bytes()
    validate_entry(data_home / ENTRY)


def test_shipped_entry_validates_and_names_the_app() -> None:
    values = entry_values(SHIPPED_ENTRY)
    assert values["Icon"] == APP_ID
    assert values["StartupWMClass"] == "sdstudio"
    assert values["Exec"] == "sdstudio %F"
    validate_entry(SHIPPED_ENTRY)


def test_metainfo_matches_the_package_and_validates() -> None:
    component = ElementTree.parse(SHIPPED_METAINFO).getroot()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    assert component.get("type") == "desktop-application"
    assert component.findtext("id") == APP_ID
    assert component.findtext("project_license") == project["license"]
    assert component.findtext("launchable") == f"{APP_ID}.desktop"
    assert component.find("releases/release").get("version") == sdstudio.__version__
    assert "sdstudio" in [binary.text for binary in component.iterfind("provides/binary")]
    if shutil.which("appstreamcli") is None:
        pytest.skip("appstreamcli is not installed")
    result = subprocess.run(
        ["appstreamcli", "validate", "--no-net", str(SHIPPED_METAINFO)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shipped_icons_have_every_size() -> None:
    for size in ICON_SIZES:
        with Image.open(resource_path(f"icons/hicolor/{size}x{size}/apps/{APP_ID}.png")) as icon:
            assert icon.size == (size, size)
    with Image.open(resource_path("icons/sdstudio.ico")) as ico:
        assert {16, 32, 48, 256} <= {width for width, _ in ico.info["sizes"]}
    with Image.open(resource_path("icons/sdstudio.icns")) as icns:
        assert icns.format == "ICNS"


def test_a_command_path_with_spaces_is_quoted(data_home: Path, tmp_path: Path) -> None:
    command = make_command(tmp_path / "my apps")

    install_desktop_entry(command=str(command))

    values = entry_values(data_home / ENTRY)
    assert values["Exec"] == f'"{command}" %F'
    assert values["TryExec"] == str(command)
    validate_entry(data_home / ENTRY)


def test_exec_arguments_are_quoted_and_escaped_as_the_spec_says() -> None:
    assert exec_argument("/usr/bin/sdstudio") == "/usr/bin/sdstudio"
    assert exec_argument("/opt/100%/sdstudio") == "/opt/100%%/sdstudio"
    assert exec_argument('/a b/$x"\\') == '"/a b/\\\\$x\\\\"\\\\\\\\"'


def test_uninstall_removes_only_what_install_wrote(data_home: Path, tmp_path: Path) -> None:
    unrelated = [
        data_home / "applications/other.desktop",
        data_home / "icons/hicolor/48x48/apps/other.png",
        data_home / "metainfo/other.metainfo.xml",
    ]
    for path in unrelated:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not ours")
    written = install_desktop_entry(command=str(make_command(tmp_path / "bin")))

    removed = uninstall_desktop_entry()

    assert removed == written
    assert not any(path.exists() for path in written)
    assert all(path.read_text() == "not ours" for path in unrelated)
    assert uninstall_desktop_entry() == []


def test_mime_cache_follows_install_and_uninstall(data_home: Path, tmp_path: Path) -> None:
    if shutil.which("update-desktop-database") is None:
        pytest.skip("update-desktop-database is not installed")
    install_desktop_entry(command=str(make_command(tmp_path / "bin")))
    cache = data_home / "applications/mimeinfo.cache"
    assert f"image/png={APP_ID}.desktop;" in cache.read_text()
    uninstall_desktop_entry()
    assert APP_ID not in cache.read_text()


def test_a_missing_command_is_a_clear_error(
    data_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DesktopEntryError, match="not found"):
        install_desktop_entry(command=str(tmp_path / "nowhere" / "sdstudio"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "argv", ["/somewhere/__main__.py"])
    monkeypatch.setattr(desktop_entry.sysconfig, "get_path", lambda *_: str(tmp_path / "empty"))
    with pytest.raises(DesktopEntryError, match="No sdstudio command was found on the PATH"):
        install_desktop_entry()
    assert not data_home.exists()


def test_the_launcher_that_runs_and_a_frozen_build_are_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launcher = make_command(tmp_path / "venv" / "bin")
    monkeypatch.setattr(sys, "argv", [str(launcher), "--install-desktop-entry"])
    assert find_command() == launcher
    frozen = tmp_path / "dist" / "sdstudio" / "sdstudio"
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(frozen))
    assert find_command() == frozen


def test_an_unwritable_folder_is_a_clear_error_and_leaves_nothing(
    data_home: Path, tmp_path: Path
) -> None:
    data_home.mkdir()
    (data_home / "icons").write_text("a file where the icons folder should be")

    with pytest.raises(DesktopEntryError, match="was not installed"):
        install_desktop_entry(command=str(make_command(tmp_path / "bin")))

    assert not (data_home / ENTRY).exists()
    assert not (data_home / f"metainfo/{APP_ID}.metainfo.xml").exists()


def test_installing_needs_no_qt() -> None:
    script = "import sys, sdstudio.app, sdstudio.desktop_entry; print('PySide6' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


@pytest.mark.slow
def test_the_command_line_installs_and_uninstalls(tmp_path: Path) -> None:
    command = make_command(tmp_path / "bin")
    data_home = tmp_path / "data"
    env = {
        **os.environ,
        "XDG_DATA_HOME": str(data_home),
        "PATH": f"{command.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }

    def run(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sdstudio", *arguments],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    installed = run("--install-desktop-entry")
    assert installed.returncode == 0, installed.stderr
    assert f"Wrote {data_home / ENTRY}" in installed.stdout.splitlines()
    assert entry_values(data_home / ENTRY)["Exec"] == f"{command} %F"

    removed = run("--uninstall-desktop-entry")
    assert removed.returncode == 0, removed.stderr
    assert f"Removed {data_home / ENTRY}" in removed.stdout.splitlines()
    assert not (data_home / ENTRY).exists()

    env["XDG_DATA_HOME"] = str(command / "not-a-folder")
    failed = run("--install-desktop-entry")
    assert failed.returncode == 1
    assert failed.stderr.startswith("sdstudio: ") and "was not installed" in failed.stderr
