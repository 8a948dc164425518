"""Training and generating take turns on the device: one queue for both.

A training run and a generation on one GPU would each get part of its memory and both
could fail (or crawl, swapping). So a training run the user starts waits for the
generations running or queued to finish (the window counts them down, and the wait can
be cancelled); then the generation queue is held, the worker lets go of its models
(their memory goes back to the device for the child process), and the run starts. While
it runs, new generations wait in the queue, saying why; when it ends, however it ends
(done, cancelled, failed, crashed), the queue goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from PySide6.QtCore import QObject, Signal

from sdstudio.ui.controller import GenerationController
from sdstudio.ui.training_process import TrainingProcess

log = logging.getLogger(__name__)

HOLD_REASON = "Waiting for the training run to finish"
"""What a generation queued during a training run says."""


class DeviceShare(QObject):
    """Gives the device to a training run when the generation queue is empty, and holds
    the queue while the run goes on. Without a controller (a window on its own) the
    device is the run's at once.

    A run asks with :meth:`request`; ``ready`` says the device is its own (the queue
    held, the worker's models let go); then the run is launched (:meth:`launch`) or
    given up (:meth:`give_up`, as a run still waiting can be).
    """

    waiting = Signal(int)
    """The number of generations the run waits for, again whenever it changes; 0 while
    the worker lets go of its models."""
    ready = Signal()
    """The device is the run's: launch it (or give up)."""
    launched = Signal()
    """The run's child process was started."""

    def __init__(
        self, controller: GenerationController | None = None, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.controller = controller
        self._process: TrainingProcess | None = None
        self._state = "free"
        """``free``, ``waiting`` (for generations), ``freeing`` (the worker's memory),
        ``ready`` or ``training``."""
        self._count = -1
        if controller is not None:
            controller.jobs_changed.connect(self._count_jobs)
            controller.idle.connect(self._on_idle)
            controller.memory_freed.connect(self._on_memory_freed)

    @property
    def pending(self) -> bool:
        """Whether a run asked for the device and has not launched (nor given up)."""
        return self._state in ("waiting", "freeing", "ready")

    @property
    def busy(self) -> bool:
        """Whether a run waits, is ready, or runs."""
        return self._state != "free"

    def generations_ahead(self) -> int:
        """Generations running or queued (a run asking now waits for them)."""
        return len(self.controller.jobs) if self.controller is not None else 0

    def request(self) -> bool:
        """Ask for the device for a training run: ``ready`` follows once the generations
        running or queued have finished (``waiting`` counts them) and the worker has let
        go of its models. Returns ``False`` when a run already has it or asked."""
        if self.busy:
            return False
        if self.controller is None or not self.controller.thread_running:
            self._state = "ready"
            self.ready.emit()
            return True
        self._state = "waiting"
        self._count = -1
        if not self._count_jobs():
            self._take_device()
        return True

    def launch(self, process: TrainingProcess, arguments: Sequence[str]) -> None:
        """Run ``sdstudio-cli ARGUMENTS`` in ``process`` (after ``ready``); the queue goes
        on when it ends, however it ends."""
        if self._state != "ready" or process.running:
            raise RuntimeError("A training run starts once the device is ready for it.")
        self._state = "training"
        self._process = process
        process.finished.connect(self._on_finished)
        self.launched.emit()
        process.start_cli(list(arguments))

    def give_up(self) -> bool:
        """Withdraw a request that has not launched (the queue goes on); returns whether
        there was one."""
        if not self.pending:
            return False
        held = self._state in ("freeing", "ready")
        self._state = "free"
        if held and self.controller is not None:
            self.controller.release()
        return True

    def _count_jobs(self) -> int:
        """Tell the generations the run waits for (when waiting); returns their number."""
        if self._state != "waiting":
            return 0
        count = self.generations_ahead()
        if count and count != self._count:
            self._count = count
            self.waiting.emit(count)
        return count

    def _on_idle(self) -> None:
        if self._state == "waiting" and not self.generations_ahead():
            self._take_device()

    def _take_device(self) -> None:
        """Hold the queue and have the worker let go of its models; ready once it has."""
        assert self.controller is not None
        self._state = "freeing"
        self.controller.hold(HOLD_REASON)
        self.waiting.emit(0)
        self.controller.free_memory()

    def _on_memory_freed(self) -> None:
        if self._state == "freeing":
            self._state = "ready"
            self.ready.emit()

    def _on_finished(self) -> None:
        process = self._process
        if process is not None:
            process.finished.disconnect(self._on_finished)
        self._process = None
        self._state = "free"
        if self.controller is not None:
            self.controller.release()
