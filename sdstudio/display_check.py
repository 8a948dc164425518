"""Saying, before Qt starts, why the window could not open on this Linux system.

Without a display, or without the system libraries its X11 (xcb) platform plugin
needs, Qt prints its own message and aborts the process (a core dump). Checked
first, sdstudio says what to do instead: start it from a desktop session, run it
headless with ``QT_QPA_PLATFORM=offscreen``, or install the missing libraries.
This module does not import Qt.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

WAYLAND_PLATFORMS = {"wayland", "wayland-egl"}
DESKTOP_PLATFORMS = {"xcb", *WAYLAND_PLATFORMS}
"""Qt platform plugins that need a running desktop session."""

XCB_LIBRARIES = (
    ("libxcb.so.1", "libxcb1"),
    ("libX11.so.6", "libx11-6"),
    ("libX11-xcb.so.1", "libx11-xcb1"),
    ("libxcb-cursor.so.0", "libxcb-cursor0"),
    ("libxcb-icccm.so.4", "libxcb-icccm4"),
    ("libxcb-image.so.0", "libxcb-image0"),
    ("libxcb-keysyms.so.1", "libxcb-keysyms1"),
    ("libxcb-randr.so.0", "libxcb-randr0"),
    ("libxcb-render.so.0", "libxcb-render0"),
    ("libxcb-render-util.so.0", "libxcb-render-util0"),
    ("libxcb-shape.so.0", "libxcb-shape0"),
    ("libxcb-shm.so.0", "libxcb-shm0"),
    ("libxcb-sync.so.1", "libxcb-sync1"),
    ("libxcb-util.so.1", "libxcb-util1"),
    ("libxcb-xfixes.so.0", "libxcb-xfixes0"),
    ("libxcb-xkb.so.1", "libxcb-xkb1"),
    ("libxkbcommon.so.0", "libxkbcommon0"),
    ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
    ("libGL.so.1", "libgl1"),
    ("libEGL.so.1", "libegl1"),
    ("libfontconfig.so.1", "libfontconfig1"),
    ("libfreetype.so.6", "libfreetype6"),
    ("libglib-2.0.so.0", "libglib2.0-0"),
    ("libgthread-2.0.so.0", "libglib2.0-0"),
    ("libdbus-1.so.3", "libdbus-1-3"),
    ("libzstd.so.1", "libzstd1"),
    ("libz.so.1", "zlib1g"),
)
"""The system libraries (and their Debian/Ubuntu packages) that PySide6's xcb platform
plugin and the Qt libraries it loads need: the plugin's and QtXcbQpa's, QtGui's,
QtDBus's and QtCore's ``NEEDED`` entries, less Qt's own and the C and C++ runtimes."""

HEADLESS_MESSAGE = (
    "sdstudio: there is no display to open a window on (neither DISPLAY nor WAYLAND_DISPLAY "
    "is set). Start it from a desktop session or set DISPLAY; to run it without a display, "
    "set QT_QPA_PLATFORM=offscreen (as `sdstudio --self-test` does)."
)


def display_problem(
    environ: Mapping[str, str] | None = None,
    *,
    platform: str | None = None,
    can_load: Callable[[str], bool] | None = None,
) -> str | None:
    """Why Qt could not open a window here, for the user; ``None`` when it can (or may).

    Only Linux is checked. ``environ``, ``platform`` (``sys.platform``) and ``can_load``
    (whether a shared library loads) default to this process's.
    """
    env = os.environ if environ is None else environ
    if not (platform or sys.platform).startswith("linux"):
        return None
    plugins = requested_platforms(env.get("QT_QPA_PLATFORM", ""))
    if plugins and not plugins <= DESKTOP_PLATFORMS:
        return None  # offscreen, vnc, eglfs and the like need no desktop session
    x11 = bool(env.get("DISPLAY")) and (not plugins or "xcb" in plugins)
    wayland = (not plugins or bool(plugins & WAYLAND_PLATFORMS)) and _has_wayland(env, plugins)
    if not x11 and not wayland:
        return HEADLESS_MESSAGE
    if wayland or getattr(sys, "frozen", False):
        return None  # Qt tries Wayland first; a stand-alone build carries its own libraries
    missing = missing_libraries(can_load or _loads)
    if not missing:
        return None
    names = ", ".join(library for library, _package in missing)
    packages = " ".join(dict.fromkeys(package for _library, package in missing))
    return (
        f"sdstudio: Qt cannot open a window on the X display: these system libraries are "
        f"missing: {names}.\nOn Debian or Ubuntu, install them with: sudo apt install {packages}"
    )


def requested_platforms(value: str) -> set[str]:
    """The plugin names in a ``QT_QPA_PLATFORM`` value such as ``"wayland;xcb"``."""
    names = (part.split(":", 1)[0].strip().lower() for part in value.split(";"))
    return {name for name in names if name}


def missing_libraries(can_load: Callable[[str], bool]) -> list[tuple[str, str]]:
    """The (library, Debian package) pairs of :data:`XCB_LIBRARIES` that do not load."""
    return [(library, package) for library, package in XCB_LIBRARIES if not can_load(library)]


def _loads(library: str) -> bool:
    """Whether the dynamic loader finds ``library`` (as Qt's plugin would, by its soname)."""
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


def _has_wayland(env: Mapping[str, str], plugins: set[str]) -> bool:
    """Whether Qt would try Wayland and find a compositor (as Qt decides, in that order)."""
    if env.get("WAYLAND_DISPLAY"):
        return True
    # Without WAYLAND_DISPLAY, Qt tries Wayland only when asked to or in a Wayland session,
    # and then connects to the compositor's default socket.
    if not plugins and env.get("XDG_SESSION_TYPE") != "wayland":
        return False
    runtime = env.get("XDG_RUNTIME_DIR", "")
    return bool(runtime) and Path(runtime, "wayland-0").exists()
