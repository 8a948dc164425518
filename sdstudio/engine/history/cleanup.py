"""Removing what a killed writer left behind: sdstudio's own temporary files, nothing else.

:func:`~sdstudio.engine.fileio.write_atomically` writes ``.{name}.XXXXXXXX.part``
next to its target (``XXXXXXXX`` from :func:`tempfile.mkstemp`) and renames it
when done. Only files named so, in the folders sdstudio writes to (the outputs
folder, its day folders and the data folders), and old enough that no writer
can still be busy with them, are removed; files of other programs and
sub-folders of any depth are left alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

STALE_PART_AGE_S = 600
"""A temporary file this old (in seconds) has no writer any more."""
PART_NAME = re.compile(r"^\.(.+)\.[a-z0-9_]{8}\.part$")
"""The name of a temporary file of ``write_atomically`` (``tempfile.mkstemp`` letters)."""
DAY_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")
"""The name of a day folder of the outputs (``2026-11-22``)."""


def remove_stale_partial_files(
    outputs_dir: Path, data_folders: Iterable[Path] = (), max_age_s: float = STALE_PART_AGE_S
) -> int:
    """Delete sdstudio's temporary files older than ``max_age_s``; returns how many.

    Looks in ``outputs_dir``, its day folders and ``data_folders``, one level
    each.
    """
    removed = 0
    now = time.time()
    for folder in [*_outputs_folders(outputs_dir), *data_folders]:
        for entry in _entries(folder):
            if not PART_NAME.match(entry.name):
                continue
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False) and now - entry.stat().st_mtime > max_age_s:
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _outputs_folders(outputs_dir: Path) -> Iterator[Path]:
    yield outputs_dir
    for entry in _entries(outputs_dir):
        with contextlib.suppress(OSError):
            if DAY_FOLDER.match(entry.name) and entry.is_dir(follow_symlinks=False):
                yield Path(entry.path)


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError:
        return []
