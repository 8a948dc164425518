"""Progress and cancelling of a generation: one :class:`Progress` event per denoising
step, counted over every pass of an image (a hires fix adds a second one), and a
:class:`CancelToken` that stops the pipeline at the end of the step it is in."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from sdstudio.engine.errors import GenerationCancelled

Preview = Callable[[Any, int, int], Image.Image | None]


@dataclass(frozen=True, slots=True)
class Progress:
    """One denoising step done."""

    step: int
    """1-based step within the current image, over all its passes."""
    total: int
    """Steps the current image takes: those of its first pass (fewer than requested for
    image-to-image) and of its hires pass."""
    image_index: int
    batch_size: int
    preview: Image.Image | None
    hires: bool = False
    """Whether the step is one of the hires pass."""


class CancelToken:
    """Set from any thread to stop a running generation."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the generation to stop at the end of the current step."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`GenerationCancelled` if cancelled."""
        if self._event.is_set():
            raise GenerationCancelled()


class StepReporter:
    """The step callbacks of one image's passes, reporting :class:`Progress` and
    stopping the pipeline (by raising :class:`GenerationCancelled`) when cancelled."""

    def __init__(
        self,
        on_progress: Callable[[Progress], None] | None,
        cancel: CancelToken,
        preview: Preview | None,
        image_index: int,
        batch_size: int,
    ) -> None:
        """``preview`` draws a step's latents (``None``: no previews)."""
        self._on_progress = on_progress
        self._cancel = cancel
        self._preview = preview
        self._index = image_index
        self._batch = batch_size
        self._done = 0
        """Steps of the passes already run."""

    def raise_if_cancelled(self) -> None:
        """Raise :class:`GenerationCancelled` if cancelled (between passes)."""
        self._cancel.raise_if_cancelled()

    @property
    def cancel_token(self) -> CancelToken:
        """The token that cancels these passes (for work between them, such as upscaling)."""
        return self._cancel

    def callback(
        self, width: int, height: int, *, later: int = 0, hires: bool = False
    ) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]:
        """A ``callback_on_step_end`` for the next pass, at ``width`` x ``height``;
        ``later`` counts the steps of the passes still to come."""
        done = self._done

        def on_step_end(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            self._done += 1
            if self._on_progress is not None:
                preview = None
                if self._preview is not None and "latents" in tensors:
                    preview = self._preview(tensors["latents"], width, height)
                total = done + pipe.num_timesteps + later
                self._on_progress(
                    Progress(self._done, total, self._index, self._batch, preview, hires)
                )
            self._cancel.raise_if_cancelled()
            return {}

        return on_step_end
