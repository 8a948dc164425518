"""Models ▸ Train…: the run's settings, its progress, loss and samples, and the
finished LoRA, embedding, hypernetwork or DreamBooth model tried in the prompt.

The window is not modal: people keep working while a run goes on, and closing it only
hides it (the run goes on in its child process; the menu brings it back). Training and
generating take turns on the device (see :mod:`sdstudio.ui.device_share`): a run waits
for the generations queued before it, and the queue waits for the run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
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
from sdstudio.ui.device_share import DeviceShare
from sdstudio.ui.loss_plot import LossPlot
from sdstudio.ui.prompt_panel import PromptPanel
from sdstudio.ui.training_form import TrainingForm, load_form_values, save_form_values
from sdstudio.ui.training_kinds import STATE_FOLDERS, panel_models
from sdstudio.ui.training_memory import SKIP_FLAG, ask_short_memory, dreambooth_verdict
from sdstudio.ui.training_process import TrainingProcess, state_saved
from sdstudio.ui.training_samples import SampleStrip
from sdstudio.ui.training_try import try_tooltip, try_trained
from sdstudio.ui.training_words import start_text, step_text, waiting_text

TITLE = "Train a LoRA, embedding, hypernetwork or model"


class TrainingDialog(QDialog):
    """Train on a folder of captioned images, in a child process, taking turns with
    generation through ``share`` (without one, runs start at once)."""

    def __init__(
        self,
        paths: AppPaths,
        panel: PromptPanel,
        rescan: Callable[[], None],
        parent: QWidget | None = None,
        share: DeviceShare | None = None,
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
        self.memory_text = ""
        """DreamBooth's memory verdict, shown as the run starts."""
        self.replace_box: QMessageBox | None = None
        self.memory_box: QMessageBox | None = None
        self.process = TrainingProcess(self)
        self.share = share or DeviceShare(None, self)
        self.share.waiting.connect(self._on_waiting)
        self.share.ready.connect(self._on_ready)
        self.share.launched.connect(self._on_launched)
        self._resuming = False
        self._arguments: list[str] = []
        """The arguments of the run waiting for the device."""
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
        self.samples = SampleStrip()
        self._build_layout()

        self.form.data_changed.connect(self._scan_dataset)
        self.form.name_changed.connect(lambda _name: self._update_buttons())
        self.form.kind_changed.connect(lambda _kind: self._update_buttons())
        self.scanner.scanned.connect(self._on_scanned)
        process = self.process
        process.started.connect(self._on_started)
        process.step.connect(self._on_step)
        process.sample.connect(self.samples.add_sample)
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
        # The dataset summary wraps on its own full-width row (a wrapped label beside a
        # button is given one line's height and cut off).
        left.addWidget(self.dataset_info)
        data_row = QHBoxLayout()
        data_row.addStretch(1)
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
        """Where the CLI keeps this name's states and samples (an embedding's under
        ``embeddings/``, apart from a LoRA's of the same name; see ``STATE_FOLDERS``)."""
        folder = STATE_FOLDERS.get(self.form.run_kind(), "")
        return self.paths.data_dir / "training" / folder / self.form.run_name()

    def can_resume(self) -> bool:
        """Whether a saved state exists for the name in the form."""
        return bool(self.form.run_name()) and state_saved(self.state_dir())

    def start(self, resume: bool = False, *, replace: bool = False) -> bool:
        """Start (or resume) the run the form describes once the device is free (see
        ``share``); a missing setting is shown. Returns whether the run was asked for.

        Starting afresh over a saved state of the same name asks first (the new run's
        states replace it), unless ``replace``. A DreamBooth run's memory verdict is
        shown as it starts (the generations' memory freed), and asked about when short.
        """
        if self.process.running or self.share.busy:
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
        self._resuming = resume
        self._arguments = arguments
        self.memory_text = ""
        self.share.request()
        self._update_buttons()
        return True

    def cancel(self) -> None:
        """Stop the run (it saves a state to resume from), or give up waiting for one."""
        if self.share.give_up():
            if self.memory_box is not None and self.memory_box.isVisible():
                self.memory_box.close()
            self._say("Not started.")
            self._update_buttons()
        elif self.process.running:
            self._say("Stopping: saving a state to resume from…")
            self.process.cancel()
            self.cancel_button.setEnabled(False)

    def try_it(self) -> None:
        """Try the result (once): ``<lora:NAME:1>`` or ``<hypernet:NAME:1>`` in the
        prompt, the embedding's word, DreamArtist's ``NAME`` and ``NAME-neg``, or the
        DreamBooth model chosen; and look for the new files, so the pickers list them."""
        name = Path(self.finished_path).stem if self.finished_path else self.form.run_name()
        if not name:
            return
        self.rescan()
        self._say(try_trained(self.panel, self.finished_kind, name, self.finished_path))

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
        """Stop a running child, a wait and a dataset scan (the app is closing)."""
        self.share.give_up()
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

    def _on_waiting(self, count: int) -> None:
        self._say(waiting_text(count))

    def _on_ready(self) -> None:
        """The device is the run's: check DreamBooth's memory (asking when short), and
        launch."""
        if self.finished_kind != "dreambooth":
            self.share.launch(self.process, self._arguments)
            return
        try:
            verdict = dreambooth_verdict(self.form)
        except SdStudioError as error:
            self.share.give_up()
            self._show_problem(str(error))
            self._update_buttons()
            return
        self.memory_text = verdict.message if verdict is not None else ""
        if verdict is None or verdict.enough:
            self.share.launch(self.process, self._arguments)
            return
        self._show_problem(verdict.message)
        anyway = [*self._arguments[:-1], SKIP_FLAG, self._arguments[-1]]  # before --json
        box = ask_short_memory(self, TITLE, verdict, lambda: self._launch_anyway(anyway))
        box.rejected.connect(self.cancel)
        self.memory_box = box

    def _launch_anyway(self, arguments: list[str]) -> None:
        if self.share.pending:
            self.share.launch(self.process, arguments)

    def _on_launched(self) -> None:
        starting = "Resuming…" if self._resuming else "Starting: loading the model and images…"
        self._say(f"{self.memory_text}\n{starting}" if self.memory_text else starting)
        self._update_buttons()

    def _on_started(self, event: dict[str, Any]) -> None:
        steps, start = int(event.get("steps", 0)), int(event.get("start_step", 0))
        self.bar.setRange(0, max(steps, 1))
        self.bar.setValue(start)
        self.plot.total_steps = steps
        self.run_text, skipped = start_text(event)
        if skipped:
            self.status.setToolTip(skipped)
        self._say(self.run_text)

    def _on_step(self, event: dict[str, Any]) -> None:
        step, steps = int(event.get("step", 0)), int(event.get("steps", 0))
        loss = float(event.get("loss", float("nan")))
        if steps:
            self.bar.setMaximum(steps)
        self.bar.setValue(step)
        self.plot.add_point(step, loss)
        self.figures.setText(step_text(event))

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
        running = self.process.running or self.share.pending
        self.start_button.setEnabled(not running)
        self.resume_button.setEnabled(not running and self.can_resume())
        self.cancel_button.setEnabled(running)
        self.try_button.setEnabled(not running and bool(self.finished_path))
        kind = self.finished_kind if self.finished_path else self.form.run_kind()
        self.try_button.setToolTip(try_tooltip(kind))
        self.form.setEnabled(not running)


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>")
    )
