"""Starting the app where Qt could not open a window: a clear line instead of an abort."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sdstudio.display_check import HEADLESS_MESSAGE, XCB_LIBRARIES, display_problem

MISSING = {"libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libgthread-2.0.so.0"}


def loads_all(library: str) -> bool:
    return True


def loads_some(library: str) -> bool:
    return library not in MISSING


def never_asked(library: str) -> bool:
    raise AssertionError(f"{library} should not be looked up")


@pytest.mark.parametrize("platform", ["", "xcb", "wayland", "wayland;xcb", "xcb:dpi=96"])
def test_no_display_gives_one_line_saying_what_to_do(platform: str) -> None:
    env = {"QT_QPA_PLATFORM": platform} if platform else {}
    problem = display_problem(env, platform="linux", can_load=never_asked)
    assert problem == HEADLESS_MESSAGE and "\n" not in problem
    assert "DISPLAY" in problem and "QT_QPA_PLATFORM=offscreen" in problem


@pytest.mark.parametrize("platform", ["offscreen", "minimal", "vnc", "eglfs", "offscreen;xcb"])
def test_platforms_that_need_no_desktop_are_left_alone(platform: str) -> None:
    env = {"QT_QPA_PLATFORM": platform}
    assert display_problem(env, platform="linux", can_load=never_asked) is None


def test_other_systems_are_left_alone() -> None:
    for system in ("darwin", "win32"):
        assert display_problem({}, platform=system, can_load=never_asked) is None


def test_a_display_with_every_library_is_fine() -> None:
    for platform in ("", "xcb"):
        env = {"DISPLAY": ":0", "QT_QPA_PLATFORM": platform}
        assert display_problem(env, platform="linux", can_load=loads_all) is None


def test_missing_libraries_are_named_with_the_apt_command() -> None:
    problem = display_problem({"DISPLAY": ":1"}, platform="linux", can_load=loads_some)
    assert problem is not None
    first, command = problem.splitlines()
    for library in MISSING:
        assert library in first
    assert command.endswith("sudo apt install libxcb-icccm4 libxcb-keysyms1 libglib2.0-0")


def test_wayland_sessions_are_not_held_to_the_x11_libraries(tmp_path: Path) -> None:
    wayland = {"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-1"}
    assert display_problem(wayland, platform="linux", can_load=never_asked) is None
    assert display_problem({"WAYLAND_DISPLAY": "wayland-1"}, platform="linux") is None
    (tmp_path / "wayland-0").touch()  # the compositor's default socket
    session = {"XDG_SESSION_TYPE": "wayland", "XDG_RUNTIME_DIR": str(tmp_path)}
    assert display_problem(session, platform="linux", can_load=never_asked) is None
    asked = {"QT_QPA_PLATFORM": "wayland", "XDG_RUNTIME_DIR": str(tmp_path)}
    assert display_problem(asked, platform="linux", can_load=never_asked) is None
    # Qt does not try Wayland unprompted outside a Wayland session.
    other = {"XDG_SESSION_TYPE": "tty", "XDG_RUNTIME_DIR": str(tmp_path)}
    assert display_problem(other, platform="linux") == HEADLESS_MESSAGE
    # Asked for X11 only, a Wayland compositor is no help.
    x11_only = {**session, "QT_QPA_PLATFORM": "xcb"}
    assert display_problem(x11_only, platform="linux") == HEADLESS_MESSAGE


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux display check")
def test_the_app_exits_with_status_1_and_one_line_without_a_display(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("QT_QPA_PLATFORM", None)
    env.update(XDG_SESSION_TYPE="tty", SDSTUDIO_HOME=str(tmp_path / "home"))
    result = subprocess.run(
        [sys.executable, "-m", "sdstudio"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [HEADLESS_MESSAGE]
    assert result.stdout == ""


def _needed(library: Path) -> list[str]:
    output = subprocess.run(
        ["readelf", "-d", str(library)], capture_output=True, text=True, check=True
    ).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", output)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("readelf") is None,
    reason="reads the Linux Qt libraries with readelf",
)
def test_the_library_list_covers_what_the_installed_qt_needs() -> None:
    import PySide6

    qt = Path(PySide6.__file__).parent / "Qt"
    plugin = qt / "plugins" / "platforms" / "libqxcb.so"
    libraries = [
        plugin,
        *(qt / "lib" / f"libQt6{m}.so.6" for m in ("XcbQpa", "Gui", "DBus", "Core")),
    ]
    needed = {name for library in libraries for name in _needed(library)}
    runtime = ("libc.so", "libm.so", "libstdc++.so", "libgcc_s.so", "ld-linux", "libdl.so")
    system = {
        name
        for name in needed
        if not name.startswith(("libQt6", "libicu", *runtime)) and name != "libpthread.so.0"
    }
    assert system  # the plugin's own X11 libraries at least
    assert system <= {library for library, _package in XCB_LIBRARIES}


def test_the_readme_lists_every_package() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text("utf-8")
    section = readme.split("### Linux: Qt's system libraries", 1)[1].split("\n### ", 1)[0]
    command = section.split("sudo apt install", 1)[1].split("```", 1)[0]
    assert set(command.replace("\\", " ").split()) == {p for _library, p in XCB_LIBRARIES}
    assert "QT_QPA_PLATFORM=offscreen" in section
