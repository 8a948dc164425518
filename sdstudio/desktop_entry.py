"""Add sdstudio to the applications menu of a Linux desktop (freedesktop.org).

A pip install puts the ``sdstudio`` command on the PATH but nothing in the
menu. :func:`install_desktop_entry` copies the shipped desktop entry, icons and
AppStream metainfo into the user's data folder (``$XDG_DATA_HOME``, by default
``~/.local/share``), with the entry's ``Exec`` pointing at the installed
command; :func:`uninstall_desktop_entry` removes those files again.

The desktop entry and icon theme specifications are simple enough that no
maintained Python library covers just this (``xdg-desktop-menu`` and
``xdg-icon-resource`` are shell tools, often missing), so it is written here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from sdstudio.engine.errors import SdStudioError, StorageError
from sdstudio.engine.fileio import write_atomically
from sdstudio.resource_files import resource_path

APP_ID = "io.github.sdstudio.SdStudio"
"""The reverse-DNS application id: name of the desktop entry, icon and metainfo."""

COMMAND = "sdstudio"
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
CACHE_TOOL_TIMEOUT_S = 15

# Characters that make an Exec argument need double quotes, and those that
# must then be escaped inside them (Desktop Entry Specification, "The Exec key").
_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")
_ESCAPED_IN_QUOTES = set('"`$\\')


class DesktopEntryError(SdStudioError):
    """The desktop entry cannot be installed or removed."""


def shipped_files() -> dict[str, Path]:
    """Each file to install, by its path under the data folder, with its shipped source."""
    files = {
        f"applications/{APP_ID}.desktop": resource_path(f"desktop/{APP_ID}.desktop"),
        f"metainfo/{APP_ID}.metainfo.xml": resource_path(f"desktop/{APP_ID}.metainfo.xml"),
    }
    for size in ICON_SIZES:
        icon = f"icons/hicolor/{size}x{size}/apps/{APP_ID}.png"
        files[icon] = resource_path(icon)
    scalable = f"icons/hicolor/scalable/apps/{APP_ID}.svg"
    files[scalable] = resource_path(scalable)
    return files


def install_desktop_entry(data_home: Path | None = None, command: str | None = None) -> list[Path]:
    """Install the desktop entry, icons and metainfo for ``command``; return the files written.

    ``command`` defaults to the installed ``sdstudio`` launcher (see
    :func:`find_command`). Desktop databases and icon caches are refreshed
    afterwards where their tools are installed.
    """
    _require_freedesktop()
    home = data_home or default_data_home()
    executable = find_command(command)
    sources = shipped_files()
    missing = [str(source) for source in sources.values() if not source.is_file()]
    if missing:
        raise DesktopEntryError(f"This sdstudio installation lacks {', '.join(missing)}.")
    written = []
    for relative, source in sources.items():
        data = source.read_bytes()
        if relative.endswith(".desktop"):
            data = point_at_command(data.decode("utf-8"), executable).encode("utf-8")
        try:
            written.append(write_atomically(home / relative, data))
        except StorageError as error:
            for path in written:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise DesktopEntryError(f"{error} The desktop entry was not installed.") from None
    refresh_caches(home)
    return written


def uninstall_desktop_entry(data_home: Path | None = None) -> list[Path]:
    """Remove the files :func:`install_desktop_entry` writes; return those that were there."""
    _require_freedesktop()
    home = data_home or default_data_home()
    removed = []
    for relative in shipped_files():
        target = home / relative
        try:
            target.unlink()
        except FileNotFoundError:
            continue
        except OSError as error:
            raise DesktopEntryError(
                f"Could not remove {target}: {error.strerror or error}."
            ) from None
        removed.append(target)
    if removed:
        refresh_caches(home)
    return removed


def default_data_home(environ: dict[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME`` when it is an absolute path, else ``~/.local/share``."""
    value = (os.environ if environ is None else environ).get("XDG_DATA_HOME", "")
    if value and Path(value).is_absolute():
        return Path(value)
    return Path.home() / ".local" / "share"


def find_command(command: str | None = None) -> Path:
    """The absolute path of the program a desktop should start.

    ``command`` if given; a frozen build starts itself. Otherwise the
    ``sdstudio`` launcher this process was started from, then ``sdstudio`` on
    the PATH, then the launcher pip put beside this Python (for a virtual
    environment that is not activated) or in the user's scripts folder.
    """
    if command is not None:
        found = shutil.which(command) if os.sep not in command else command
        if found is None or not _is_executable(Path(found)):
            raise DesktopEntryError(f"The command {command!r} was not found or is not executable.")
        return Path(found).absolute()
    if getattr(sys, "frozen", False):
        return Path(sys.executable).absolute()
    candidates = [sys.argv[0] if sys.argv else None, shutil.which(COMMAND)]
    for key in ("prefix", "user"):
        with contextlib.suppress(KeyError):
            scheme = sysconfig.get_preferred_scheme(key)
            candidates.append(str(Path(sysconfig.get_path("scripts", scheme)) / COMMAND))
    for candidate in candidates:
        if candidate and Path(candidate).name == COMMAND and _is_executable(Path(candidate)):
            return Path(candidate).absolute()
    raise DesktopEntryError(
        f"No {COMMAND} command was found on the PATH. Install sdstudio with pip "
        f"(which creates the command), or add the folder holding it to the PATH."
    )


def point_at_command(entry: str, executable: Path) -> str:
    """The desktop entry text with ``Exec`` and ``TryExec`` starting ``executable``."""
    lines = []
    for line in entry.splitlines():
        key, separator, value = line.partition("=")
        if separator and key.strip() == "TryExec":
            line = f"TryExec={escape_string(str(executable))}"
        elif separator and key.strip() == "Exec":
            program, _, arguments = value.strip().partition(" ")
            if program == COMMAND:
                line = f"Exec={exec_argument(str(executable))}"
                line += f" {arguments}" if arguments else ""
        lines.append(line)
    return "\n".join(lines) + "\n"


def exec_argument(argument: str) -> str:
    """``argument`` as written in an ``Exec`` value: quoted if needed, then escaped."""
    argument = argument.replace("%", "%%")
    if any(char in _RESERVED for char in argument):
        inner = "".join(f"\\{char}" if char in _ESCAPED_IN_QUOTES else char for char in argument)
        argument = f'"{inner}"'
    return escape_string(argument)


def escape_string(value: str) -> str:
    """``value`` escaped as a desktop entry string (backslash, newline, tab, return)."""
    value = value.replace("\\", "\\\\")
    return value.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def refresh_caches(data_home: Path) -> None:
    """Tell the desktop about changed entries and icons; tools that are missing or fail are skipped.

    ``update-desktop-database`` refreshes the MIME associations of the
    applications folder. An existing ``icon-theme.cache`` is rebuilt, as a stale
    one hides new icons; otherwise touching the theme folder is enough.
    """
    applications = data_home / "applications"
    hicolor = data_home / "icons" / "hicolor"
    if applications.is_dir():
        _run_quietly(["update-desktop-database", "-q", str(applications)])
    if (hicolor / "icon-theme.cache").exists():
        _run_quietly(["gtk-update-icon-cache", "-q", "-t", "-f", str(hicolor)])
    if hicolor.is_dir():
        with contextlib.suppress(OSError):
            os.utime(hicolor)
    _run_quietly(["xdg-icon-resource", "forceupdate"], {"XDG_DATA_HOME": str(data_home)})


def _run_quietly(arguments: list[str], environ: dict[str, str] | None = None) -> None:
    if shutil.which(arguments[0]) is None:
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            arguments,
            env={**os.environ, **environ} if environ else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=CACHE_TOOL_TIMEOUT_S,
            check=False,
        )


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _require_freedesktop() -> None:
    if sys.platform.startswith("win") or sys.platform == "darwin":
        raise DesktopEntryError(
            "Desktop entries are for Linux and other freedesktop.org desktops; "
            "on Windows and macOS make a shortcut to the stand-alone build (see the README)."
        )


def run_command(uninstall: bool = False) -> int:
    """Run ``sdstudio --install-desktop-entry`` or ``--uninstall-desktop-entry``; 1 on failure."""
    try:
        paths = uninstall_desktop_entry() if uninstall else install_desktop_entry()
    except SdStudioError as error:
        print(f"sdstudio: {error}", file=sys.stderr)
        return 1
    verb = "Removed" if uninstall else "Wrote"
    for path in paths:
        print(f"{verb} {path}")
    if uninstall and not paths:
        print("No sdstudio desktop entry was installed.")
    return 0
