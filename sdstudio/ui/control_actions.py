"""Pictures proposed as ControlNet control images: a gallery image, or the canvas's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMainWindow

from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.history import HistoryEntry
from sdstudio.engine.images import store_input

if TYPE_CHECKING:
    from sdstudio.ui.control_layer_tools import ControlLayerToolbar
    from sdstudio.ui.main_window import MainWindow


class ControlActions:
    """The gallery's "Use as ControlNet image…" and the Generate menu's canvas action."""

    def __init__(self, window: MainWindow) -> None:
        self.window = window
        self.canvas_action = QAction("Use the picture as a ControlNet image…", window)
        self.canvas_action.setStatusTip("Guide the next image with the picture on the canvas")
        self.canvas_action.triggered.connect(self.use_canvas)
        window.gallery.control_requested.connect(self.use_entry)

    def use_entry(self, entry: HistoryEntry) -> None:
        """Propose a gallery image as the control image of a new unit."""
        self._propose(entry.path)

    def use_canvas(self) -> bool:
        """Keep the canvas's picture (the output shown, else the source) in the inputs
        folder and propose it as the control image of a new unit."""
        canvas = self.window.canvas
        image = canvas.output_image() if canvas.has_output else canvas.source
        if image is None:
            self.window.show_error("There is no picture on the canvas to guide with.")
            return False
        try:
            path = store_input(image, self.window.inputs_dir)
        except (OSError, SdStudioError) as error:
            self.window.show_error(f"The picture could not be kept for the ControlNet: {error}")
            return False
        self._propose(str(path))
        return True

    def _propose(self, path: str) -> None:
        advanced = self.window.panel.advanced
        advanced.set_expanded(True)
        advanced.control.add(path)

    def add_layer_tools(self) -> ControlLayerToolbar:
        """The control layer's toolbar, over the canvas (not in the window's tool rows,
        which would take height from the prompt panel), and its actions in the Image
        menu; the canvas's page takes the panel's size."""
        from sdstudio.ui.control_layer_tools import ControlLayerToolbar

        window = self.window
        panel = window.panel
        tools = ControlLayerToolbar(
            window.canvas, panel.advanced.control, window.inputs_dir, window.show_error, window
        )
        tools.status_bar = window.statusBar()
        tools.before_adding = lambda: panel.advanced.set_expanded(True)
        strokes = window.canvas.strokes
        strokes.page_size = panel.size_row.size
        for box in (panel.width_box, panel.height_box):
            box.valueChanged.connect(lambda _value: strokes.sync())
        pane = window.stack.parentWidget()  # the canvas's column, when it holds docks
        host = pane if isinstance(pane, QMainWindow) else window
        host.addToolBar(Qt.ToolBarArea.TopToolBarArea, tools)
        tools.add_to_menu(window.edit_toolbar.menu)
        return tools
