"""The image library: outputs on disk plus their history rows, kept in step.

Each image is written whole to the outputs folder first, then recorded. A
process killed at any moment leaves, at worst, an image not yet recorded
(which ``rebuild`` picks up), never a row without its file or half an image.
Because every image carries its full settings, the database can always be
rebuilt from the images: a damaged database is moved aside and rebuilt, and a
missing or empty one is filled from the outputs folder. A database that is
only locked, on a full or read-only disk, or behind an I/O error is left as it
is and reported (:class:`HistoryUnavailable`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.generation import GeneratedImage
from sdstudio.engine.history.cleanup import remove_stale_partial_files
from sdstudio.engine.history.errors import HistoryDamaged, HistoryError, HistoryUnavailable
from sdstudio.engine.history.store import HistoryEntry, HistoryStore
from sdstudio.engine.metadata import read_image_settings
from sdstudio.engine.metadata.record import ImageRecord
from sdstudio.engine.outputs import OutputWriter

log = logging.getLogger(__name__)

__all__ = [
    "MEMORY",
    "ImageLibrary",
    "RebuildReport",
    "rebuild",
    "remove_file",
    "remove_stale_partial_files",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MEMORY = Path(":memory:")
"""The database of a library that keeps its history in memory only."""
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
        cls,
        database: Path,
        outputs_dir: Path,
        *,
        on_notice: Callable[[str], None] | None = None,
        data_folders: Iterable[Path] | None = None,
        check_integrity: bool = False,
    ) -> ImageLibrary:
        """Open the library, first removing temporary files a killed writer left.

        A damaged database (unreadable, or failing ``PRAGMA quick_check`` when
        ``check_integrity``) is moved aside and rebuilt from the images; a
        missing or empty one is filled from them. Each repair is told through
        ``on_notice``. A database that cannot be used now (locked, disk full,
        read-only, I/O error) raises :class:`HistoryUnavailable` and is left
        untouched. ``data_folders`` (default: the database's folder) are the
        other folders whose temporary files are removed.
        """
        in_memory = database == MEMORY
        if data_folders is None:
            data_folders = () if in_memory else (database.parent,)
        remove_stale_partial_files(outputs_dir, data_folders)
        notice = on_notice or (lambda _message: None)
        fresh = not in_memory and _is_empty(database)
        try:
            store = _open_checked(database, check_integrity)
        except HistoryDamaged as error:
            aside = _move_aside(database, error)
            store = HistoryStore(database)
            _restore(
                store,
                outputs_dir,
                f"{error} It was moved to {aside.name} and rebuilt from the images",
                notice,
            )
        else:
            if store.repaired:
                notice(f"The history database was repaired: {', '.join(store.repaired)} rebuilt.")
            if fresh:
                _restore(
                    store,
                    outputs_dir,
                    "The history database was missing or empty; it was rebuilt from the images",
                    notice,
                    quiet_if_empty=True,
                )
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
            remove_file(Path(entry.path))
        return entry


def remove_file(path: Path) -> None:
    """Delete an image file; a link is removed itself, what it points to is kept.

    Raises :class:`HistoryError` if the file is there but cannot be removed.
    """
    try:
        os.unlink(path)  # never follows a link in the last part of the path
    except FileNotFoundError:
        return
    except OSError as error:
        raise HistoryError(
            f"The image was removed from the history but its file {path} could not be "
            f"deleted: {error.strerror or error}."
        ) from None


def rebuild(store: HistoryStore, folders: Iterable[Path]) -> RebuildReport:
    """Index every image with generation settings under ``folders``.

    Each image is recorded by its own path (a link as the link, not what it
    points to). An image that cannot be read or stored is reported in
    :attr:`RebuildReport.skipped` and the others are indexed; only a database
    that cannot be written at all stops the rebuild (:class:`HistoryError`).
    """
    report = RebuildReport()
    known = set(store.paths())
    batch: list[tuple[Path, ImageRecord, str]] = []

    def skipped(path: Path, reason: str) -> None:
        report.skipped.append((str(path), reason))

    for folder in folders:
        for path in sorted(_image_files(folder)):
            own = os.path.abspath(path)
            if own in known or (not os.path.islink(path) and _resolved(path) in known):
                report.already += 1
                continue
            try:
                batch.append(_indexed(path))
            except SdStudioError as error:
                skipped(path, str(error))
                continue
            except Exception as error:  # one odd file must not stop the rebuild
                log.warning("Reading %s failed", path, exc_info=True)
                skipped(path, f"{type(error).__name__}: {error}")
                continue
            known.add(own)
            if len(batch) >= _REBUILD_BATCH:
                report.added += store.add_many(batch, skipped)
                batch.clear()
    report.added += store.add_many(batch, skipped)
    return report


def _indexed(path: Path) -> tuple[Path, ImageRecord, str]:
    settings = read_image_settings(path)
    record = settings.record or ImageRecord(request=settings.request, created=_file_created(path))
    return path, record, settings.source


def _restore(
    store: HistoryStore,
    outputs_dir: Path,
    what: str,
    notice: Callable[[str], None],
    *,
    quiet_if_empty: bool = False,
) -> None:
    """Rebuild ``store`` from the outputs and tell how it went; never raises."""
    try:
        report = rebuild(store, [outputs_dir]) if outputs_dir.is_dir() else RebuildReport()
    except Exception as error:  # start-up goes on with what was indexed
        log.warning("Rebuilding the history from %s failed", outputs_dir, exc_info=True)
        notice(
            f"{what}, but that stopped early ({error}). Run `sdstudio-cli history rebuild` "
            "to index the rest."
        )
        return
    if quiet_if_empty and not report.added and not report.skipped:
        return
    skipped = f", {len(report.skipped)} could not be read" if report.skipped else ""
    message = f"{what}: {report.added} images restored{skipped}."
    log.warning(message)
    notice(message)


def _open_checked(database: Path, check_integrity: bool) -> HistoryStore:
    """Open the store and read from it once, so a damaged file shows itself now."""
    store = HistoryStore(database)
    try:
        store.count()
        store.page(limit=1)
        if check_integrity:
            result = store.quick_check()
            if result != "ok":
                raise HistoryDamaged(f"The history database {database} is damaged ({result}).")
    except BaseException:
        store.close()
        raise
    return store


def _move_aside(database: Path, error: HistoryDamaged) -> Path:
    """Rename a damaged database (and its journal files) so that a new one can start."""
    aside = database.with_name(f"{database.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{database}{suffix}")
            if os.path.lexists(source):
                os.replace(source, Path(f"{aside}{suffix}"))
    except OSError as problem:
        raise HistoryUnavailable(
            f"{error} It could not be moved aside to be rebuilt: {problem.strerror or problem}."
        ) from None
    log.warning("Moved the damaged history database %s to %s: %s", database, aside, error)
    return aside


def _is_empty(database: Path) -> bool:
    """Whether the database is missing or an empty file (a new one will be created)."""
    try:
        return os.stat(database).st_size == 0
    except FileNotFoundError:
        return True
    except OSError:
        return False  # opening it reports the problem


def _resolved(path: Path) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return ""


def _image_files(folder: Path) -> Iterable[Path]:
    if folder.is_file():
        yield folder
        return
    for root, dirs, files in os.walk(folder):
        # Grids (sdstudio's X/Y/Z plots, A1111's txt2img-grids) show images that are
        # recorded on their own; a grid is not a generation.
        dirs[:] = [d for d in dirs if not _is_grid_folder(d)]
        for name in files:
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                yield Path(root) / name


def _is_grid_folder(name: str) -> bool:
    """``grids`` or A1111's ``txt2img-grids`` / ``img2img-grids``."""
    lowered = name.lower()
    return lowered == "grids" or lowered.endswith("-grids")


def _file_created(path: Path) -> str:
    return (
        datetime.fromtimestamp(path.stat().st_mtime).astimezone().isoformat(timespec="milliseconds")
    )
