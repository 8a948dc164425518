"""The GUI-thread side of generation: a visible job queue in front of the worker thread."""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from PySide6.QtCore import QObject, QThread, Signal, Slot

from sdstudio.engine.request import GenerationRequest
from sdstudio.ui.worker import GenerationWorker


@dataclass(frozen=True, slots=True)
class Job:
    """A request waiting for, or running on, the worker.

    ``inputs`` are images the request names by path that are still to be
    written (by the worker, off the GUI thread) before it runs.
    """

    id: int
    request: GenerationRequest
    inputs: tuple[tuple[Path, Image.Image], ...] = ()
    recorded_device: str | None = None
    """For an exact re-run: the device (and precision) the image's record names, so it
    runs in the same precision; ``None``: the app's own choice."""


class GenerationController(QObject):
    """Owns the worker thread; runs jobs one after another in queue order.

    The worker's signals are re-emitted here, on the GUI thread; ``queue_changed``
    tells how many jobs wait behind the running one, and ``jobs_changed`` that
    :attr:`jobs` changed (a job added, started, ended, cancelled or moved).
    """

    job_started = Signal(int)
    queue_changed = Signal(int)
    jobs_changed = Signal()
    status = Signal(int, str)
    progress = Signal(int, int, int, int, int, object)
    image_saved = Signal(int, object)
    finished = Signal(int, list)
    cancelled = Signal(int)
    failed = Signal(int, str)
    warmed_up = Signal()
    idle = Signal()
    """No job runs, and none will start now: the queue is empty or held."""
    memory_freed = Signal()
    """The worker let go of its models (see :meth:`free_memory`)."""
    _run = Signal(int, object, object, object)
    _shutdown = Signal()
    _warm_up = Signal()
    _free_memory = Signal()

    def __init__(self, worker: GenerationWorker, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ids = itertools.count(1)
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._cancelling: set[int] = set()
        self._hold_reason = ""
        self._thread = QThread()
        self._thread.setObjectName("generation-worker")
        self._worker = worker
        worker.moveToThread(self._thread)
        self._run.connect(worker.run)
        self._shutdown.connect(worker.shutdown)
        self._warm_up.connect(worker.warm_up)
        self._free_memory.connect(worker.free_memory)
        worker.memory_freed.connect(self.memory_freed)
        worker.warmed_up.connect(self.warmed_up)
        worker.status.connect(self.status)
        worker.progress.connect(self.progress)
        worker.image_saved.connect(self.image_saved)
        worker.finished.connect(self._on_finished)
        worker.cancelled.connect(self._on_cancelled)
        worker.failed.connect(self._on_failed)
        self._thread.start()

    @property
    def running(self) -> Job | None:
        """The job on the worker, if any."""
        return self._running

    @property
    def thread_running(self) -> bool:
        """Whether the worker thread is still running."""
        return self._thread.isRunning()

    @property
    def waiting(self) -> list[Job]:
        """Jobs queued behind the running one, in the order they will run."""
        return list(self._waiting)

    @property
    def jobs(self) -> list[Job]:
        """Every job: the running one first, then those waiting."""
        return ([self._running] if self._running else []) + list(self._waiting)

    def is_cancelling(self, job_id: int) -> bool:
        """Whether the running job was asked to stop and has not stopped yet."""
        return job_id in self._cancelling

    @property
    def hold_reason(self) -> str:
        """Why no job starts (empty when jobs run as usual)."""
        return self._hold_reason

    def hold(self, reason: str) -> None:
        """Start no job until :meth:`release` (the running one goes on): something else,
        a training run, has the device. Jobs submitted meanwhile wait, told ``reason``."""
        self._hold_reason = reason
        for job in self._waiting:
            self.status.emit(job.id, reason)
        self.jobs_changed.emit()

    def release(self) -> None:
        """Start jobs again after :meth:`hold`."""
        if self._hold_reason:
            self._hold_reason = ""
            self.jobs_changed.emit()
            self._start_next()

    def free_memory(self) -> None:
        """Have the worker let go of its models and empty the device cache (between
        jobs); ``memory_freed`` follows."""
        self._free_memory.emit()

    def warm_up(self) -> None:
        """Have the worker import torch and diffusers now (see the worker)."""
        self._warm_up.emit()

    def submit(
        self,
        request: GenerationRequest,
        inputs: tuple[tuple[Path, Image.Image], ...] = (),
        *,
        recorded_device: str | None = None,
    ) -> int:
        """Queue a request (and the input images it needs written); returns its job id.
        ``recorded_device``: an exact re-run's recorded device (see :class:`Job`)."""
        job = Job(next(self._ids), request, inputs, recorded_device)
        self._waiting.append(job)
        self._changed()
        if self._hold_reason:
            self.status.emit(job.id, self._hold_reason)
        self._start_next()
        return job.id

    def move(self, job_id: int, offset: int) -> bool:
        """Move a waiting job ``offset`` places towards the front (negative) or the
        back (positive) of the queue, stopping at either end. Returns whether it moved."""
        order = list(self._waiting)
        index = next((i for i, job in enumerate(order) if job.id == job_id), None)
        if index is None:
            return False
        target = max(0, min(len(order) - 1, index + offset))
        if target == index:
            return False
        order.insert(target, order.pop(index))
        self._waiting = deque(order)
        self._changed()
        return True

    def cancel(self, job_id: int | None = None) -> None:
        """Cancel a job (the running one by default); a waiting job is dropped."""
        if job_id is None or (self._running and self._running.id == job_id):
            if self._running is not None and self._running.id not in self._cancelling:
                self._cancelling.add(self._running.id)
                self._worker.cancel(self._running.id)
                self.jobs_changed.emit()
            return
        for job in list(self._waiting):
            if job.id == job_id:
                self._waiting.remove(job)
                self._changed()
                self.cancelled.emit(job_id)

    def cancel_all(self) -> None:
        """Drop every waiting job and cancel the running one."""
        for job in list(self._waiting):
            self.cancel(job.id)
        self.cancel()

    def shutdown(self, timeout_ms: int = 30_000) -> None:
        """Cancel everything, free the model and stop the thread; no job runs after."""
        self.cancel_all()
        if self._thread.isRunning():
            # Runs after the current job, which stops within one step, and
            # ends the thread's event loop.
            self._shutdown.emit()
            if not self._thread.wait(timeout_ms):
                self._thread.terminate()
                self._thread.wait()
        if self._running is not None:
            self._running = None
            self._cancelling.clear()
            self._changed()

    def _changed(self) -> None:
        self.queue_changed.emit(len(self._waiting))
        self.jobs_changed.emit()

    def _start_next(self) -> None:
        if self._running is not None or not self._thread.isRunning():
            return
        if not self._waiting or self._hold_reason:
            self.idle.emit()
            return
        self._running = self._waiting.popleft()
        self._changed()
        self.job_started.emit(self._running.id)
        job = self._running
        self._run.emit(job.id, job.request, job.inputs, job.recorded_device)

    @Slot(int, list)
    def _on_finished(self, job_id: int, paths: list) -> None:
        self._end(job_id)
        self.finished.emit(job_id, paths)
        self._start_next()

    @Slot(int)
    def _on_cancelled(self, job_id: int) -> None:
        self._end(job_id)
        self.cancelled.emit(job_id)
        self._start_next()

    @Slot(int, str)
    def _on_failed(self, job_id: int, message: str) -> None:
        self._end(job_id)
        self.failed.emit(job_id, message)
        self._start_next()

    def _end(self, job_id: int) -> None:
        self._running = None
        self._cancelling.discard(job_id)
        self.jobs_changed.emit()
