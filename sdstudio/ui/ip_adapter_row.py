"""The Image prompt row of the Advanced section: the IP-Adapters that will guide the next
image with reference images, added, edited and removed through
:class:`~sdstudio.ui.ip_adapter_dialog.IpAdapterDialog`.

Images dragged from the gallery or the file manager onto the row become reference
images: of the prompt they are dropped on (or the selected one), else of a new prompt.
Prompts loaded with an image's settings are kept as they are and go into the next
request: nothing is dropped on the way."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.control.image_prompts import (
    MAX_IMAGE_PROMPTS,
    MAX_REFERENCE_IMAGES,
    ImagePrompt,
)
from sdstudio.engine.errors import SdStudioError
from sdstudio.ui.ip_adapter_dialog import IpAdapterDialog, image_problem


def describe_prompt(prompt: ImagePrompt) -> str:
    """``ip-adapter_sd15 · 2 images · 0.6 · 0–1``, with "masked" when a mask is set."""
    model = Path(prompt.model.replace("\\", "/")).stem or prompt.model
    count = len(prompt.images)
    images = f"{count} image{'s' if count != 1 else ''}"
    text = f"{model} · {images} · {prompt.weight:g} · {prompt.start:g}–{prompt.end:g}"
    return f"{text} · masked" if prompt.mask else text


class IpAdapterRow(QWidget):
    """A short list of image prompts with Add, Edit and Remove, that takes dropped images."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._prompts: list[ImagePrompt] = []
        self._models: list[tuple[str, str]] = []
        self._encoders: list[tuple[str, str]] = []
        self.warn: Callable[[str], None] = self._warn
        """Tells the user why something was refused; replace it to collect the messages."""
        self.setAcceptDrops(True)
        self.list = QListWidget()
        self.list.setFixedHeight(64)  # never squeezed when the panel scrolls
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.list.setToolTip(
            "Image prompts (IP-Adapters) guiding the next image; double-click to edit, "
            "drop images on one to add reference images"
        )
        self.list.itemDoubleClicked.connect(lambda _item: self.edit())
        self.add_button = QPushButton("Add…")
        self.add_button.setToolTip("Add an image prompt (or drop an image here)")
        self.add_button.clicked.connect(lambda: self.add())
        self.edit_button = QPushButton("Edit…")
        self.edit_button.clicked.connect(lambda: self.edit())
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self.remove)
        buttons = QHBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        for button in (self.add_button, self.edit_button, self.remove_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.list)
        layout.addLayout(buttons)
        self._refresh()

    def set_models(
        self, models: list[tuple[str, str]], encoders: list[tuple[str, str]] | None = None
    ) -> None:
        """The IP-Adapter files and CLIP vision encoders found, as (name, path), offered by
        the dialog."""
        self._models = list(models)
        self._encoders = list(encoders or [])

    def values(self) -> tuple[ImagePrompt, ...]:
        """The image prompts, for the request."""
        return tuple(self._prompts)

    def load(self, prompts: tuple[ImagePrompt, ...]) -> None:
        """Take a request's image prompts (all of their settings are kept)."""
        self._prompts = list(prompts)
        self._refresh()

    def describe(self) -> str:
        """The header's words for the prompts ("" when there are none)."""
        count = len(self._prompts)
        return f"{count} image prompt{'s' if count != 1 else ''}" if count else ""

    def add(self, images: Sequence[str] = ()) -> bool:
        """Ask for a new image prompt, with ``images`` proposed as its reference images.
        Returns whether one was added."""
        if len(self._prompts) >= MAX_IMAGE_PROMPTS:
            self.warn(f"At most {MAX_IMAGE_PROMPTS} image prompts guide an image.")
            return False
        prompt = self._ask(None, images)
        if prompt is None:
            return False
        self._prompts.append(prompt)
        self._refresh()
        return True

    def edit(self, images: Sequence[str] = ()) -> bool:
        """Edit the selected image prompt, with ``images`` proposed as more reference
        images. Returns whether it changed."""
        row = self.list.currentRow()
        if not 0 <= row < len(self._prompts):
            return False
        prompt = self._ask(self._prompts[row], images)
        if prompt is None:
            return False
        self._prompts[row] = prompt
        self._refresh()
        return True

    def remove(self) -> None:
        """Remove the selected image prompt."""
        row = self.list.currentRow()
        if 0 <= row < len(self._prompts):
            del self._prompts[row]
            self._refresh()

    def propose(self, path: str) -> bool:
        """Offer ``path`` as a reference image: of the selected prompt, else of a new one,
        through the dialog. Returns whether a prompt was made or changed."""
        if self._current() is None:
            return self.add([path])
        return self.edit([path])

    def take_files(self, paths: Sequence[str], row: int | None = None) -> bool:
        """Add dropped ``paths`` as reference images of the prompt at ``row`` (default: the
        selected one) at once, or, with none, of a new prompt through the dialog. Files
        that are not images are refused with a message. Returns whether anything changed."""
        row = self._current() if row is None else row
        if row is None:
            return self.add(paths)
        prompt = self._prompts[row]
        images = list(prompt.images)
        problems = []
        for path in paths:
            problem = image_problem(path)
            if problem is None and path in images:
                problem = f"{path} is already a reference image of this prompt."
            if problem is None and len(images) >= MAX_REFERENCE_IMAGES:
                problem = f"An image prompt takes at most {MAX_REFERENCE_IMAGES} reference images."
            if problem is None:
                images.append(path)
            else:
                problems.append(problem)
        if problems:
            self.warn("\n".join(problems))
        if len(images) == len(prompt.images):
            return False
        self._prompts[row] = dataclasses.replace(prompt, images=tuple(images))
        self._refresh()
        return True

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        urls = event.mimeData().urls()
        paths = [url.toLocalFile() for url in urls if url.isLocalFile()]
        if len(paths) < len(urls):
            self.warn("Only image files on this computer can be reference images.")
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        self.take_files(paths, self._row_at(event.position().toPoint()))

    def _row_at(self, point: QPoint) -> int | None:
        """The prompt under ``point`` (in the row's coordinates), if the drop hit one."""
        if not self.list.isVisible():
            return None
        inside = self.list.viewport().mapFrom(self, point)
        if not self.list.viewport().rect().contains(inside):
            return None  # beside the list (an item scrolled out of view lies there too)
        item = self.list.itemAt(inside)
        return self.list.row(item) if item is not None else None

    def _current(self) -> int | None:
        row = self.list.currentRow()
        selected = 0 <= row < len(self._prompts) and self.list.item(row).isSelected()
        return row if selected else None

    def _ask(self, prompt: ImagePrompt | None, images: Sequence[str] = ()) -> ImagePrompt | None:
        dialog = IpAdapterDialog(self._models, self._encoders, self, prompt=prompt)
        problems = dialog.add_images(images)
        if problems:
            self.warn("\n".join(problems))
            if not dialog.image_paths():
                return None
        while dialog.exec() == QDialog.DialogCode.Accepted:
            try:
                return dialog.prompt()
            except SdStudioError as error:
                self.warn(str(error))
        return None

    def _warn(self, message: str) -> None:
        QMessageBox.warning(self, "sdstudio", message)

    def _refresh(self) -> None:
        self.list.clear()
        for prompt in self._prompts:
            item = QListWidgetItem(describe_prompt(prompt))
            lines = [describe_prompt(prompt), prompt.model, *prompt.images]
            if prompt.mask:
                lines.append(f"mask: {prompt.mask}")
            if prompt.encoder:
                lines.append(f"encoder: {prompt.encoder}")
            item.setToolTip("\n".join(lines))
            self.list.addItem(item)
        self.list.setVisible(bool(self._prompts))
        self.edit_button.setEnabled(bool(self._prompts))
        self.remove_button.setEnabled(bool(self._prompts))
        self.changed.emit()
