"""Writing finished images where users can find them.

Images go to the outputs folder in one sub-folder per day, named so that they
sort by time and carry their seed (``2026-11-22/20261122-173328-512_1234.png``).
Each file is written whole or not at all and never replaces another.
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

from sdstudio.engine.fileio import write_atomically
from sdstudio.engine.generation import GeneratedImage
from sdstudio.engine.metadata import png_info

_MAX_NAME_TRIES = 1000


class OutputWriter:
    """Saves generated images with their metadata as PNG files."""

    def __init__(self, folder: Path, *, by_date: bool = True) -> None:
        self.folder = folder
        self.by_date = by_date

    def write(self, result: GeneratedImage, *, now: datetime | None = None) -> Path:
        """Write one image atomically and return its path."""
        now = now or datetime.now()
        folder = self.folder / now.strftime("%Y-%m-%d") if self.by_date else self.folder
        buffer = io.BytesIO()
        result.image.save(buffer, format="PNG", pnginfo=png_info(result.record), compress_level=4)
        data = buffer.getvalue()
        stem = f"{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}_{result.record.request.seed}"
        for attempt in range(_MAX_NAME_TRIES):
            name = f"{stem}.png" if attempt == 0 else f"{stem}-{attempt}.png"
            try:
                return write_atomically(folder / name, data, overwrite=False)
            except FileExistsError:
                continue
        raise FileExistsError(f"Could not find a free file name for {stem} in {folder}.")
