"""Moving files to the desktop's trash on Linux and other freedesktop systems.

Implements the FreeDesktop.org Trash specification 1.0 (the one GNOME, KDE and
Xfce file managers read): a file on the same filesystem as the home trash
(``$XDG_DATA_HOME/Trash``) goes there; a file on another filesystem (a data
drive) goes to that filesystem's own trash, ``$topdir/.Trash/$uid`` when the
administrator made a safe ``$topdir/.Trash`` (a sticky directory, not a link),
else ``$topdir/.Trash-$uid``. Files are renamed, never copied: a file that no
trash on its own filesystem can take is refused with the reason, so the front
end can ask before deleting it for good. Written by hand because no maintained
library does this without a desktop session (gio needs GLib and a D-Bus
session; Qt's ``QFile.moveToTrash`` deletes nothing but handles only some
layouts and gives no reason).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from sdstudio.engine.errors import SdStudioError

FREEDESKTOP = os.name == "posix" and sys.platform != "darwin"
"""Whether this system keeps its trash as the freedesktop specification says (macOS
and Windows have their own, reached through the desktop toolkit)."""
_NUMBERED_NAMES = 1000
"""How many ``name.N.ext`` names are tried before random ones."""


class TrashUnavailable(SdStudioError):
    """A file cannot be moved to a trash; the message says why, in a few words."""


def device_of(path: str | os.PathLike[str]) -> int:
    """The filesystem (device number) a path is on; a link's own, not its target's."""
    return os.lstat(path).st_dev


def mount_point(path: str | os.PathLike[str]) -> Path:
    """The top directory of the filesystem that holds ``path`` (an existing folder,
    with links resolved)."""
    current = Path(os.path.realpath(path))
    device = device_of(current)
    while current.parent != current and device_of(current.parent) == device:
        current = current.parent
    return current


def home_trash() -> Path:
    """The user's own trash: ``$XDG_DATA_HOME/Trash`` (``~/.local/share/Trash``)."""
    data = os.environ.get("XDG_DATA_HOME", "")
    base = Path(data) if data and os.path.isabs(data) else Path.home() / ".local" / "share"
    return base / "Trash"


@dataclass(frozen=True, slots=True)
class Trash:
    """One trash directory, with its ``files`` and ``info`` folders."""

    root: Path
    topdir: Path | None = None
    """The filesystem's top directory for a top-directory trash, whose records name
    files relative to it (so the trash still works when the drive is mounted
    elsewhere); None for the home trash, whose records hold absolute paths."""

    def put(self, path: str | os.PathLike[str], now: datetime | None = None) -> Path:
        """Move a file into this trash, first writing its ``.trashinfo`` record;
        returns where the file is now. Raises :class:`TrashUnavailable`."""
        source = Path(os.path.abspath(path))
        record = _record(self._original_path(source), now or datetime.now())
        info_dir, files_dir = self.root / "info", self.root / "files"
        for name in _names(source.name):
            info = info_dir / f"{name}.trashinfo"
            try:
                handle = os.open(info, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            except OSError as error:
                raise TrashUnavailable(_reason("its record cannot be written", error)) from None
            target = files_dir / name
            try:
                try:
                    os.write(handle, record)
                finally:
                    os.close(handle)
                if os.path.lexists(target):  # left by a tool that wrote no record
                    os.unlink(info)
                    continue
                os.rename(source, target)
            except OSError as error:
                _remove(info)
                raise TrashUnavailable(_reason("it cannot be moved there", error)) from None
            return target
        raise TrashUnavailable(f"the trash holds too many files named {source.name}")

    def _original_path(self, source: Path) -> str:
        if self.topdir is None:
            return str(source)
        real = Path(os.path.realpath(source.parent)) / source.name
        try:
            return str(real.relative_to(self.topdir))
        except ValueError:
            return str(source)


def trash_for(path: str | os.PathLike[str], uid: int | None = None) -> Trash:
    """The trash a file would go to, its folders made if needed (nothing is moved).

    Raises :class:`TrashUnavailable` when the file is not there or no trash on its
    filesystem can be used (a read-only drive, a drive's root the user cannot
    write to, an unsafe ``.Trash``), and on systems without freedesktop trash.
    """
    if not FREEDESKTOP:
        raise TrashUnavailable("this system keeps its trash elsewhere")
    uid = os.getuid() if uid is None else uid
    try:
        device = device_of(path)
    except OSError as error:
        raise TrashUnavailable(_reason("it cannot be read", error)) from None
    home = home_trash()
    if _device_of_nearest(home) == device:
        _make_folders(home, check_owner=None)
        return Trash(home)
    topdir = mount_point(Path(os.path.abspath(path)).parent)
    shared = topdir / ".Trash"
    if _is_safe_shared_trash(shared):
        try:
            return _top_trash(shared / str(uid), topdir, uid)
        except TrashUnavailable:
            pass  # the specification says to try the per-user folder next
    return _top_trash(topdir / f".Trash-{uid}", topdir, uid, reason_for=topdir)


def move_to_trash(path: str | os.PathLike[str], now: datetime | None = None) -> Path:
    """Move a file to its trash (see :func:`trash_for`); returns where it is now."""
    return trash_for(path).put(path, now)


def _names(name: str) -> Iterator[str]:
    """``name``, then ``stem.2.ext``, ``stem.3.ext``, …, then a few random names."""
    yield name
    stem, dot, suffix = name.rpartition(".")
    if not stem:
        stem, dot, suffix = name, "", ""
    for number in range(2, _NUMBERED_NAMES + 1):
        yield f"{stem}.{number}{dot}{suffix}"
    for _ in range(16):
        yield f"{stem}.{secrets.token_hex(4)}{dot}{suffix}"


def _record(original: str, when: datetime) -> bytes:
    """The ``.trashinfo`` text: the original path URL-encoded, the local deletion time."""
    encoded = quote(os.fsencode(original), safe="/")
    date = when.strftime("%Y-%m-%dT%H:%M:%S")
    return f"[Trash Info]\nPath={encoded}\nDeletionDate={date}\n".encode("ascii")


def _device_of_nearest(path: Path) -> int | None:
    """The device of ``path`` (where a link to it leads), or of its nearest existing parent."""
    for candidate in (path, *path.parents):
        try:
            return os.stat(candidate).st_dev
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


def _is_safe_shared_trash(folder: Path) -> bool:
    """An administrator's ``$topdir/.Trash``: a real directory with the sticky bit."""
    try:
        mode = os.lstat(folder).st_mode
    except OSError:
        return False
    return stat.S_ISDIR(mode) and bool(mode & stat.S_ISVTX)


def _top_trash(root: Path, topdir: Path, uid: int, reason_for: Path | None = None) -> Trash:
    try:
        os.mkdir(root, 0o700)
    except FileExistsError:
        pass
    except OSError as error:
        where = f"no trash folder can be made on {reason_for or topdir}"
        raise TrashUnavailable(_reason(where, error)) from None
    _make_folders(root, check_owner=uid)
    return Trash(root, topdir)


def _make_folders(root: Path, check_owner: int | None) -> None:
    """Make ``root/files`` and ``root/info``; refuse a root or folder that is a link
    (or, for a top-directory trash, not the user's own)."""
    for folder in (root, root / "files", root / "info"):
        try:
            if folder != root or check_owner is None:
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = os.lstat(folder)
        except OSError as error:
            where = f"the trash folder {folder} cannot be made"
            raise TrashUnavailable(_reason(where, error)) from None
        if not stat.S_ISDIR(info.st_mode):
            raise TrashUnavailable(f"the trash folder {folder} is not a plain folder")
        if check_owner is not None and info.st_uid != check_owner:
            raise TrashUnavailable(f"the trash folder {folder} belongs to another user")


def _reason(what: str, error: OSError) -> str:
    if error.errno == errno.EROFS:
        return "the drive is read-only"
    return f"{what}: {(error.strerror or str(error)).lower()}"


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
