"""Finding the user's models off the GUI thread, for the model picker."""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from sdstudio.engine.paths import AppPaths
from sdstudio.engine.settings import Settings

log = logging.getLogger(__name__)


class ModelListLoader(QObject):
    """Scans model folders and the Hugging Face cache on a pool thread.

    ``loaded`` carries the :class:`ModelEntry` list of every kind (plain
    Python objects); the GUI thread turns them into the pickers' items.
    """

    loaded = Signal(list)
    scanned = Signal(object)
    """The whole :class:`Catalog`, with what was skipped; emitted before ``loaded``."""

    def __init__(self, paths: AppPaths, settings: Settings, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._paths = paths
        self._settings = settings
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)

    def refresh(self) -> None:
        """Scan again; ``loaded`` follows."""
        self._pool.start(_Scan(self._paths, self._settings, self.scanned, self.loaded))

    def reload(self, settings: Settings) -> None:
        """Scan again with changed settings (model folders added or removed)."""
        self._settings = settings
        self.refresh()

    def shutdown(self) -> None:
        """Wait for a running scan."""
        self._pool.clear()
        self._pool.waitForDone()


class _Scan(QRunnable):
    def __init__(self, paths: AppPaths, settings: Settings, scanned: Signal, done: Signal) -> None:
        super().__init__()
        self._paths = paths
        self._settings = settings
        self._scanned = scanned
        self._done = done

    def run(self) -> None:
        from sdstudio.engine.models.catalog import list_models

        try:
            catalog = list_models(self._paths, self._settings)
        except Exception:  # a scan must never take the app down
            log.exception("Scanning for models failed")
            return
        self._scanned.emit(catalog)
        self._done.emit(list(catalog.entries))
