"""The image library: outputs on disk plus their history rows, kept in step.

Each image is written whole to the outputs folder first, then recorded. A
process killed at any moment leaves, at worst, an image not yet recorded
(which ``rebuild`` picks up), never a row without its file or half an image.
Because every image carries its full settings, the database can always be
rebuilt from the images; a corrupt database is moved aside and rebuilt.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.generation import GeneratedImage
from sdstudio.engine.history.schema import HistoryError
from sdstudio.engine.history.store import HistoryEntry, HistoryStore
from sdstudio.engine.metadata import read_image_settings
from sdstudio.engine.metadata.record import ImageRecord
from sdstudio.engine.outputs import OutputWriter

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
STALE_PART_AGE_S = 600
_REBUILD_BATCH = 500


@dataclass(slots=True)
class RebuildReport:
    """What a rebuild found."""

    added: int = 0
    already: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) for each file that could not be indexed."""


class ImageLibrary:
    """Saves generated images and records them; lists, deletes and rebuilds."""

    def __init__(self, store: HistoryStore, writer: OutputWriter) -> None:
        self.store = store
        self.writer = writer

    @classmethod
    def open(
        cls, database: Path, outputs_dir: Path, *, on_notice: Callable[[str], None] | None = None
    ) -> ImageLibrary:
        """Open the library, recovering from a corrupt database by rebuilding it."""
        remove_stale_partial_files(outputs_dir)
        try:
            store = _open_checked(database)
        except HistoryError:
            raise
        except sqlite3.DatabaseError as error:
            aside = database.with_name(f"{database.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{database}{suffix}")
                if source.exists():
                    os.replace(source, Path(f"{aside}{suffix}"))
            store = HistoryStore(database)
            report = rebuild(store, [outputs_dir])
            message = (
                f"The history database was damaged ({error}); it was moved to {aside.name} and "
                f"rebuilt from the images: {report.added} images restored."
            )
            log.warning(message)
            if on_notice:
                on_notice(message)
        return cls(store, OutputWriter(outputs_dir))

    def set_outputs_dir(self, folder: Path) -> None:
        """Write the next images into ``folder`` (any thread: one attribute is swapped)."""
        self.writer = OutputWriter(folder, by_date=self.writer.by_date)

    def close(self) -> None:
        """Close the database."""
        self.store.close()

    def save(self, result: GeneratedImage) -> HistoryEntry:
        """Write an image, then record it; returns its history entry."""
        path = self.writer.write(result)
        entry_id = self.store.add(path, result.record)
        return self.store.get(entry_id)

    def delete(self, entry_id: int, *, keep_file: bool = False) -> HistoryEntry:
        """Remove an image from the history and, unless ``keep_file``, from disk.

        The row goes first: a crash in between leaves a file without a row,
        never a row without its file.
        """
        entry = self.store.delete(entry_id)
        if not keep_file:
            with contextlib.suppress(FileNotFoundError):
                Path(entry.path).unlink()
        return entry


def rebuild(store: HistoryStore, folders: Iterable[Path]) -> RebuildReport:
    """Index every image with generation settings under ``folders``."""
    report = RebuildReport()
    known = set(store.paths())
    batch: list[tuple[Path, ImageRecord, str]] = []
    for folder in folders:
        for path in sorted(_image_files(folder)):
            resolved = str(path.resolve())
            if resolved in known:
                report.already += 1
                continue
            try:
                settings = read_image_settings(path)
            except SdStudioError as error:
                report.skipped.append((str(path), str(error)))
                continue
            except Exception as error:  # a reader bug must not stop the rebuild
                log.exception("Reading %s failed", path)
                report.skipped.append((str(path), f"{type(error).__name__}: {error}"))
                continue
            record = settings.record or ImageRecord(
                request=settings.request, created=_file_created(path)
            )
            batch.append((path, record, settings.source))
            known.add(resolved)
            if len(batch) >= _REBUILD_BATCH:
                report.added += store.add_many(batch)
                batch.clear()
    report.added += store.add_many(batch)
    return report


def remove_stale_partial_files(outputs_dir: Path, max_age_s: float = STALE_PART_AGE_S) -> int:
    """Delete temporary files left by a killed writer (older than ``max_age_s``)."""
    removed = 0
    if not outputs_dir.is_dir():
        return 0
    now = time.time()
    for part in outputs_dir.rglob(".*.part"):
        with contextlib.suppress(OSError):
            if now - part.stat().st_mtime > max_age_s:
                part.unlink()
                removed += 1
    return removed


def _open_checked(database: Path) -> HistoryStore:
    """Open the store and read from it once, so a damaged file shows itself now."""
    store = HistoryStore(database)
    try:
        store.count()
        store.page(limit=1)
    except BaseException:
        store.close()
        raise
    return store


def _image_files(folder: Path) -> Iterable[Path]:
    if folder.is_file():
        yield folder
        return
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                yield Path(root) / name


def _file_created(path: Path) -> str:
    return (
        datetime.fromtimestamp(path.stat().st_mtime).astimezone().isoformat(timespec="milliseconds")
    )
