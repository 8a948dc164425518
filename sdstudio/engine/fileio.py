"""Writing files so that a crash, a kill or a full disk never leaves half a file."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from sdstudio.engine.errors import StorageError


def _umask_at_start() -> int:
    # os.umask can only be read by setting it, and the umask is process-wide: a
    # thread creating a file in between would get the wrong permissions. So it
    # is read that way once, at import (early in start-up, before any worker
    # thread), and only used where /proc cannot tell (macOS, Windows, BSD).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK_AT_START = _umask_at_start()


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows.

    Linux (4.7 and newer) shows it in ``/proc/self/status``; elsewhere the value
    the process had when this module was imported is used.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _UMASK_AT_START


def new_file_mode() -> int:
    """The permissions a plain ``open()`` would give a new file: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


def write_atomically(path: Path, data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder.

    The file appears whole or not at all. With ``overwrite=False`` an existing
    file is never replaced, even by another process racing for the same name
    (:class:`FileExistsError` is raised). Disk and permission errors become a
    :class:`StorageError` with a clear message, and no temporary file is left.
    The file gets the permissions a plain ``open()`` would give it (``0o666``
    less the umask), not the owner-only ones of a temporary file.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as error:
        raise StorageError(_describe(error, path)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            if hasattr(os, "fchmod"):  # POSIX; on Windows there are no such bits to set
                os.fchmod(handle.fileno(), new_file_mode())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            _publish_without_overwrite(temporary, path)
    except FileExistsError:
        _remove(temporary)
        raise
    except OSError as error:
        _remove(temporary)
        raise StorageError(_describe(error, path)) from None
    except BaseException:
        _remove(temporary)
        raise
    _sync_folder(path.parent)
    return path


def _publish_without_overwrite(temporary: str, path: Path) -> None:
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        # Filesystems without hard links (FAT, some network shares): a check
        # and a rename, which can only lose a race against another writer.
        if path.exists():
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
        os.replace(temporary, path)
        return
    os.unlink(temporary)


def check_writable_folder(folder: Path) -> None:
    """Create ``folder`` if needed and make sure files can be written in it.

    Raises :class:`StorageError` saying why not (no permission, a file in the
    way, a read-only or full disk).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".sdstudio-check-"):
            pass
    except FileExistsError:
        raise StorageError(f"{folder} is a file, not a folder.") from None
    except NotADirectoryError:
        raise StorageError(f"{folder} cannot be a folder: part of its path is a file.") from None
    except OSError as error:
        raise StorageError(_describe(error, folder)) from None


_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS}


def _describe(error: OSError, path: Path) -> str:
    if error.errno == errno.ENOSPC:
        return f"The disk is full: could not write {path}."
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"No permission to write {path}."
    return f"Could not write {path}: {error.strerror or error}."


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _sync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def file_key(path: Path) -> tuple[str, int, int]:
    """What tells a file (or a folder's files) changed: its size and modification time,
    for caches of loaded models."""
    if path.is_dir():
        stats = [p.stat() for p in path.rglob("*") if p.is_file()]
        return (
            str(path),
            sum(s.st_size for s in stats),
            max((s.st_mtime_ns for s in stats), default=0),
        )
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns
