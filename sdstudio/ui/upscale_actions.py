"""Upscaling from the app: a gallery image or the canvas's picture, with an upscaler
alone or repainted by the model (SD upscale), queued like any generation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QDialog

from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.history import HistoryEntry
from sdstudio.engine.images import input_path, open_image
from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.ui.upscale_dialog import UpscaleChoice, UpscaleDialog

if TYPE_CHECKING:
    from sdstudio.ui.main_window import MainWindow


def upscale_request(
    choice: UpscaleChoice, source: Path, size: tuple[int, int], panel: GenerationRequest | None
) -> GenerationRequest:
    """The job for ``choice`` on the image at ``source`` (of ``size``): an upscale alone,
    or, with repainting, image-to-image from ``panel``'s settings (model, prompt,
    sampler…) with tiles of the chosen size."""
    from sdstudio.engine.refine.upscale_job import check_upscaled_size

    if not choice.repaint or panel is None:
        width, height = check_upscaled_size(*size, choice.upscale.scale)
        return GenerationRequest(
            model="",
            prompt="",
            mode=Mode.UPSCALE,
            init_image=str(source),
            width=width,
            height=height,
            upscale=choice.upscale,
        )
    check_upscaled_size(*size, choice.upscale.scale)
    return panel.replace(
        mode=Mode.IMG2IMG,
        init_image=str(source),
        mask=None,
        strength=choice.denoise,
        width=choice.tile_width,
        height=choice.tile_height,
        batch_size=1,
        hires=None,
        refiner=None,
        upscale=choice.upscale,
    )


class UpscaleActions:
    """The window's Upscale actions: in the gallery's menu and the Generate menu."""

    def __init__(self, window: MainWindow) -> None:
        self.window = window
        self.upscalers: list[tuple[str, str]] = []
        """The upscaler files found, as (name, path)."""
        self.canvas_action = QAction("Upscale the picture…", window)
        self.canvas_action.setStatusTip("Make the picture on the canvas larger")
        self.canvas_action.triggered.connect(self.upscale_canvas)
        window.gallery.upscale_requested.connect(self.upscale_entry)

    def upscale_entry(self, entry: HistoryEntry) -> int | None:
        """Ask how to upscale a gallery image, and queue it."""
        try:
            image = open_image(entry.path)
        except SdStudioError as error:
            self.window.show_error(str(error))
            return None
        return self._ask(Path(entry.path), image, ())

    def upscale_canvas(self) -> int | None:
        """Ask how to upscale the canvas's picture (the output shown, else the source)."""
        canvas = self.window.canvas
        image = canvas.output_image() if canvas.has_output else canvas.source
        if image is None:
            self.window.show_error("There is no picture on the canvas to upscale.")
            return None
        path = input_path(image, self.window.inputs_dir)
        return self._ask(path, image, ((path, image.copy()),))

    def _ask(
        self, path: Path, image: Image.Image, inputs: tuple[tuple[Path, Image.Image], ...]
    ) -> int | None:
        window = self.window
        panel_size = window.panel.size_row.size()
        dialog = UpscaleDialog(
            image.size,
            self.upscalers,
            window,
            tile_size=panel_size,
            model=window.panel.model_path(),
        )
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return None
        choice = dialog.choice()
        try:
            panel = window.panel.request() if choice.repaint else None
            request = upscale_request(choice, path, image.size, panel)
            request.check_prompts()
        except SdStudioError as error:
            window.show_error(str(error))
            return None
        return window.controller.submit(request, inputs)
