"""Generate ▸ X/Y/Z plot…: every cell queued as a normal job, then the grid shown.

The cells go through the window's :class:`~sdstudio.ui.controller.GenerationController`
like any generation, so the queue panel lists them, the gallery and the history get
each image, and cancelling works as usual. A :class:`PlotRun` follows its jobs; when
the last one has ended (finished, cancelled or failed) the grid of the images made
is drawn off the GUI thread, written into the outputs folder's ``grids`` folder and
shown. A plot none of whose cells made an image shows no grid.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QDialog, QMenu

from sdstudio.engine.errors import InvalidRequest, SdStudioError
from sdstudio.engine.history import HistoryEntry
from sdstudio.engine.xyz.compose import CellImage, compose_grid
from sdstudio.engine.xyz.plan import XyzPlot
from sdstudio.ui.controller import GenerationController
from sdstudio.ui.xyz_dialog import XyzDialog

if TYPE_CHECKING:
    from sdstudio.ui.main_window import MainWindow

log = logging.getLogger(__name__)


class PlotRun(QObject):
    """The jobs of one plot, followed until the last ends; then its grid is drawn.

    ``grid_ready`` carries (path, PIL image); ``grid_failed`` a message (the plot made
    no image, or the grid could not be written).
    """

    grid_ready = Signal(object, object)
    grid_failed = Signal(str)
    cancelled = Signal()
    """Every cell was cancelled before it made an image."""

    def __init__(
        self,
        plot: XyzPlot,
        controller: GenerationController,
        outputs_dir: Callable[[], Path],
        inputs: tuple[tuple[Path, Image.Image], ...] = (),
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.plot = plot
        self.outputs_dir = outputs_dir
        self.made: dict[int, CellImage] = {}
        self.failures: list[str] = []
        self._controller = controller
        controller.image_saved.connect(self._on_image_saved)
        controller.finished.connect(self._on_ended)
        controller.cancelled.connect(self._on_ended)
        controller.failed.connect(self._on_failed)
        self.jobs: dict[int, int] = {}
        """Job id to cell index, for the jobs not yet ended."""
        for cell in plot.cells:
            self.jobs[controller.submit(cell.request, inputs)] = cell.index
        self.job_ids = list(self.jobs)

    def _on_image_saved(self, job_id: int, entry: HistoryEntry) -> None:
        index = self.jobs.get(job_id)
        if index is not None and index not in self.made:  # a batch: its first image
            self.made[index] = CellImage(str(entry.path), entry.id)

    def _on_failed(self, job_id: int, message: str) -> None:
        if job_id in self.jobs:
            self.failures.append(message)
        self._on_ended(job_id)

    def _on_ended(self, job_id: int, *_: object) -> None:
        if self.jobs.pop(job_id, None) is None or self.jobs:
            return
        controller = self._controller
        for signal, slot in (
            (controller.image_saved, self._on_image_saved),
            (controller.finished, self._on_ended),
            (controller.cancelled, self._on_ended),
            (controller.failed, self._on_failed),
        ):
            signal.disconnect(slot)
        if not self.made:
            if self.failures:
                self.grid_failed.emit(f"The X/Y/Z plot made no image: {self.failures[0]}")
            else:
                self.cancelled.emit()
            return
        made, folder = dict(self.made), self.outputs_dir()
        threading.Thread(
            target=self._compose, args=(made, folder), name="xyz-grid", daemon=True
        ).start()

    def _compose(self, made: dict[int, CellImage], folder: Path) -> None:
        """Draw and write the grid (off the GUI thread: PIL only)."""
        try:
            path, grid = compose_grid(self.plot, made, folder)
        except (SdStudioError, OSError) as error:
            log.warning("The X/Y/Z grid could not be made", exc_info=True)
            self.grid_failed.emit(f"The X/Y/Z grid could not be made: {error}")
            return
        self.grid_ready.emit(path, grid)


class XyzActions(QObject):
    """The window's "X/Y/Z plot…" action (in its Generate menu, or ``menu``), its dialog
    and the runs it starts; owned by the window."""

    def __init__(self, window: MainWindow, menu: QMenu | None = None) -> None:
        super().__init__(window)
        self.window = window
        self.runs: list[PlotRun] = []
        self.dialog: XyzDialog | None = None
        self.viewer: QDialog | None = None
        """The last grid shown."""
        self.action = QAction("X/Y/Z plot…", window)
        self.action.setStatusTip("Generate a grid of images varying up to three settings")
        self.action.triggered.connect(self.open_dialog)
        menu = menu or _generate_menu(window)
        if menu is not None:
            menu.addAction(self.action)

    def open_dialog(self) -> XyzDialog | None:
        """Ask for the axes over the prompt panel's settings (starting from the canvas's
        source image, if there is one, as Generate does)."""
        inputs: list[tuple[Path, Image.Image]] = []
        try:
            base = self.window.panel.request()
            source = self.window.canvas.source
            if source is not None:
                base = self.window._with_source(base, source, inputs)
        except SdStudioError as error:
            self.window.show_error(str(error))
            return None
        dialog = XyzDialog(base, self._resolve_model, self.window)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.run(dialog.plot, tuple(inputs)))
        self.dialog = dialog
        dialog.open()
        return dialog

    def run(
        self, plot: XyzPlot | None, inputs: tuple[tuple[Path, Image.Image], ...] = ()
    ) -> PlotRun | None:
        """Queue every cell of ``plot`` (with the input images its requests name)."""
        if plot is None:
            return None
        try:
            for cell in plot.cells:
                cell.request.check_prompts()
        except SdStudioError as error:
            self.window.show_error(str(error))
            return None
        run = PlotRun(plot, self.window.controller, self._outputs_dir, inputs, self.window)
        run.grid_ready.connect(lambda path, grid: self._show(run, path, grid))
        run.grid_failed.connect(lambda message: self._failed(run, message))
        run.cancelled.connect(lambda: self._failed(run, ""))
        self.runs.append(run)
        return run

    def _outputs_dir(self) -> Path:
        return self.window.library.writer.folder

    def _resolve_model(self, name: str) -> str:
        """A Checkpoint name value: a model of the picker (by name or path, any case; the
        first whose name contains it, as A1111 matches), or the path given."""
        box = self.window.panel.model
        entries = [(box.itemText(i), str(box.itemData(i) or "")) for i in range(box.count())]
        key = name.strip().casefold()
        for text, path in entries:
            if key in (text.casefold(), path.casefold(), Path(path).stem.casefold()):
                return path or text
        for text, path in entries:
            if key and key in text.casefold():
                return path or text
        if Path(name).expanduser().exists():
            return str(Path(name).expanduser().resolve())
        raise InvalidRequest(f"Unknown checkpoint {name.strip()!r}: pick a model listed.")

    def _show(self, run: PlotRun, path: Path, grid: Image.Image) -> None:
        from sdstudio.ui.compare import ImageDialog

        if run in self.runs:
            self.runs.remove(run)
        self.window.statusBar().showMessage(f"X/Y/Z grid saved: {path}", 10_000)
        viewer = ImageDialog("X/Y/Z plot", grid, str(path), self.window)
        viewer.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.viewer = viewer
        viewer.show()

    def _failed(self, run: PlotRun, message: str) -> None:
        if run in self.runs:
            self.runs.remove(run)
        if message:
            self.window.show_error(message)
        else:
            self.window.statusBar().showMessage("The X/Y/Z plot was cancelled.", 10_000)


def _generate_menu(window: MainWindow) -> QMenu | None:
    for action in window.menuBar().actions():
        menu = action.menu()
        if action.text().replace("&", "") == "Generate" and isinstance(menu, QMenu):
            return menu
    return None
