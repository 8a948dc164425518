"""The memory each listed model needs, estimated off the GUI thread for the model manager.

Only file headers are read (a few kilobytes per file), on a pool thread; results come
back through a signal and are kept while the window is open, so listing again shows
them at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from sdstudio.engine.devices import DeviceConfig
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.settings import Settings

log = logging.getLogger(__name__)


class MemoryEstimator(QObject):
    """Estimates models' memory needs on a pool thread.

    ``estimated`` carries a model's path, the figure to show (``33.7 GB``), a tooltip
    with the details and whether it will not fit this computer.
    """

    estimated = Signal(str, str, str, bool)

    def __init__(self, paths: AppPaths, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._paths = paths
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._cancel = threading.Event()
        self._known: dict[str, tuple[str, str, bool]] = {}
        self.estimated.connect(self._remember)

    def estimate(self, settings: Settings, models: Sequence[tuple[str, str]]) -> None:
        """Estimate ``models`` (path and family id): known ones are emitted at once, the
        others after a running batch is stopped."""
        self._cancel.set()
        self._cancel = threading.Event()
        waiting = []
        for path, family_id in models:
            if path in self._known:
                self.estimated.emit(path, *self._known[path])
            else:
                waiting.append((path, family_id))
        if waiting:
            self._pool.start(_Estimate(self._paths, settings, waiting, self._cancel, self))

    def shutdown(self) -> None:
        """Stop estimating and wait for the pool thread."""
        self._cancel.set()
        self._pool.clear()
        self._pool.waitForDone()

    def _remember(self, path: str, text: str, tip: str, warn: bool) -> None:
        self._known[path] = (text, tip, warn)


class _Estimate(QRunnable):
    def __init__(
        self,
        paths: AppPaths,
        settings: Settings,
        models: list[tuple[str, str]],
        cancel: threading.Event,
        signals: MemoryEstimator,
    ) -> None:
        super().__init__()
        self._paths = paths
        self._settings = settings
        self._models = models
        self._cancel = cancel
        self._signals = signals

    def run(self) -> None:
        from sdstudio.engine.errors import SdStudioError
        from sdstudio.engine.memory import Fit, format_gb, machine_memory, model_needs
        from sdstudio.engine.models.catalog import network_folders

        try:
            config = _device(self._settings.device)
            machine = machine_memory(config.device)
            text_dirs = network_folders(self._paths, self._settings, "text_encoder")
            vae_dirs = network_folders(self._paths, self._settings, "vae")
        except Exception:  # an estimate must never take the window down
            log.exception("Measuring this computer's memory failed")
            return
        for path, family_id in self._models:
            if self._cancel.is_set():
                return
            try:
                needs = model_needs(
                    Path(path),
                    config,
                    machine,
                    family_id=family_id,
                    text_dirs=text_dirs,
                    vae_dirs=vae_dirs,
                )
            except (SdStudioError, OSError) as error:
                self._signals.estimated.emit(path, "", str(error), False)
                continue
            except Exception:
                log.exception("Estimating the memory of %s failed", path)
                continue
            text = format_gb(needs.estimate.total)
            if not needs.estimate.certain:
                text = "~" + text
            self._signals.estimated.emit(path, text, needs.note, needs.fit is Fit.NO)


def _device(choice: str) -> DeviceConfig:
    """The device models would run on here: the settings' choice where available."""
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.errors import DeviceError

    try:
        return choose_device(choice)
    except DeviceError:
        return choose_device("auto")
