"""Gallery thumbnails: made with Pillow on a thread pool, turned into pixmaps on the GUI thread.

A worker only opens the file, shrinks it and hands back a PIL image through a
queued signal; no Qt image type is made off the GUI thread. Pixmaps are kept in
an in-memory LRU cache, and (optionally) small JPEG copies are kept on disk,
named by a hash of the path, size and modification time, so a restart is fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections import OrderedDict
from pathlib import Path
from threading import Event

from PIL import Image
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QPixmap

from sdstudio.engine.images import open_checked, to_rgb
from sdstudio.ui.canvas import pil_to_qimage

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 160
CACHE_CAPACITY = 1000
"""Pixmaps kept in memory: at most about 100 kB each, so about 100 MB in all."""
MAX_PENDING = 256
_MAX_THREADS = 4


def disk_cache_name(path: str, size: int, stat: os.stat_result) -> str:
    """The disk cache file name of a thumbnail: changes whenever the image file does."""
    key = f"{path}\0{size}\0{stat.st_mtime_ns}\0{stat.st_size}".encode()
    return hashlib.sha1(key, usedforsecurity=False).hexdigest() + ".jpg"


def make_thumbnail(path: str, size: int, cache_dir: Path | None = None) -> Image.Image | None:
    """A thumbnail of the image at ``path`` no larger than ``size`` pixels, or ``None``.

    Runs on any thread and never raises: an unreadable, missing or too large
    file (see :func:`~sdstudio.engine.images.open_checked`) gives ``None``.
    """
    try:
        stat = os.stat(path)
        cached = cache_dir / disk_cache_name(path, size, stat) if cache_dir else None
        if cached is not None:
            with contextlib.suppress(OSError), Image.open(cached, formats=["JPEG"]) as hit:
                hit.load()
                return hit
        # PNG, JPEG or WebP only, checked for size after a JPEG's reduced decode.
        with open_checked(path, draft=(size, size)) as source:
            source.load()  # the first frame only
            source.thumbnail((size, size))
            alpha = source.mode in ("RGBA", "LA", "PA") or "transparency" in source.info
            image = source.convert("RGBA") if alpha else to_rgb(source)
        if cached is not None:
            _write_cache(cached, image)
        return image
    except Exception as error:  # a bad file must only cost its thumbnail
        log.debug("No thumbnail for %s: %s", path, error)
        return None


def _write_cache(target: Path, image: Image.Image) -> None:
    partial = target.with_name(f".{target.name}.{os.getpid()}.{id(image)}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        image.convert("RGB").save(partial, "JPEG", quality=88)
        os.replace(partial, target)
    except OSError as error:
        log.debug("Could not cache a thumbnail in %s: %s", target, error)
        with contextlib.suppress(OSError):
            partial.unlink()


class _Relay(QObject):
    """Carries finished thumbnails from pool threads back to the GUI thread."""

    done = Signal(str, object, object)
    """(path, PIL image or None, the job's cancel flag)"""


class _ThumbnailJob(QRunnable):
    """Makes one thumbnail on a pool thread and reports it through the relay.

    The only state shared with the GUI thread is ``cancelled``, a thread-safe
    flag: a job whose tile scrolled away long ago does no work.
    """

    def __init__(
        self, relay: _Relay, path: str, size: int, cache_dir: Path | None, cancelled: Event
    ) -> None:
        super().__init__()
        self._relay = relay
        self._path = path
        self._size = size
        self._cache_dir = cache_dir
        self._cancelled = cancelled

    def run(self) -> None:
        if self._cancelled.is_set():
            return
        image = make_thumbnail(self._path, self._size, self._cache_dir)
        self._relay.done.emit(self._path, image, self._cancelled)


class ThumbnailLoader(QObject):
    """Hands out thumbnail pixmaps by path, loading missing ones in the background.

    :meth:`pixmap` answers at once: the cached thumbnail, or a placeholder while
    the thumbnail is made (``ready`` is emitted with the path when it arrives).
    Files that cannot be read get the :attr:`missing` placeholder. The newest
    request runs first and at most ``max_pending`` wait (older ones are
    dropped, and asked again if their tile is painted again), so scrolling
    fast through thousands of images never builds a backlog. Call
    :meth:`shutdown` before the application quits.
    """

    ready = Signal(str)
    """A thumbnail for this path is now in the cache."""

    def __init__(
        self,
        cache_dir: Path | None = None,
        *,
        size: int = THUMBNAIL_SIZE,
        capacity: int = CACHE_CAPACITY,
        max_pending: int = MAX_PENDING,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.size = size
        self.capacity = capacity
        self.max_pending = max_pending
        self.cache_dir = cache_dir
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(
            max(1, min(_MAX_THREADS, QThreadPool.globalInstance().maxThreadCount()))
        )
        self._cache: OrderedDict[str, QPixmap] = OrderedDict()
        self._pending: OrderedDict[str, Event] = OrderedDict()
        self._serial = 0
        self._closed = False
        self._relay = _Relay(self)
        self._relay.done.connect(self._on_done)
        self.placeholder = _placeholder(size, missing=False)
        self.missing = _placeholder(size, missing=True)

    def pixmap(self, path: str) -> QPixmap:
        """The thumbnail of ``path`` if cached; otherwise a placeholder, and it is requested."""
        cached = self._cache.get(path)
        if cached is not None:
            self._cache.move_to_end(path)
            return cached
        self.request(path)
        return self.placeholder

    def cached(self, path: str) -> QPixmap | None:
        """The cached thumbnail of ``path``, without requesting it."""
        return self._cache.get(path)

    def request(self, path: str) -> None:
        """Start making the thumbnail of ``path`` unless it is cached or on its way."""
        if self._closed or path in self._pending or path in self._cache:
            return
        cancelled = Event()
        self._pending[path] = cancelled
        self._serial = min(self._serial + 1, 2**31 - 1)
        job = _ThumbnailJob(self._relay, path, self.size, self.cache_dir, cancelled)
        self.pool.start(job, self._serial)
        while len(self._pending) > self.max_pending:
            _oldest, flag = self._pending.popitem(last=False)
            flag.set()

    def forget(self, path: str) -> None:
        """Drop the cached thumbnail of ``path`` (the file changed or was deleted)."""
        self._cache.pop(path, None)

    @property
    def pending(self) -> int:
        """How many thumbnails are on their way."""
        return len(self._pending)

    def shutdown(self) -> None:
        """Drop queued requests and wait for running ones; no pool thread runs afterwards."""
        self._closed = True
        for flag in self._pending.values():
            flag.set()
        self.pool.clear()
        self.pool.waitForDone()
        self._pending.clear()

    @Slot(str, object, object)
    def _on_done(self, path: str, image: object, cancelled: object) -> None:
        if self._closed or self._pending.get(path) is not cancelled:
            return  # dropped while it ran, or asked again since
        del self._pending[path]
        if isinstance(image, Image.Image):
            pixmap = QPixmap.fromImage(to_qimage(image))
        else:
            pixmap = self.missing
        self._cache[path] = pixmap
        self._cache.move_to_end(path)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        self.ready.emit(path)


def to_qimage(image: Image.Image) -> QImage:
    """A QImage of a thumbnail (GUI thread); opaque images stay opaque, so they draw fast."""
    if image.mode != "RGB":
        return pil_to_qimage(image)
    data = image.tobytes("raw", "RGB")
    return QImage(
        data, image.width, image.height, image.width * 3, QImage.Format.Format_RGB888
    ).copy()


def _placeholder(size: int, *, missing: bool) -> QPixmap:
    """A neutral tile shown while a thumbnail loads, or crossed out when there is none."""
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(0, 0, 0, 0))
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(QPen(QColor(128, 128, 128, 140), 2))
    painter.setBrush(QColor(128, 128, 128, 50))
    margin = size // 10
    painter.drawRoundedRect(margin, margin, size - 2 * margin, size - 2 * margin, 8, 8)
    if missing:
        inner = size // 3
        painter.drawLine(inner, inner, size - inner, size - inner)
        painter.drawLine(size - inner, inner, inner, size - inner)
    painter.end()
    return pixmap
