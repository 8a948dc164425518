"""Keeping the queue over a quit: ask at close, save, offer the jobs at the next start."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtWidgets import QAbstractButton, QMessageBox, QWidget

from sdstudio.engine.errors import SdStudioError, StorageError
from sdstudio.engine.images import store_input
from sdstudio.engine.queue_file import discard_queue, load_queue, save_queue
from sdstudio.engine.request import GenerationRequest
from sdstudio.ui.controller import GenerationController, Job
from sdstudio.ui.queue_panel import describe_request, short_prompt

log = logging.getLogger(__name__)

MAX_LISTED = 20
"""Jobs named in the offer's details; more are counted."""


def _jobs(count: int) -> str:
    return f"{count} job{'s' if count != 1 else ''}"


class QueueKeeper(QObject):
    """Asks before the window closes on queued jobs, keeps them in ``queue_file``,
    and offers them again at the next start (:meth:`offer_saved`).

    The jobs are kept as their requests; input images not yet written are
    written first so the requests' paths exist. Jobs offered and not yet
    answered are never lost by closing: they stay in the file.
    """

    def __init__(
        self,
        controller: GenerationController,
        queue_file: Path,
        window: QWidget,
        show_error: Callable[[str], None],
    ) -> None:
        super().__init__(window)
        self.controller = controller
        self.queue_file = queue_file
        self.window = window
        self.show_error = show_error
        self.close_box: QMessageBox | None = None
        self.offer_box: QMessageBox | None = None
        self.offered: tuple[GenerationRequest, ...] = ()
        """Jobs from the last run offered at start and not yet run or discarded."""
        self._may_close = False

    def may_close(self) -> bool:
        """Whether the window may close now; if jobs are queued, asks (without
        blocking) whether to keep them, and closes the window again once answered."""
        jobs = self.controller.jobs if self.controller.thread_running else []
        if self._may_close or not jobs:
            return True
        if self.close_box is not None:
            self.close_box.raise_()
            return False
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "sdstudio",
            _close_question(jobs, self.controller),
            parent=self.window,
        )
        keep = box.addButton("Keep for next time", QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
        cancel = box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(keep)
        box.setEscapeButton(cancel)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.buttonClicked.connect(lambda button: self._close_answered(box, button))
        box.finished.connect(lambda _: setattr(self, "close_box", None))
        self.close_box = box
        box.open()
        return False

    def keep(self, jobs: Sequence[Job]) -> None:
        """Save ``jobs`` (after the jobs still offered) for the next start.

        Raises :class:`StorageError` when an input image or the file cannot be written.
        """
        for job in jobs:
            for path, image in job.inputs:
                if store_input(image, path.parent) != path:
                    raise StorageError(f"The input image {path.name} changed before it was saved.")
        save_queue(self.queue_file, [*self.offered, *(job.request for job in jobs)])

    def offer_saved(self) -> None:
        """Offer (without blocking) to run the jobs kept at the last quit."""
        saved = load_queue(self.queue_file)
        if not saved.requests:
            if saved.problem:
                self.show_error(saved.problem)
                self._discard_saved()
            return
        self.offered = saved.requests
        count = len(saved.requests)
        if count == 1:
            text = "1 job was left in the queue when sdstudio closed. Run it now?"
        else:
            text = f"{count} jobs were left in the queue when sdstudio closed. Run them now?"
        if saved.problem:
            text += f"\n\n{saved.problem}"
        box = QMessageBox(QMessageBox.Icon.Question, "sdstudio", text, parent=self.window)
        run = box.addButton("Run", QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
        box.setDefaultButton(run)
        box.setDetailedText(_listing(saved.requests))
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.buttonClicked.connect(lambda button: self._offer_answered(button is run))
        box.finished.connect(lambda _: setattr(self, "offer_box", None))
        self.offer_box = box
        box.open()

    def run_offered(self) -> list[int]:
        """Queue the jobs offered at start; returns their job ids."""
        requests, self.offered = self.offered, ()
        ids = [self.controller.submit(request) for request in requests]
        self._discard_saved()
        return ids

    def discard_offered(self) -> None:
        """Forget the jobs offered at start."""
        self.offered = ()
        self._discard_saved()

    def _offer_answered(self, run: bool) -> None:
        if run:
            self.run_offered()
        else:
            self.discard_offered()

    def _close_answered(self, box: QMessageBox, button: QAbstractButton) -> None:
        role = box.buttonRole(button)
        if role == QMessageBox.ButtonRole.RejectRole:
            return
        try:
            if role == QMessageBox.ButtonRole.AcceptRole:
                self.keep(self.controller.jobs)
            else:
                save_queue(self.queue_file, self.offered)
        except SdStudioError as error:
            log.warning("The queue was not kept: %s", error)
            self.show_error(f"The queue could not be kept for next time: {error}")
            return
        self._may_close = True
        QTimer.singleShot(0, self.window.close)  # once the box has closed

    def _discard_saved(self) -> None:
        try:
            discard_queue(self.queue_file)
        except SdStudioError as error:
            self.show_error(str(error))


def _close_question(jobs: Sequence[Job], controller: GenerationController) -> str:
    running = controller.running is not None
    waiting = len(jobs) - running
    if running and waiting:
        state = f"A job is running and {waiting} {'is' if waiting == 1 else 'are'} waiting."
    elif running:
        state = "A job is running."
    else:
        state = f"{_jobs(waiting)} {'is' if waiting == 1 else 'are'} waiting."
    them = "it" if len(jobs) == 1 else f"the {len(jobs)} queued jobs"
    again = " (the running one starts over)" if running else ""
    return (
        f"{state} Quit and keep {them} for next time?\n\n"
        f"sdstudio will offer to run {'it' if len(jobs) == 1 else 'them'} when it starts "
        f"again{again}."
    )


def _listing(requests: Sequence[GenerationRequest]) -> str:
    lines = [
        f"{i}. {short_prompt(r.prompt, 60)} ({describe_request(r)})"
        for i, r in enumerate(requests[:MAX_LISTED], 1)
    ]
    if len(requests) > MAX_LISTED:
        lines.append(f"… and {len(requests) - MAX_LISTED} more")
    return "\n".join(lines)
