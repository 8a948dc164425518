"""The main window: prompt panel, canvas and progress, wired to the generation controller."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QStackedWidget,
    QWidget,
)

from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.history import HistoryEntry
from sdstudio.engine.history.library import ImageLibrary
from sdstudio.engine.images import input_path, open_image
from sdstudio.engine.metadata import ImageSettings, read_image_settings
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.ui.canvas import Canvas
from sdstudio.ui.control_actions import ControlActions
from sdstudio.ui.controller import GenerationController
from sdstudio.ui.edit_toolbar import EditToolbar
from sdstudio.ui.found_models import offer_found_models
from sdstudio.ui.gallery import GalleryPanel
from sdstudio.ui.history_actions import HistoryActions
from sdstudio.ui.image_settings import PanelChoices, settings_details, settings_to_load
from sdstudio.ui.info_panel import InfoPanel
from sdstudio.ui.ip_adapter_actions import IpAdapterActions
from sdstudio.ui.progress_status import ProgressStatus
from sdstudio.ui.prompt_panel import PromptPanel
from sdstudio.ui.queue_keeper import QueueKeeper
from sdstudio.ui.queue_panel import QueuePanel, dock_under
from sdstudio.ui.upscale_actions import UpscaleActions
from sdstudio.ui.welcome import WELCOME

log = logging.getLogger(__name__)


class MainWindow(QMainWindow):
    """The window people use all day."""

    def __init__(
        self,
        controller: GenerationController,
        library: ImageLibrary,
        paths: AppPaths,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("sdstudio")
        self._fit_to_screen(1280, 800)
        self.controller = controller
        self.library = library
        self.inputs_dir = paths.inputs_dir
        self.last_error = ""
        self.pending_settings: GenerationRequest | None = None
        self.pending_model_name = ""
        self.pending_trusted = False
        self.settings_box: QMessageBox | None = None
        self.last_image_path: str | None = None
        self._size: tuple[int, int] = (512, 512)

        self.panel = PromptPanel()
        self.canvas = Canvas()
        self.welcome = QLabel(WELCOME, objectName="welcome", wordWrap=True)
        self.welcome.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.welcome.setTextFormat(Qt.TextFormat.RichText)
        self.welcome.setMargin(48)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.welcome)
        self.stack.addWidget(self.canvas)

        self.gallery = GalleryPanel(library, paths.cache_dir / "thumbnails")
        splitter = QSplitter()
        splitter.addWidget(self.panel)
        splitter.addWidget(self.stack)
        splitter.addWidget(self.gallery)
        self.info_panel = InfoPanel(library.store.find_path, self)
        dock_under(self.stack, self.info_panel)
        self.queue_panel = QueuePanel(controller, self)
        dock_under(self.gallery, self.queue_panel)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([370, 610, 300])
        self.setCentralWidget(splitter)

        self.progress_status = ProgressStatus(controller, self.statusBar(), parent=self)
        self.progress = self.progress_status.bar
        self.progress_label = self.progress_status.label
        self.queue_label = self.progress_status.queue_label
        self.queue_keeper = QueueKeeper(controller, paths.queue_file, self, self.show_error)

        self.upscale_actions = UpscaleActions(self)
        self.control_actions = ControlActions(self)
        self.ip_adapter_actions = IpAdapterActions(self)
        self._add_actions()
        self.edit_toolbar = EditToolbar(self.canvas, self)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, self.edit_toolbar)
        self.edit_toolbar.add_menu(self.menuBar())
        self.control_tools = self.control_actions.add_layer_tools()
        self.canvas.file_dropped.connect(self.use_as_source)
        self.history_actions = HistoryActions(self)
        self.canvas.source_changed.connect(self._on_source_changed)
        self.panel.generate_requested.connect(self.generate)
        self.panel.cancel_requested.connect(self.cancel)
        self.panel.model.currentTextChanged.connect(self._update_welcome)
        controller.job_started.connect(self._on_job_started)
        controller.queue_changed.connect(self._on_queue_changed)
        controller.status.connect(self.progress_status.show_note)
        controller.progress.connect(self._on_progress)
        controller.image_saved.connect(self._on_image_saved)
        self.info_panel.use_entry_requested.connect(self.load_entry)
        self.info_panel.use_file_requested.connect(self.load_image_settings)
        self.info_panel.use_seed_requested.connect(lambda seed: self.panel.seed.setText(str(seed)))
        controller.finished.connect(self._on_finished)
        controller.cancelled.connect(self._on_cancelled)
        controller.failed.connect(self._on_failed)
        self._update_welcome(self.panel.model.currentText())

    def _fit_to_screen(self, width: int, height: int) -> None:
        """Open at ``width`` x ``height``, or smaller on a screen with less room."""
        screen = self.screen()
        if screen is not None:
            room = screen.availableGeometry()
            width = min(width, room.width() - 16)
            height = min(height, room.height() - 48)
        self.resize(max(width, 640), max(height, 480))

    def generate(self) -> int | None:
        """Queue a generation with the panel's settings and the canvas's source."""
        inputs: list[tuple[Path, Image.Image]] = []
        try:
            request = self.panel.request()
            request.check_prompts()
            source = self.canvas.source
            if source is not None:
                request = self._with_source(request, source, inputs)
        except SdStudioError as error:
            self.show_error(str(error))
            return None
        return self.controller.submit(request, tuple(inputs))

    def _with_source(
        self,
        request: GenerationRequest,
        source: Image.Image,
        inputs: list[tuple[Path, Image.Image]],
    ) -> GenerationRequest:
        """Image-to-image from the source; inpainting when a mask is painted.

        The images are named by their content here and written by the worker.
        """
        inputs.append((input_path(source, self.inputs_dir), source.copy()))
        changes: dict[str, object] = {
            "mode": Mode.IMG2IMG,
            "init_image": str(inputs[-1][0]),
            "strength": round(self.panel.strength.value(), 2),
            "hires": None,  # A1111's hires fix is a second pass of text to image only
        }
        if request.hires is not None:
            self.statusBar().showMessage(
                "The hires fix is for text to image; this job starts from the source image "
                "without it.",
                10_000,
            )
        if self.canvas.mask.has_paint():
            mask = self.canvas.mask.to_pil()
            inputs.append((input_path(mask, self.inputs_dir), mask))
            changes["mode"] = Mode.INPAINT
            changes["mask"] = str(inputs[-1][0])
        return request.replace(**changes)

    def use_as_source(self, path: Path) -> bool:
        """Make an image file the source for image-to-image; offer its settings."""
        try:
            image = open_image(path)
        except SdStudioError as error:
            self.show_error(str(error))
            return False
        self.canvas.set_source(image)
        self.stack.setCurrentWidget(self.canvas)
        self.info_panel.show_file(path)
        self.offer_settings(path)
        return True

    def _choose_image(self) -> None:
        file, _ = QFileDialog.getOpenFileName(
            self, "Open image", "", "Images (*.png *.jpg *.jpeg *.webp);;All files (*)"
        )
        if file:
            self.open_file(Path(file))

    def open_file(self, path: Path) -> None:
        """Make an image file the source, as a drop does, and offer its settings."""
        self.use_as_source(path)

    def offer_settings(self, path: Path) -> None:
        """If the image carries settings, ask (without blocking) whether to load them.

        For an image the history lists, its history entry's settings are offered.
        """
        try:
            settings = read_image_settings(path)
        except SdStudioError:
            return
        self.pending_settings, self.pending_model_name = settings.request, settings.model_name
        self.pending_trusted = False
        with contextlib.suppress(SdStudioError):
            entry = self.library.store.find_path(path)
            if entry is not None:
                self.pending_settings, self.pending_model_name = entry.request, entry.model_name
                self.pending_trusted = True
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "sdstudio",
            f"{path.name} carries generation settings ({settings.source}). "
            "Load them into the prompt panel?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            self,
        )
        details = "" if self.pending_trusted else settings_details(settings)
        if details:
            box.setDetailedText(details)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.accepted.connect(self.load_pending_settings)
        box.open()
        self.settings_box = box

    def load_pending_settings(self) -> None:
        """Load the settings offered by :meth:`offer_settings`, with the model and VAE
        the panel lists (see :func:`~sdstudio.ui.image_settings.settings_to_load`),
        and say what was not taken."""
        if self.pending_settings is None:
            return
        panel = self.panel
        choices = PanelChoices(
            models=_items(panel.model),
            vaes=_items(panel.vae),
            model=panel.model_path(),
            vae=panel.vae.value(),
        )
        request, notices = settings_to_load(
            self.pending_settings, self.pending_model_name, choices, trusted=self.pending_trusted
        )
        size = (self.panel.width_box.value(), self.panel.height_box.value())
        self.panel.load(request)
        if self.canvas.source is not None:  # the source decides the size
            self.panel.width_box.setValue(size[0])
            self.panel.height_box.setValue(size[1])
        self.pending_settings = None
        message = "; ".join(["Settings loaded", *notices]) + "."
        self.statusBar().showMessage(message, 15_000 if notices else 5_000)

    def load_image_settings(self, settings: ImageSettings) -> None:
        """Load the settings read from an opened image, as :meth:`load_pending_settings`
        does once they are offered."""
        self.pending_settings, self.pending_model_name = settings.request, settings.model_name
        self.pending_trusted = False
        self.load_pending_settings()

    def cancel(self) -> None:
        """Cancel the running job; the queued ones then run (Generate ▸ Cancel all stops all)."""
        self.controller.cancel()

    def show_error(self, message: str) -> None:
        """Tell the user something went wrong, without blocking the window."""
        self.last_error = message
        self.statusBar().showMessage(message, 10_000)
        box = QMessageBox(QMessageBox.Icon.Warning, "sdstudio", message, parent=self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    def _add_actions(self) -> None:
        generate = QAction("Generate", self)
        generate.setShortcuts([QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")])
        generate.triggered.connect(self.generate)
        cancel = QAction("Cancel", self)
        cancel.setShortcut(QKeySequence(Qt.Key.Key_Escape))
        cancel.triggered.connect(self.cancel)
        cancel_all = QAction("Cancel all", self, shortcut=QKeySequence("Shift+Esc"))
        cancel_all.setStatusTip("Cancel the running job and every queued one")
        cancel_all.triggered.connect(self.controller.cancel_all)
        fit = QAction("Fit", self, shortcut=QKeySequence("Ctrl+0"))
        fit.triggered.connect(self.canvas.fit)
        actual = QAction("Actual size", self, shortcut=QKeySequence("Ctrl+1"))
        actual.triggered.connect(self.canvas.actual_size)
        zoom_in = QAction("Zoom in", self, shortcut=QKeySequence.StandardKey.ZoomIn)
        zoom_in.triggered.connect(lambda: self.canvas.zoom(Canvas.ZOOM_STEP))
        zoom_out = QAction("Zoom out", self, shortcut=QKeySequence.StandardKey.ZoomOut)
        zoom_out.triggered.connect(lambda: self.canvas.zoom(1 / Canvas.ZOOM_STEP))
        for action in (generate, cancel, cancel_all, fit, actual, zoom_in, zoom_out):
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            self.addAction(action)
        open_image_action = QAction("Open image…", self, shortcut=QKeySequence.StandardKey.Open)
        open_image_action.triggered.connect(self._choose_image)
        quit_action = QAction("Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        self.file_menu = self.menuBar().addMenu("&File")
        self.file_menu.addAction(open_image_action)
        self.file_menu.addSeparator()
        self.file_menu.addAction(quit_action)
        self.quit_action = quit_action
        view = self.menuBar().addMenu("&View")
        for action in (fit, actual, zoom_in, zoom_out):
            view.addAction(action)
        view.addSeparator()
        view.addAction(self.queue_panel.toggleViewAction())
        view.addAction(self.info_panel.toggleViewAction())
        run = self.menuBar().addMenu("&Generate")
        run.addActions([generate, cancel, cancel_all])
        run.addSeparator()
        for extra in (self.upscale_actions, self.control_actions, self.ip_adapter_actions):
            run.addAction(extra.canvas_action)

    def load_entry(self, entry: HistoryEntry) -> None:
        """Load a history entry's settings, and its source image and mask, for editing."""
        self.history_actions.load_entry(entry)

    def show_entry(self, entry: HistoryEntry) -> None:
        """Show a history image on the canvas."""
        self.history_actions.show_entry(entry)

    def show_models(self, entries: list) -> None:
        """Offer the models, LoRAs, embeddings, VAEs and upscalers found on disk."""
        offer_found_models(self, entries)
        self._update_welcome(self.panel.model.currentText())

    def _on_source_changed(self) -> None:
        source = self.canvas.source
        message = self.panel.set_source_size(source.size if source is not None else None)
        if message:
            self.statusBar().showMessage(message, 15_000)
        if source is None and not self.canvas.has_image:
            self.info_panel.clear()
        self._update_welcome(self.panel.model.currentText())

    def _update_welcome(self, model: str) -> None:
        showing_canvas = bool(model.strip()) or self.canvas.has_image
        self.stack.setCurrentWidget(self.canvas if showing_canvas else self.welcome)

    def _on_job_started(self, job_id: int) -> None:
        job = self.controller.running
        if job is not None:
            self._size = (job.request.width, job.request.height)
        self.progress_status.start(job)
        self.panel.set_busy(True)

    def _on_queue_changed(self, waiting: int) -> None:
        self.progress_status.queue_changed(waiting)

    def _on_progress(
        self, job_id: int, step: int, total: int, index: int, batch: int, preview: object
    ) -> None:
        self.progress_status.step(job_id, step, total, index, batch)
        if isinstance(preview, Image.Image):
            self.canvas.show_image(preview, display_size=self._size)
            self.stack.setCurrentWidget(self.canvas)

    def _on_image_saved(self, job_id: int, entry: HistoryEntry) -> None:
        path = entry.path
        self.last_image_path = path
        self.panel.last_seed = entry.seed
        self.info_panel.show_entry(entry)
        try:
            self.canvas.show_image(open_image(path))
        except SdStudioError as error:
            log.warning("Could not show %s: %s", path, error)
        self.stack.setCurrentWidget(self.canvas)
        self.statusBar().showMessage(f"Saved {path}", 10_000)

    def _job_ended(self, text: str) -> None:
        busy = self.controller.running is not None
        self.panel.set_busy(busy)
        if not busy:
            self.progress_status.end(text)

    def _on_finished(self, job_id: int, paths: list) -> None:
        self._job_ended("Done")

    def _on_cancelled(self, job_id: int) -> None:
        ran = job_id == self.progress_status.job_id
        self._job_ended("Cancelled")
        self.statusBar().showMessage("Cancelled" if ran else "Removed a job from the queue", 5_000)

    def _on_failed(self, job_id: int, message: str) -> None:
        self._job_ended("Failed")
        self.show_error(message)

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self.queue_keeper.may_close():
            event.ignore()
            return
        self.controller.shutdown()
        self.gallery.shutdown()
        super().closeEvent(event)


def _items(box: QComboBox) -> list[tuple[str, str]]:
    """(text, data) of each item of a combo box whose data is a path."""
    return [(box.itemText(i), str(box.itemData(i) or "")) for i in range(box.count())]
