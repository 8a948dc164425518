"""The status bar's account of the queue: progress, speed, time left and the worker's notes."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar

from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.ui.controller import Job

RECENT_STEPS = 5
"""Speed is the mean of this many latest step times."""
NOTE_TIMEOUT_MS = 10_000
"""How long a note from the worker stays once the steps start."""


class JobQueue(Protocol):
    """What the status reads from the controller."""

    @property
    def running(self) -> Job | None: ...

    @property
    def waiting(self) -> list[Job]: ...


def denoising_steps(request: GenerationRequest) -> int:
    """The steps one image of ``request`` takes: image-to-image and inpainting run
    only the last ``strength`` part of the schedule."""
    if request.mode is Mode.TXT2IMG:
        return request.steps
    return max(1, int(request.steps * request.strength))


def format_duration(seconds: float) -> str:
    """``14 s``, ``2 min``, ``1 h 5 min``."""
    if seconds < 59.5:
        return f"{max(0, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


class ProgressStatus(QObject):
    """Owns the progress bar and the speed and queue labels of the status bar.

    Speed is measured only between consecutive steps of one image, so loading
    a model (before the first step) and saving an image (between images) do
    not count: nothing is estimated until two steps have been seen. Time left
    covers the running job and, at the same speed scaled by pixel count, every
    job waiting behind it. A note the worker sends before the steps start
    ("Loading …") is cleared when they start.
    """

    def __init__(
        self,
        queue: JobQueue,
        status_bar: QStatusBar,
        clock: Callable[[], float] = time.perf_counter,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.queue = queue
        self.clock = clock
        self._status_bar = status_bar
        self.bar = QProgressBar(textVisible=True)
        self.bar.setMaximumWidth(260)
        self.bar.setFormat("Ready")
        self.bar.setValue(0)
        self.label = QLabel()
        self.label.setMinimumWidth(170)
        self.label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.queue_label = QLabel()
        status_bar.addPermanentWidget(self.queue_label)
        status_bar.addPermanentWidget(self.label)
        status_bar.addPermanentWidget(self.bar)
        self.job_id: int | None = None
        self._request: GenerationRequest | None = None
        self._last: tuple[float, int, int] | None = None
        self._times: deque[float] = deque(maxlen=RECENT_STEPS)
        self._steps_left = 0
        self._note = ""

    @property
    def seconds_per_step(self) -> float | None:
        """The running job's recent time per step; None before two steps were seen."""
        return sum(self._times) / len(self._times) if self._times else None

    def start(self, job: Job | None) -> None:
        """A job went to the worker: timing starts afresh."""
        self.job_id = job.id if job is not None else None
        self._request = job.request if job is not None else None
        self._last = None
        self._times.clear()
        self._steps_left = 0
        self.bar.setRange(0, 0)
        self.bar.setFormat("Starting…")
        self.label.setText("")
        self.label.setToolTip("")

    def show_note(self, job_id: int, message: str) -> None:
        """Show a message from the worker (loading a model, a note about the inputs)."""
        self._note = message
        self._status_bar.showMessage(message)

    def step(self, job_id: int, step: int, total: int, index: int, batch: int) -> None:
        """A step of the running job is done."""
        now = self.clock()
        if self._last is None:
            self._end_note()
        elif self._last[1:] == (index, step - 1):
            self._times.append(now - self._last[0])
        self._last = (now, index, step)
        self.bar.setRange(0, total)
        self.bar.setValue(step)
        prefix = f"image {index + 1}/{batch} · " if batch > 1 else ""
        upscaling = self._request is not None and self._request.mode is Mode.UPSCALE
        self.bar.setFormat(f"{prefix}{'tile' if upscaling else 'step'} {step}/{total}")
        self._steps_left = (total - step) + (batch - index - 1) * total
        self._show_time_left()

    def queue_changed(self, waiting: int) -> None:
        """The number of waiting jobs (or their order) changed."""
        self.queue_label.setText(f"{waiting} queued" if waiting else "")
        self._show_time_left()

    def end(self, text: str) -> None:
        """A job ended and no other runs: show ``text`` ("Done", "Cancelled", …)."""
        self.job_id = None
        self._request = None
        self._last = None
        self._times.clear()
        self._end_note()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.bar.setFormat(text)
        self.label.setText("")
        self.label.setToolTip("")

    def _end_note(self) -> None:
        """The steps started (or the job ended): a loading message goes, a note stays a while."""
        note, self._note = self._note, ""
        if not note or self._status_bar.currentMessage() != note:
            return
        if note.endswith("…"):
            self._status_bar.clearMessage()
        else:
            self._status_bar.showMessage(note, NOTE_TIMEOUT_MS)

    def _show_time_left(self) -> None:
        per_step = self.seconds_per_step
        if per_step is None or self._request is None:
            return
        speed = f"{1 / per_step:.2f} it/s" if per_step < 1 else f"{per_step:.1f} s/it"
        left = per_step * self._steps_left
        text = f"{speed} · {format_duration(left)} left"
        tip = f"About {format_duration(left)} until this job is done"
        waiting = self.queue.waiting
        if waiting:
            pixels = self._request.width * self._request.height
            total = left + sum(
                per_step
                * denoising_steps(job.request)
                * job.request.batch_size
                * (job.request.width * job.request.height / pixels)
                for job in waiting
            )
            count = len(waiting) + 1
            text += f" ({count} jobs: {format_duration(total)})"
            tip += (
                f"; about {format_duration(total)} until all {count} jobs are done "
                "(waiting jobs estimated at this speed, scaled by their size)"
            )
        self.label.setText(text)
        self.label.setToolTip(tip + ".")
