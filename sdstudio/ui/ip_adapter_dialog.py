"""The dialog that makes or edits one image prompt: its IP-Adapter, the reference images
it reads, how strongly and when it guides, the region it guides and its CLIP vision
encoder."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.control.image_prompts import (
    MAX_IMAGE_PROMPT_WEIGHT,
    MAX_REFERENCE_IMAGES,
    ImagePrompt,
)
from sdstudio.engine.errors import InvalidRequest, SdStudioError
from sdstudio.engine.images import open_checked
from sdstudio.ui.thumbnails import make_thumbnail, to_qimage

THUMB = 64
"""The side of a reference image's thumbnail, in pixels."""
AUTOMATIC = "Automatic"
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp);;All files (*)"
MODEL_FILTER = "IP-Adapters (*.safetensors *.bin *.pth *.ckpt);;All files (*)"


def image_problem(path: str, what: str = "reference image") -> str | None:
    """Why ``path`` cannot be read as an image (``None`` when it can): only its header is
    read, so checking a dropped photo stays quick."""
    try:
        open_checked(path, what=what).close()
    except SdStudioError as error:
        return str(error)
    return None


def chosen(combo: QComboBox) -> str:
    """The path behind the entry shown (a found file's), or the text typed."""
    index = combo.currentIndex()
    typed = combo.currentText().strip()
    data = combo.itemData(index) if index >= 0 else None
    return str(data) if data is not None and combo.itemText(index) == typed else typed


def select_path(combo: QComboBox, path: str) -> None:
    """Show ``path`` in ``combo``, adding it (by its file name) when it was not found."""
    index = combo.findData(path)
    if index < 0:
        combo.addItem(Path(path.replace("\\", "/")).stem or path, path)
        index = combo.count() - 1
    combo.setCurrentIndex(index)


class IpAdapterDialog(QDialog):
    """Asks for an image prompt's settings; :meth:`prompt` gives the result (or raises
    for an unusable one)."""

    def __init__(
        self,
        models: list[tuple[str, str]],
        encoders: list[tuple[str, str]] | None = None,
        parent: QWidget | None = None,
        *,
        prompt: ImagePrompt | None = None,
    ) -> None:
        """``models`` are the IP-Adapter files found and ``encoders`` the CLIP vision
        encoders found, each as (name, path)."""
        super().__init__(parent)
        self.setWindowTitle("Image prompt")
        self.model = QComboBox(editable=True)
        for name, path in models:
            self.model.addItem(name, path)
        self.model.setToolTip(
            "An IP-Adapter from A1111's models/ControlNet, ComfyUI's models/ipadapter, "
            "InvokeAI's ip_adapter folders or sdstudio's models/ipadapter, or a file's path"
        )
        self.images = QListWidget()
        self.images.setViewMode(QListView.ViewMode.IconMode)
        self.images.setIconSize(QSize(THUMB, THUMB))
        self.images.setMovement(QListView.Movement.Static)
        self.images.setResizeMode(QListView.ResizeMode.Adjust)
        self.images.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.images.setMinimumHeight(THUMB + 32)
        self.images.setMaximumHeight(2 * (THUMB + 32))
        self.images.setToolTip("The reference images the model reads (up to 8)")
        self.weight = QDoubleSpinBox(
            minimum=0.0, maximum=MAX_IMAGE_PROMPT_WEIGHT, singleStep=0.05, value=1.0
        )
        self.start = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.05, value=0.0)
        self.end = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.05, value=1.0)
        self.mask_path = QLineEdit(placeholderText="None: the whole picture")
        self.mask_path.setToolTip("A mask image: white where the image prompt guides")
        self.encoder = QComboBox(editable=True)
        self.encoder.addItem(AUTOMATIC, "")
        for name, path in encoders or []:
            self.encoder.addItem(name, path)
        self.encoder.setToolTip(
            "The CLIP vision encoder that reads the images; Automatic: the one the "
            "IP-Adapter was made with, found in the CLIP vision folders"
        )
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Model", _with_buttons(self.model, ("Browse…", self._browse_model)))
        form.addRow("Images", self._images_column())
        form.addRow("Weight", self.weight)
        form.addRow("Start", self.start)
        form.addRow("End", self.end)
        form.addRow(
            "Mask",
            _with_buttons(
                self.mask_path, ("Browse…", self._browse_mask), ("Clear", self.mask_path.clear)
            ),
        )
        form.addRow("Encoder", self.encoder)
        form.addRow(buttons)
        if prompt is not None:
            self._show(prompt)

    def _images_column(self) -> QWidget:
        add = QPushButton("Add…")
        add.clicked.connect(self._browse_images)
        remove = QPushButton("Remove")
        remove.clicked.connect(self.remove_selected_images)
        side = QVBoxLayout()
        side.setContentsMargins(0, 0, 0, 0)
        side.addWidget(add)
        side.addWidget(remove)
        side.addStretch(1)
        column = QWidget()
        row = QHBoxLayout(column)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.images, 1)
        row.addLayout(side)
        return column

    def _show(self, prompt: ImagePrompt) -> None:
        select_path(self.model, prompt.model)
        for path in prompt.images:
            self._append(path)
        self.weight.setValue(prompt.weight)
        self.start.setValue(prompt.start)
        self.end.setValue(prompt.end)
        self.mask_path.setText(prompt.mask)
        if prompt.encoder:
            select_path(self.encoder, prompt.encoder)

    def image_paths(self) -> list[str]:
        """The reference images listed, in order."""
        return [
            str(self.images.item(row).data(Qt.ItemDataRole.UserRole))
            for row in range(self.images.count())
        ]

    def add_images(self, paths: Iterable[str]) -> list[str]:
        """List the images of ``paths`` that can be read; returns why the others were not
        (not an image, already listed, one too many)."""
        problems = []
        for path in paths:
            problem = image_problem(path)
            if problem is None and path in self.image_paths():
                problem = f"{path} is already a reference image of this prompt."
            if problem is None and self.images.count() >= MAX_REFERENCE_IMAGES:
                problem = f"An image prompt takes at most {MAX_REFERENCE_IMAGES} reference images."
            if problem is None:
                self._append(path)
            else:
                problems.append(problem)
        return problems

    def remove_selected_images(self) -> None:
        """Take the selected reference images off the list."""
        for item in self.images.selectedItems():
            self.images.takeItem(self.images.row(item))

    def _append(self, path: str) -> None:
        thumbnail = make_thumbnail(path, THUMB)
        icon = (
            QIcon(QPixmap.fromImage(to_qimage(thumbnail)))
            if thumbnail is not None
            else self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        )
        item = QListWidgetItem(icon, Path(path).name)
        item.setData(Qt.ItemDataRole.UserRole, path)
        item.setToolTip(path if thumbnail is not None else f"{path}\n(cannot be read)")
        self.images.addItem(item)

    def _browse_model(self) -> None:
        file, _ = QFileDialog.getOpenFileName(self, "IP-Adapter", "", MODEL_FILTER)
        if file:
            select_path(self.model, file)

    def _browse_images(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Reference images", "", IMAGE_FILTER)
        problems = self.add_images(files)
        if problems:
            QMessageBox.warning(self, "sdstudio", "\n".join(problems))

    def _browse_mask(self) -> None:
        file, _ = QFileDialog.getOpenFileName(self, "Mask", "", IMAGE_FILTER)
        if file:
            self.mask_path.setText(file)

    def prompt(self) -> ImagePrompt:
        """The image prompt described; raises :class:`InvalidRequest` for an unusable one
        (no model, no images, an image or mask that cannot be read, a bad range)."""
        encoder = chosen(self.encoder)
        prompt = ImagePrompt(
            model=chosen(self.model),
            images=tuple(self.image_paths()),
            weight=round(self.weight.value(), 2),
            start=round(self.start.value(), 2),
            end=round(self.end.value(), 2),
            mask=self.mask_path.text().strip(),
            encoder="" if encoder == AUTOMATIC else encoder,
        )
        for path in prompt.images:
            problem = image_problem(path)
            if problem is not None:
                raise InvalidRequest(problem)
        if prompt.mask:
            problem = image_problem(prompt.mask, "image prompt's mask")
            if problem is not None:
                raise InvalidRequest(problem)
        return prompt


def _with_buttons(field: QWidget, *buttons: tuple[str, Callable[[], object]]) -> QWidget:
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(field, 1)
    for text, slot in buttons:
        button = QPushButton(text)
        button.clicked.connect(slot)
        row.addWidget(button)
    return box
