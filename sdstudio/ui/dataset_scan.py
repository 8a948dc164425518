"""Reading a training dataset folder off the GUI thread: every image is decoded once to
find the unreadable ones, which takes a while for a few hundred photos."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from sdstudio.engine.errors import SdStudioError


@dataclass(frozen=True, slots=True)
class DatasetSummary:
    """What a dataset folder holds, as the trainer will see it."""

    folder: str
    images: tuple[Path, ...] = ()
    """Images that will be trained on."""
    captioned: int = 0
    """How many of them have a caption file."""
    skipped: tuple[str, ...] = field(default_factory=tuple)
    """One sentence per file or folder left out (unreadable images among them)."""
    problem: str = ""
    """Why the folder cannot be trained on at all (empty when it can)."""

    def text(self) -> str:
        """One line for the dialog."""
        if self.problem:
            return self.problem
        line = f"{len(self.images)} images, {self.captioned} with captions"
        if self.skipped:
            line += f"; {len(self.skipped)} left out (unreadable or not used)"
        return line


def summarize(folder: str) -> DatasetSummary:
    """Scan ``folder`` as the trainer does (images directly or in ``N_name`` folders)."""
    from sdstudio.engine.training.datasets import CAPTION_SUFFIXES, scan_dataset

    try:
        dataset = scan_dataset(folder)
    except SdStudioError as error:
        return DatasetSummary(folder, problem=str(error))
    except OSError as error:
        return DatasetSummary(folder, problem=f"The dataset folder could not be read: {error}")
    images = tuple(image.path for image in dataset.images)
    captioned = sum(
        any(path.with_suffix(suffix).is_file() for suffix in CAPTION_SUFFIXES) for path in images
    )
    return DatasetSummary(folder, images, captioned, tuple(dataset.skipped))


class DatasetScanner(QObject):
    """Scans one folder at a time on a pool thread; ``scanned`` carries a
    :class:`DatasetSummary`. A result for a folder no longer asked about is dropped."""

    scanned = Signal(object)
    _result = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._wanted = ""
        self._result.connect(self._deliver)

    def scan(self, folder: str) -> None:
        """Scan ``folder``; ``scanned`` follows."""
        self._wanted = folder
        self._pool.clear()
        self._pool.start(_Scan(folder, self._result))

    def wait(self) -> None:
        """Wait for a running scan (before the scanner goes away)."""
        self._pool.clear()
        self._pool.waitForDone()

    def _deliver(self, summary: DatasetSummary) -> None:
        if summary.folder == self._wanted:
            self.scanned.emit(summary)


class _Scan(QRunnable):
    def __init__(self, folder: str, result: Signal) -> None:
        super().__init__()
        self._folder = folder
        self._result = result

    def run(self) -> None:
        self._result.emit(summarize(self._folder))
