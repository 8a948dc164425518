"""Pictures proposed as reference images of an image prompt (IP-Adapter): a gallery
image, or the canvas's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtGui import QAction

from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.history import HistoryEntry
from sdstudio.engine.images import store_input

if TYPE_CHECKING:
    from sdstudio.ui.main_window import MainWindow


class IpAdapterActions:
    """The gallery's "Use as image prompt…" and the Generate menu's canvas action."""

    def __init__(self, window: MainWindow) -> None:
        self.window = window
        self.canvas_action = QAction("Use the picture as an image prompt…", window)
        self.canvas_action.setStatusTip(
            "Guide the next image with the picture on the canvas (IP-Adapter)"
        )
        self.canvas_action.triggered.connect(self.use_canvas)
        window.gallery.ip_adapter_requested.connect(self.use_entry)

    def use_entry(self, entry: HistoryEntry) -> bool:
        """Propose a gallery image as a reference image (of the selected image prompt,
        else of a new one)."""
        return self._propose(entry.path)

    def use_canvas(self) -> bool:
        """Keep the canvas's picture (the output shown, else the source) in the inputs
        folder and propose it as a reference image. Returns whether it was proposed."""
        canvas = self.window.canvas
        image = canvas.output_image() if canvas.has_output else canvas.source
        if image is None:
            self.window.show_error("There is no picture on the canvas to use as an image prompt.")
            return False
        try:
            path = store_input(image, self.window.inputs_dir)
        except (OSError, SdStudioError) as error:
            self.window.show_error(f"The picture could not be kept for the image prompt: {error}")
            return False
        self._propose(str(path))
        return True

    def _propose(self, path: str) -> bool:
        advanced = self.window.panel.advanced
        advanced.set_expanded(True)
        return advanced.ip_adapters.propose(path)
