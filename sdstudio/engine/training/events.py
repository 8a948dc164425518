"""What a training run reports, as typed events, and how it is asked to stop.

The CLI prints each event as one JSON line (``{"event": "step", ...}``); that is the
protocol between a training child process and the app. Exactly one of
:class:`Done`, :class:`Cancelled` (or an error raised) ends a run.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class TrainingEvent:
    """Base of the events; :attr:`kind` is the JSON ``event`` name."""

    kind: ClassVar[str] = ""

    def fields(self) -> dict[str, Any]:
        """The event's values, for JSON."""
        return {key: value for key, value in dataclasses.asdict(self).items()}

    def text(self) -> str:
        """One line for people."""
        return self.kind


@dataclass(frozen=True, slots=True)
class Started(TrainingEvent):
    """The model is loaded and the data read; steps follow."""

    kind: ClassVar[str] = "start"
    steps: int
    start_step: int
    epochs: int
    images: int
    """Images trained on (before repeats)."""
    skipped: list[str]
    device: str

    def text(self) -> str:
        resumed = f", resuming at step {self.start_step}" if self.start_step else ""
        return (
            f"Training on {self.images} images, {self.steps} steps "
            f"({self.epochs} epochs) on {self.device}{resumed}"
        )


@dataclass(frozen=True, slots=True)
class Step(TrainingEvent):
    """One optimisation step done."""

    kind: ClassVar[str] = "step"
    step: int
    steps: int
    loss: float
    lr: float
    it_s: float
    eta_s: float

    def text(self) -> str:
        return (
            f"step {self.step}/{self.steps} loss {self.loss:.4f} lr {self.lr:.2e} "
            f"{self.it_s:.2f} it/s eta {self.eta_s:.0f} s"
        )


@dataclass(frozen=True, slots=True)
class Checkpoint(TrainingEvent):
    """A resumable state was saved."""

    kind: ClassVar[str] = "checkpoint"
    path: str
    step: int

    def text(self) -> str:
        return f"State saved at step {self.step}: {self.path}"


@dataclass(frozen=True, slots=True)
class Sample(TrainingEvent):
    """A sample image was made with the network as it is."""

    kind: ClassVar[str] = "sample"
    path: str
    step: int

    def text(self) -> str:
        return f"Sample at step {self.step}: {self.path}"


@dataclass(frozen=True, slots=True)
class Notice(TrainingEvent):
    """Something the user should know (a skipped image, a loading status)."""

    kind: ClassVar[str] = "notice"
    message: str

    def text(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class Done(TrainingEvent):
    """The run finished and wrote its file."""

    kind: ClassVar[str] = "done"
    path: str
    steps: int

    def text(self) -> str:
        return f"Done after {self.steps} steps: {self.path}"


@dataclass(frozen=True, slots=True)
class Cancelled(TrainingEvent):
    """The run was stopped; its state was saved to resume from."""

    kind: ClassVar[str] = "cancelled"
    path: str
    step: int

    def text(self) -> str:
        return f"Cancelled at step {self.step}; resume with --resume {self.path}"


EventSink = Callable[[TrainingEvent], None]


class CancelFlag:
    """Set from anywhere (a signal handler, another thread, a test) to stop a run after
    its current step; the run saves its state first."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Ask the run to stop."""
        self._event.set()

    def is_set(self) -> bool:
        """Whether a stop was asked for."""
        return self._event.is_set()
