"""Models ▸ Train a LoRA or embedding…: the run's settings, its progress, loss and
samples, and the finished LoRA or embedding tried in the prompt.

The window is not modal: people keep generating while a run goes on, and closing it
only hides it (the run goes on in its child process; the menu brings it back).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QCloseEvent, QIcon, QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.paths import AppPaths
from sdstudio.ui.caption_editor import CaptionEditor
from sdstudio.ui.dataset_scan import DatasetScanner, DatasetSummary
from sdstudio.ui.loss_plot import LossPlot
from sdstudio.ui.model_picker import FAMILY_ROLE
from sdstudio.ui.prompt_panel import PromptPanel
from sdstudio.ui.training_form import TrainingForm, load_form_values, save_form_values
from sdstudio.ui.training_process import TrainingProcess, state_saved
from sdstudio.ui.training_try import try_tooltip, try_trained

TRAINABLE = {"", "sd1", "sd2", "sdxl", "unknown"}
"""Families a LoRA or embedding can be trained for (an unread family is offered: the
CLI says)."""
SAMPLE_ICON = 112
TITLE = "Train a LoRA or embedding"


def duration(seconds: float) -> str:
    """``1:02:03`` or ``2:03``, as a time left."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def panel_models(panel: PromptPanel) -> list[tuple[str, str]]:
    """(name, path) of the prompt panel's models that can be trained for."""
    box = panel.model
    found = []
    for index in range(box.count()):
        path = str(box.itemData(index) or "")
        if path and str(box.itemData(index, FAMILY_ROLE) or "") in TRAINABLE:
            found.append((box.itemText(index), path))
    return found


class TrainingDialog(QDialog):
    """Train a LoRA or an embedding on a folder of captioned images, in a child process."""

    def __init__(
        self,
        paths: AppPaths,
        panel: PromptPanel,
        rescan: Callable[[], None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(TITLE)
        self.setModal(False)
        self.resize(980, 680)
        self.paths = paths
        self.panel = panel
        self.rescan = rescan
        self.finished_path = ""
        self.finished_kind = "lora"
        """The kind of the run that wrote ``finished_path``."""
        self.last_error = ""
        self.summary: DatasetSummary | None = None
        self.run_text = ""
        """The running job's summary line (images, steps, device)."""
        self.replace_box: QMessageBox | None = None
        self.sample_viewer: QDialog | None = None
        self.process = TrainingProcess(self)
        self.scanner = DatasetScanner(self)
        self.caption_editor: CaptionEditor | None = None

        self.form = TrainingForm(panel_models(panel))
        self.form.set_values(load_form_values(paths.config_dir))
        self.form.set_model(panel.model_path())
        self.dataset_info = QLabel(wordWrap=True)
        self.captions_button = QPushButton("Captions…", enabled=False)
        self.captions_button.clicked.connect(self.edit_captions)
        self.start_button = QPushButton("Start", default=True)
        self.start_button.clicked.connect(lambda: self.start())
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the run saved for this name")
        self.resume_button.clicked.connect(lambda: self.start(resume=True))
        self.cancel_button = QPushButton("Cancel", enabled=False)
        self.cancel_button.setToolTip("Stop, saving a state to resume from")
        self.cancel_button.clicked.connect(self.cancel)
        self.try_button = QPushButton("Try it", enabled=False)
        self.try_button.clicked.connect(self.try_it)

        self.status = QLabel("Choose a model, a dataset folder and a name.", wordWrap=True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.bar = QProgressBar()
        self.bar.setFormat("step %v of %m")
        self.figures = QLabel()
        self.plot = LossPlot()
        self.samples = QListWidget()
        self.samples.setViewMode(QListView.ViewMode.IconMode)
        self.samples.setFlow(QListView.Flow.LeftToRight)
        self.samples.setWrapping(False)
        self.samples.setIconSize(QSize(SAMPLE_ICON, SAMPLE_ICON))
        self.samples.setFixedHeight(SAMPLE_ICON + 48)
        self.samples.itemClicked.connect(self._open_sample)
        self._build_layout()

        self.form.data_changed.connect(self._scan_dataset)
        self.form.name_changed.connect(lambda _name: self._update_buttons())
        self.form.kind_changed.connect(lambda _kind: self._update_buttons())
        self.scanner.scanned.connect(self._on_scanned)
        process = self.process
        process.started.connect(self._on_started)
        process.step.connect(self._on_step)
        process.sample.connect(self.add_sample)
        process.checkpoint.connect(lambda path: self._detail(f"State saved: {Path(path).name}"))
        process.notice.connect(self._detail)
        process.done.connect(self._on_done)
        process.cancelled.connect(self._on_cancelled)
        process.failed.connect(self._on_failed)
        process.finished.connect(self._update_buttons)
        self._scan_dataset(self.form.data.text())
        self._update_buttons()

    def _build_layout(self) -> None:
        scroll = QScrollArea(widgetResizable=True)
        scroll.setWidget(self.form)
        scroll.setMinimumWidth(400)
        left = QVBoxLayout()
        left.addWidget(scroll, 1)
        data_row = QHBoxLayout()
        data_row.addWidget(self.dataset_info, 1)
        data_row.addWidget(self.captions_button)
        left.addLayout(data_row)
        buttons = QHBoxLayout()
        for button in (self.start_button, self.resume_button, self.cancel_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.try_button)
        left.addLayout(buttons)
        progress = QGroupBox("Progress")
        right = QVBoxLayout(progress)
        right.addWidget(self.status)
        right.addWidget(self.bar)
        right.addWidget(self.figures)
        right.addWidget(self.plot, 1)
        right.addWidget(QLabel("Samples (click to enlarge)"))
        right.addWidget(self.samples)
        layout = QHBoxLayout(self)
        layout.addLayout(left, 2)
        layout.addWidget(progress, 3)

    def state_dir(self) -> Path:
        """Where the CLI keeps this name's states and samples by default (an embedding's
        under ``embeddings/``, apart from a LoRA's of the same name)."""
        root = self.paths.data_dir / "training"
        return (root / "embeddings" if self.form.is_embedding() else root) / self.form.run_name()

    def can_resume(self) -> bool:
        """Whether a saved state exists for the name in the form."""
        return bool(self.form.run_name()) and state_saved(self.state_dir())

    def start(self, resume: bool = False, *, replace: bool = False) -> bool:
        """Start (or resume) the run the form describes; a missing setting is shown.

        Starting afresh over a saved state of the same name asks first (the new run's
        states replace it), unless ``replace``.
        """
        if self.process.running:
            return False
        try:
            arguments = self.form.arguments(self.state_dir() if resume else None)
        except SdStudioError as error:
            self._show_problem(str(error))
            return False
        if not resume and not replace and self.can_resume():
            self._ask_replace()
            return False
        save_form_values(self.paths.config_dir, self.form.values())
        self.finished_path = ""
        self.finished_kind = self.form.run_kind()
        self.last_error = ""
        self.run_text = ""
        if not resume:
            self.samples.clear()
            self.plot.clear(self.form.steps.value())
        self.bar.setRange(0, self.form.steps.value())
        self.bar.setValue(0)
        self.figures.clear()
        self._say("Resuming…" if resume else "Starting: loading the model and the images…")
        self.process.start_cli(arguments)
        self._update_buttons()
        return True

    def cancel(self) -> None:
        """Stop the run; it saves a state to resume from."""
        if self.process.running:
            self._say("Stopping: saving a state to resume from…")
            self.process.cancel()
            self.cancel_button.setEnabled(False)

    def try_it(self) -> None:
        """Put the result into the prompt (once): ``<lora:NAME:1>``, the embedding's word,
        or DreamArtist's ``NAME`` and ``NAME-neg``; and look for the new files, so the
        pickers list them."""
        name = Path(self.finished_path).stem if self.finished_path else self.form.run_name()
        if not name:
            return
        said = try_trained(self.panel, self.finished_kind, name)
        self.rescan()
        self._say(said)

    def add_sample(self, path: str) -> None:
        """Show a sample image in the strip."""
        pixmap = QPixmap(path)
        found = re.search(r"step0*(\d+)$", Path(path).stem)
        item = QListWidgetItem(f"step {found.group(1)}" if found else Path(path).stem)
        item.setData(Qt.ItemDataRole.UserRole, path)
        item.setToolTip(path)
        if not pixmap.isNull():
            item.setIcon(
                QIcon(pixmap.scaled(SAMPLE_ICON, SAMPLE_ICON, Qt.AspectRatioMode.KeepAspectRatio))
            )
        self.samples.addItem(item)
        self.samples.scrollToItem(item)

    def edit_captions(self) -> None:
        """Open the caption editor over the dataset's images."""
        if self.summary is None or not self.summary.images:
            return
        if self.caption_editor is not None:
            self.caption_editor.close()
        self.caption_editor = CaptionEditor(self.summary, self)
        self.caption_editor.finished.connect(lambda _r: self._scan_dataset(self.form.data.text()))
        self.caption_editor.show()

    def shutdown(self) -> None:
        """Stop a running child and a dataset scan (the app is closing)."""
        self.process.shutdown()
        self.scanner.wait()

    def closeEvent(self, event: QCloseEvent) -> None:
        save_form_values(self.paths.config_dir, self.form.values())
        super().closeEvent(event)

    def _say(self, text: str) -> None:
        self.status.setText(text)

    def _detail(self, text: str) -> None:
        """A passing event (a state saved, a notice) under the run's summary."""
        self.status.setText(f"{self.run_text}\n{text}" if self.run_text else text)

    def _ask_replace(self) -> None:
        box = QMessageBox(
            QMessageBox.Icon.Question,
            TITLE,
            f"A stopped run of {self.form.run_name()} is saved. Start again from the "
            "beginning? (Resume continues the saved run instead.)",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            self,
        )
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.accepted.connect(lambda: self.start(replace=True))
        box.open()
        self.replace_box = box

    def _without_time_left(self) -> None:
        text = self.figures.text()
        if text.endswith(" left"):
            self.figures.setText(text.rsplit(" · ", 1)[0])

    def _show_problem(self, message: str) -> None:
        self.last_error = message
        self.status.setText(f"<b>{_escape(message)}</b>")

    def _scan_dataset(self, folder: str) -> None:
        self.summary = None
        self.captions_button.setEnabled(False)
        folder = folder.strip()
        if not folder:
            self.dataset_info.setText("")
            return
        self.dataset_info.setText("Reading the dataset…")
        self.scanner.scan(folder)

    def _on_scanned(self, summary: DatasetSummary) -> None:
        self.summary = summary
        self.dataset_info.setText(summary.text())
        self.dataset_info.setToolTip("\n".join(summary.skipped))
        self.captions_button.setEnabled(bool(summary.images))

    def _on_started(self, event: dict[str, Any]) -> None:
        steps, start = int(event.get("steps", 0)), int(event.get("start_step", 0))
        self.bar.setRange(0, max(steps, 1))
        self.bar.setValue(start)
        self.plot.total_steps = steps
        resumed = f", from step {start}" if start else ""
        text = (
            f"Training on {event.get('images', '?')} images, {steps} steps "
            f"({event.get('epochs', '?')} epochs) on {event.get('device', '?')}{resumed}."
        )
        skipped = event.get("skipped") or []
        if skipped:
            text += f" {len(skipped)} {'file' if len(skipped) == 1 else 'files'} left out."
            self.status.setToolTip("\n".join(str(line) for line in skipped))
        self.run_text = text
        self._say(text)

    def _on_step(self, event: dict[str, Any]) -> None:
        step, steps = int(event.get("step", 0)), int(event.get("steps", 0))
        loss = float(event.get("loss", float("nan")))
        if steps:
            self.bar.setMaximum(steps)
        self.bar.setValue(step)
        self.plot.add_point(step, loss)
        self.figures.setText(
            f"Step {step}/{steps} · loss {loss:.4f} · {float(event.get('it_s', 0)):.2f} it/s"
            f" · {duration(float(event.get('eta_s', 0)))} left"
        )

    def _on_done(self, path: str) -> None:
        self.finished_path = path
        self.bar.setValue(self.bar.maximum())
        self._without_time_left()
        self._say(f"Done: {path}")
        self.rescan()

    def _on_cancelled(self, state: str) -> None:
        where = f" The state is saved in {state}: Resume continues from it." if state else ""
        self._without_time_left()
        self._say("Stopped." + where)

    def _on_failed(self, message: str) -> None:
        self._without_time_left()
        self._show_problem(message)

    def _update_buttons(self) -> None:
        running = self.process.running
        self.start_button.setEnabled(not running)
        self.resume_button.setEnabled(not running and self.can_resume())
        self.cancel_button.setEnabled(running)
        self.try_button.setEnabled(not running and bool(self.finished_path))
        kind = self.finished_kind if self.finished_path else self.form.run_kind()
        self.try_button.setToolTip(try_tooltip(kind))
        self.form.setEnabled(not running)

    def _open_sample(self, item: QListWidgetItem) -> None:
        path = str(item.data(Qt.ItemDataRole.UserRole) or "")
        viewer = QDialog(self)
        viewer.setWindowTitle(Path(path).name)
        viewer.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        label = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        pixmap = QPixmap(path)
        if pixmap.isNull():
            label.setText(f"{path} could not be read.")
        else:
            label.setPixmap(pixmap if pixmap.width() >= 512 else pixmap.scaledToWidth(512))
        QVBoxLayout(viewer).addWidget(label)
        viewer.show()
        self.sample_viewer = viewer


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>")
    )
