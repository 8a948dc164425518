"""The queue panel: every job with its prompt, size and state; cancel one, reorder those waiting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QPersistentModelIndex, Qt
from PySide6.QtGui import QAction, QFont, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QListView,
    QMainWindow,
    QMenu,
    QSplitter,
    QStackedLayout,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.ui.controller import GenerationController, Job

PROMPT_LENGTH = 80
"""Longer prompts are cut in the list (the tooltip has them whole)."""
DOCK_HEIGHT = 150

MODE_NAMES = {
    Mode.TXT2IMG: "txt2img",
    Mode.IMG2IMG: "img2img",
    Mode.INPAINT: "inpaint",
    Mode.UPSCALE: "upscale",
}

Index = QModelIndex | QPersistentModelIndex


def short_prompt(prompt: str, length: int = PROMPT_LENGTH) -> str:
    """The prompt on one line, cut to ``length`` characters."""
    text = " ".join(prompt.split()) or "(no prompt)"
    return text if len(text) <= length else text[: length - 1].rstrip() + "…"


def describe_request(request: GenerationRequest) -> str:
    """Size, mode and batch size: ``512×768 · txt2img · 4 images``."""
    images = f"{request.batch_size} image{'s' if request.batch_size != 1 else ''}"
    return f"{request.width}×{request.height} · {MODE_NAMES[request.mode]} · {images}"


class QueueModel(QAbstractListModel):
    """The controller's jobs, running first then waiting, as list rows."""

    def __init__(self, controller: GenerationController, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self._jobs: list[Job] = controller.jobs
        self._step: tuple[int, int, int, int, int] | None = None
        controller.jobs_changed.connect(self.refresh)
        controller.progress.connect(self._on_progress)

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self._jobs)

    def job_at(self, row: int) -> Job | None:
        """The job shown on ``row``."""
        return self._jobs[row] if 0 <= row < len(self._jobs) else None

    def row_of(self, job_id: int) -> int | None:
        """The row showing job ``job_id``."""
        return next((row for row, job in enumerate(self._jobs) if job.id == job_id), None)

    def is_running(self, row: int) -> bool:
        """Whether the job on ``row`` is on the worker."""
        running = self.controller.running
        job = self.job_at(row)
        return job is not None and running is not None and job.id == running.id

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        job = self.job_at(index.row()) if index.isValid() else None
        if job is None:
            return None
        request = job.request
        if role == Qt.ItemDataRole.DisplayRole:
            state = self._state(index.row())
            title = short_prompt(request.prompt)
            if request.mode is Mode.UPSCALE and request.upscale is not None:
                title = f"Upscale with {request.upscale.upscaler} ×{request.upscale.scale:g}"
            return f"{title}\n{state} · {describe_request(request)}"
        if role == Qt.ItemDataRole.ToolTipRole:
            negative = f"\nNegative: {request.negative_prompt}" if request.negative_prompt else ""
            return f"{request.prompt}{negative}\n{describe_request(request)}, {request.steps} steps"
        if role == Qt.ItemDataRole.FontRole and self.is_running(index.row()):
            font = QFont()
            font.setBold(True)
            return font
        return None

    def refresh(self) -> None:
        """Show the controller's jobs as they are now."""
        self.beginResetModel()
        self._jobs = self.controller.jobs
        running = self.controller.running
        if running is None or (self._step is not None and self._step[0] != running.id):
            self._step = None
        self.endResetModel()

    def _state(self, row: int) -> str:
        job = self._jobs[row]
        if not self.is_running(row):
            if self.controller.hold_reason:  # a training run has the device
                return self.controller.hold_reason
            return "Next" if row == 1 and self.controller.running else "Waiting"
        if self.controller.is_cancelling(job.id):
            return "Cancelling…"
        if self._step is None or self._step[0] != job.id:
            return "Starting…"
        _, step, total, index, batch = self._step
        image = f"Image {index + 1}/{batch}, step" if batch > 1 else "Step"
        return f"{image} {step}/{total}"

    def _on_progress(
        self, job_id: int, step: int, total: int, index: int, batch: int, *_: object
    ) -> None:
        self._step = (job_id, step, total, index, batch)
        row = self.row_of(job_id)
        if row is not None:
            changed = self.index(row)
            self.dataChanged.emit(changed, changed, [Qt.ItemDataRole.DisplayRole])


class QueuePanel(QDockWidget):
    """A dock listing the queue, with cancel and move up/down for the selected job.

    Delete cancels the selected job (the running one stops within a step, a
    waiting one is dropped); Ctrl+Up and Ctrl+Down move a waiting job.
    """

    def __init__(self, controller: GenerationController, parent: QWidget | None = None) -> None:
        super().__init__("Queue", parent)
        self.setObjectName("queue-dock")
        self.controller = controller
        self.model = QueueModel(controller, self)
        self.view = QListView()
        self.view.setModel(self.model)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setUniformItemSizes(True)
        self.view.setAlternatingRowColors(True)
        self.view.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._show_menu)
        self.empty = QLabel("No jobs. Each Generate (Ctrl+Enter) adds one here.")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.empty.setEnabled(False)
        self._selected: int | None = None
        self._make_actions()

        buttons = QVBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        for action in (self.up_action, self.down_action, self.cancel_action):
            button = QToolButton(autoRaise=True)
            button.setDefaultAction(action)
            buttons.addWidget(button)
        buttons.addStretch()
        self.stack = QStackedLayout()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.view)
        body = QWidget()
        layout = QHBoxLayout(body)
        layout.setContentsMargins(4, 2, 2, 2)
        layout.setSpacing(2)
        layout.addLayout(self.stack, 1)
        layout.addLayout(buttons)
        self.setWidget(body)

        self.model.modelAboutToBeReset.connect(self._remember_selection)
        self.model.modelReset.connect(self._restore_selection)
        self.model.dataChanged.connect(lambda *_: self._update_actions())
        self.view.selectionModel().selectionChanged.connect(lambda *_: self._update_actions())
        self._restore_selection()

    def selected_job(self) -> Job | None:
        """The job selected in the list."""
        rows = self.view.selectionModel().selectedRows()
        return self.model.job_at(rows[0].row()) if rows else None

    def select_job(self, job_id: int) -> None:
        """Select the row of job ``job_id``."""
        row = self.model.row_of(job_id)
        if row is not None:
            self.view.setCurrentIndex(self.model.index(row))

    def cancel_selected(self) -> None:
        """Cancel the selected job: stop it if it runs, drop it if it waits."""
        job = self.selected_job()
        if job is not None:
            self.controller.cancel(job.id)

    def move_selected(self, offset: int) -> None:
        """Move the selected waiting job ``offset`` places (negative: sooner)."""
        job = self.selected_job()
        if job is not None:
            self.controller.move(job.id, offset)

    def _make_actions(self) -> None:
        style = self.style()

        def action(
            text: str, slot: Callable[[], None], key: str, icon: QStyle.StandardPixmap
        ) -> QAction:
            made = QAction(style.standardIcon(icon), text, self.view)
            if key:
                made.setShortcut(QKeySequence(key))
                made.setToolTip(
                    f"{text} ({QKeySequence(key).toString(QKeySequence.SequenceFormat.NativeText)})"
                )
            made.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            made.triggered.connect(slot)
            self.view.addAction(made)
            return made

        pixmap = QStyle.StandardPixmap
        self.up_action = action(
            "Move up", lambda: self.move_selected(-1), "Ctrl+Up", pixmap.SP_ArrowUp
        )
        self.down_action = action(
            "Move down", lambda: self.move_selected(1), "Ctrl+Down", pixmap.SP_ArrowDown
        )
        self.first_action = action(
            "Run next",
            lambda: self.move_selected(-len(self.controller.waiting)),
            "",
            pixmap.SP_ArrowUp,
        )
        self.last_action = action(
            "Run last",
            lambda: self.move_selected(len(self.controller.waiting)),
            "",
            pixmap.SP_ArrowDown,
        )
        self.cancel_action = action(
            "Cancel job", self.cancel_selected, "Delete", pixmap.SP_DialogCancelButton
        )

    def _update_actions(self) -> None:
        job = self.selected_job()
        waiting = [j.id for j in self.controller.waiting]
        place = waiting.index(job.id) if job is not None and job.id in waiting else None
        self.up_action.setEnabled(place is not None and place > 0)
        self.first_action.setEnabled(place is not None and place > 0)
        self.down_action.setEnabled(place is not None and place < len(waiting) - 1)
        self.last_action.setEnabled(place is not None and place < len(waiting) - 1)
        cancelling = job is not None and self.controller.is_cancelling(job.id)
        self.cancel_action.setEnabled(job is not None and not cancelling)
        text = "Cancel job" if job is None else "Stop job" if place is None else "Remove job"
        self.cancel_action.setText(text)
        self.cancel_action.setToolTip(f"{text} (Del)")

    def _remember_selection(self) -> None:
        job = self.selected_job()
        self._selected = job.id if job is not None else None

    def _restore_selection(self) -> None:
        self.stack.setCurrentWidget(self.view if self.model.rowCount() else self.empty)
        if self._selected is not None:
            self.select_job(self._selected)
        self._update_actions()

    def _show_menu(self, point: Any) -> None:
        index = self.view.indexAt(point)
        if not index.isValid():
            return
        self.view.setCurrentIndex(index)
        menu = QMenu(self)
        menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        for action in (self.first_action, self.up_action, self.down_action, self.last_action):
            menu.addAction(action)
        menu.addSeparator()
        menu.addAction(self.cancel_action)
        menu.popup(self.view.viewport().mapToGlobal(point))


def dock_under(widget: QWidget, dock: QDockWidget, height: int = DOCK_HEIGHT) -> QMainWindow:
    """Put ``dock`` under ``widget``, a pane of a splitter, in the pane's own dock area;
    returns the main window that holds the dock.

    The pane becomes a small main window whose central widget is ``widget``, so
    the dock can be resized, moved above it, floated or closed as any dock. A
    widget outside a splitter gets the dock on the right of its window instead.
    Call it before setting the splitter's sizes.
    """
    splitter = widget.parentWidget()
    if isinstance(splitter, QSplitter):
        pane = QMainWindow()
        pane.setObjectName("dock-pane")
        pane.setWindowFlags(Qt.WindowType.Widget)
        pane.setDockOptions(QMainWindow.DockOption.AnimatedDocks)
        sizes = splitter.sizes()
        splitter.insertWidget(splitter.indexOf(widget), pane)  # the splitter owns it
        pane.setCentralWidget(widget)  # which leaves the splitter
        if splitter.isVisible():  # laid out: keep the sizes (before, they are not known yet)
            splitter.setSizes(sizes)
        dock.setAllowedAreas(
            Qt.DockWidgetArea.TopDockWidgetArea | Qt.DockWidgetArea.BottomDockWidgetArea
        )
        pane.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
        pane.resizeDocks([dock], [height], Qt.Orientation.Vertical)
        return pane
    window = widget.window()
    if not isinstance(window, QMainWindow):
        raise TypeError("dock_under needs a widget in a splitter or in a main window")
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
    return window
