"""What can go wrong with the history database, told apart.

Only real damage (SQLite's "file is not a database" or "database disk image is
malformed", or a failed ``PRAGMA quick_check``) may lead to the file being moved
aside and rebuilt. A database that is locked by another program, on a full or
read-only disk, or behind an I/O error is healthy: it is reported and left as
it is, so that a later try finds it whole, favourites and all.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sdstudio.engine.errors import SdStudioError

# SQLite's primary result codes (the low byte of an extended code).
_PERM, _BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT = 3, 5, 6, 8, 10, 11
_FULL, _CANTOPEN, _NOTADB = 13, 14, 26
_CORRUPT_VTAB = _CORRUPT | (1 << 8)


class HistoryError(SdStudioError):
    """The history database cannot be used."""


class HistoryUnavailable(HistoryError):
    """The database cannot be used now (locked, disk full, read-only, I/O error).

    The file was left untouched; trying again later (after closing the other
    program or freeing space) finds it as it was.
    """


class HistoryDamaged(HistoryError):
    """The database file is damaged: only this moves it aside for a rebuild."""


def history_error(error: sqlite3.Error, path: Path | str, busy_timeout_s: float) -> HistoryError:
    """The :class:`HistoryError` that tells a user what ``error`` means for ``path``."""
    kind = error_kind(error)
    database = f"the history database {path}"
    where = database[0].upper() + database[1:]
    untouched = "it was left untouched"
    if kind == "busy":
        return HistoryUnavailable(
            f"{where} is in use by another program (still locked after {busy_timeout_s:g} s); "
            f"{untouched}. Close the other program and try again."
        )
    if kind == "full":
        return HistoryUnavailable(
            f"The disk holding {database} is full; {untouched}. Free some space and try again."
        )
    if kind == "readonly":
        return HistoryUnavailable(
            f"{where} cannot be written (a read-only file, folder or disk, or no permission); "
            f"{untouched}."
        )
    if kind == "cantopen":
        return HistoryUnavailable(
            f"{where} cannot be opened (its folder is missing or read-only, or there is no "
            f"permission); {untouched}."
        )
    if kind == "io":
        return HistoryUnavailable(
            f"{where} could not be read or written (disk I/O error); {untouched}."
        )
    if kind == "search-index":
        return HistoryError(
            f"The search index of {database} is damaged ({error}); it is rebuilt the next time "
            "the history is opened."
        )
    if kind == "damaged":
        return HistoryDamaged(f"{where} is damaged ({error}).")
    return HistoryError(f"{where} cannot be used: {error}.")


def error_kind(error: sqlite3.Error) -> str:
    """``busy``, ``full``, ``readonly``, ``cantopen``, ``io``, ``damaged``, ``search-index``
    or ``other``."""
    code = getattr(error, "sqlite_errorcode", None)
    text = str(error).lower()
    if code == _CORRUPT_VTAB or "images_text" in text:
        return "search-index"  # the full-text index (or a table of it) is damaged or gone
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (_BUSY, _LOCKED) or "locked" in text or "busy" in text:
        return "busy"
    if primary == _FULL or "disk is full" in text:
        return "full"
    if primary in (_READONLY, _PERM) or "readonly" in text:
        return "readonly"
    if primary == _CANTOPEN or "unable to open" in text:
        return "cantopen"
    if primary == _IOERR or "disk i/o error" in text:
        return "io"
    if primary in (_CORRUPT, _NOTADB) or "malformed" in text or "not a database" in text:
        return "damaged"
    return "other"
