"""What the gallery asks of the main window: re-run, load, show and compare its images."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu

from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.history import HistoryEntry
from sdstudio.engine.images import open_image, open_mask
from sdstudio.engine.request import RANDOM_SEED, GenerationRequest, Mode
from sdstudio.ui.mask_layer import mask_from_pil

if TYPE_CHECKING:
    from sdstudio.ui.main_window import MainWindow


class HistoryActions:
    """Carries out the gallery's requests on the window's panel, canvas and queue."""

    def __init__(self, window: MainWindow) -> None:
        self.window = window
        gallery = window.gallery
        window.controller.image_saved.connect(lambda _job, entry: gallery.add_entry(entry))
        gallery.rerun_requested.connect(lambda entry: self.rerun(entry))
        gallery.rerun_new_seed_requested.connect(lambda entry: self.rerun(entry, new_seed=True))
        gallery.vary_requested.connect(lambda entry: self.vary(entry))
        self.vary_action = QAction("Vary the selected image", window)
        self.vary_action.setStatusTip("Four variations of the gallery's selected image")
        self.vary_action.triggered.connect(self._vary_current)
        for item in window.menuBar().actions():  # the Generate menu, made before
            menu = item.menu()
            if item.text() == "&Generate" and isinstance(menu, QMenu):
                menu.addAction(self.vary_action)
        gallery.load_settings_requested.connect(window.load_entry)
        gallery.use_as_init_requested.connect(lambda entry: window.use_as_source(Path(entry.path)))
        gallery.open_requested.connect(window.show_entry)
        gallery.compare_requested.connect(self.compare)
        gallery.message.connect(lambda text: window.statusBar().showMessage(text, 5_000))

    def rerun(self, entry: HistoryEntry, *, new_seed: bool = False) -> int | None:
        """Queue a history entry again: exactly (in the precision it was made in), or
        with a new random seed."""
        from sdstudio.engine.metadata.record import ImageRecord

        try:
            request = entry.request
            if new_seed:
                return self.window.controller.submit(request.replace(seed=RANDOM_SEED))
            device = ImageRecord.from_json(entry.record_json).device
        except SdStudioError as error:
            self.window.show_error(str(error))
            return None
        return self.window.controller.submit(request, recorded_device=device)

    def vary(self, entry: HistoryEntry) -> int | None:
        """Queue four variations of an entry: its request (seed and all) with a random
        variation seed at strength 0.25 (see :func:`.variation_noise.vary_request`)."""
        from sdstudio.engine.variation_noise import vary_request

        try:
            request = vary_request(entry.request)
        except SdStudioError as error:
            self.window.show_error(str(error))
            return None
        return self.window.controller.submit(request)

    def _vary_current(self) -> None:
        entry = self.window.gallery.current_entry()
        if entry is None:
            self.window.statusBar().showMessage("Select an image in the gallery to vary.", 5_000)
            return
        self.vary(entry)

    def load_entry(self, entry: HistoryEntry) -> None:
        """Load an entry's settings, and its source image and mask, for editing.

        The source goes in first: it proposes a size, which the entry's own then replaces.
        """
        window, canvas = self.window, self.window.canvas
        try:
            request = entry.request
            if request.mode is Mode.UPSCALE:
                self._load_upscaled(entry, request)
                return
            if request.init_image:
                canvas.set_source(open_image(request.init_image))
                if request.mask and canvas.source is not None:
                    mask, _ = open_mask(request.mask, canvas.source.size)
                    canvas.mask.replace(mask_from_pil(mask))
            elif canvas.source is not None:
                canvas.clear_source()
            window.panel.load(request)
        except SdStudioError as error:
            window.show_error(str(error))
            return
        window.statusBar().showMessage(f"Loaded the settings of image {entry.id}", 5_000)

    def _load_upscaled(self, entry: HistoryEntry, request: GenerationRequest) -> None:
        """An upscaled image's settings are its source's, where the source had some."""
        from sdstudio.engine.metadata.a1111 import read_parameters
        from sdstudio.engine.metadata.record import ImageRecord
        from sdstudio.engine.metadata.upscale_names import source_parameters

        extra = ImageRecord.from_json(entry.record_json).extra
        source = extra.get("source") if isinstance(extra.get("source"), dict) else {}
        upscale = request.upscale
        how = f"upscaled from {source.get('name') or 'an image'}"
        if upscale is not None:
            how += f" with {upscale.upscaler} ×{upscale.scale:g}"
        parameters = source_parameters(extra)
        if not parameters:
            self.window.show_error(
                f"Image {entry.id} was {how}; its source held no generation settings to load."
            )
            return
        self.window.panel.load(read_parameters(parameters).request)
        self.window.statusBar().showMessage(
            f"Image {entry.id} was {how}; loaded the source's settings.", 8_000
        )

    def show_entry(self, entry: HistoryEntry) -> None:
        """Show an entry's image on the canvas and its settings in the info panel."""
        window = self.window
        try:
            window.canvas.show_image(open_image(entry.path))
        except SdStudioError as error:
            window.show_error(str(error))
            return
        window.stack.setCurrentWidget(window.canvas)
        window.info_panel.show_entry(entry)

    def compare(self, first: HistoryEntry, second: HistoryEntry) -> None:
        """Open a window comparing two images and their settings."""
        from sdstudio.ui.compare import CompareDialog

        try:
            images = [open_image(first.path), open_image(second.path)]
        except SdStudioError as error:
            self.window.show_error(str(error))
            return
        dialog = CompareDialog((first, images[0]), (second, images[1]), self.window)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
