"""The dialog that makes or edits one ControlNet unit: its model, control image,
preprocessor, and how strongly and when it guides."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from sdstudio.engine.control.annotators import Annotators
from sdstudio.engine.control.units import MAX_WEIGHT, ControlMode, ControlResize, ControlUnit
from sdstudio.engine.errors import InvalidRequest, SdStudioError

MODES = (
    ("Balanced", ControlMode.BALANCED),
    ("My prompt is more important", ControlMode.PROMPT),
    ("ControlNet is more important", ControlMode.CONTROL),
)
RESIZES = (
    ("Crop and resize", ControlResize.CROP),
    ("Just resize", ControlResize.RESIZE),
    ("Resize and fill", ControlResize.FILL),
)
PREVIEW = 160
"""The side of the map preview, in pixels."""
PREPROCESSORS = ("none", "canny", "invert", "lineart_standard", "scribble_xdog",
                 "tile_resample", "shuffle")  # fmt: skip
"""Offered when the preprocessors' own list cannot be read."""


def preprocessor_names() -> list[str]:
    """The preprocessors sdstudio runs, by A1111's module names."""
    try:
        from sdstudio.engine.control import preprocessor_modules

        names = getattr(preprocessor_modules, "AVAILABLE", None)
        return list(names) if names else list(PREPROCESSORS)
    except ImportError:
        return list(PREPROCESSORS)


def app_annotators() -> Annotators:
    """The annotator folders of this user's settings (read now: a folder just added
    counts), for the preview of a map that needs weights."""
    from sdstudio.engine.control.annotators import Annotators, annotator_folders
    from sdstudio.engine.paths import AppPaths
    from sdstudio.engine.settings import load_settings

    paths = AppPaths.default()
    return Annotators(annotator_folders(paths, load_settings(paths)))


class ControlUnitDialog(QDialog):
    """Asks for a unit's settings; :meth:`unit` gives the result (or raises for a bad one)."""

    def __init__(
        self,
        models: list[tuple[str, str]],
        parent: QWidget | None = None,
        *,
        unit: ControlUnit | None = None,
        size: tuple[int, int] = (512, 512),
        preprocessor: str = "",
    ) -> None:
        """``models`` are the ControlNet files found, as (name, path); ``size`` is the
        image's size, at which the map is previewed; ``preprocessor`` is proposed for a
        new unit (``"none"`` for an image that already is a map)."""
        super().__init__(parent)
        self.setWindowTitle("ControlNet unit")
        self.model = QComboBox(editable=True)
        for name, path in models:
            self.model.addItem(name, path)
        self.model.setToolTip(
            "A ControlNet from A1111's models/ControlNet, ComfyUI's models/controlnet or "
            "sdstudio's models/controlnet, or a file's path"
        )
        self.image = QLineEdit(placeholderText="The control image (a picture or a drawn map)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        image_row = QHBoxLayout()
        image_row.setContentsMargins(0, 0, 0, 0)
        image_row.addWidget(self.image, 1)
        image_row.addWidget(browse)
        self.preprocessor = QComboBox(editable=True)
        self.preprocessor.addItems(preprocessor_names())
        if preprocessor:
            self.preprocessor.setCurrentText(preprocessor)
        self.weight = QDoubleSpinBox(minimum=0.0, maximum=MAX_WEIGHT, singleStep=0.05, value=1.0)
        self.start = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.05, value=0.0)
        self.end = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.05, value=1.0)
        self.mode = QComboBox()
        for text, value in MODES:
            self.mode.addItem(text, value.value)
        self.resize_mode = QComboBox()
        for text, value in RESIZES:
            self.resize_mode.addItem(text, value.value)
        self.resolution = QSpinBox(minimum=64, maximum=2048, singleStep=64, value=512)
        self.pixel_perfect = QCheckBox("Pixel Perfect")
        self.pixel_perfect.setToolTip(
            "Preprocess at the size the image takes in the generated picture (A1111's Pixel "
            "Perfect) instead of at the processor resolution"
        )
        self.pixel_perfect.toggled.connect(lambda on: self.resolution.setEnabled(not on))
        self._size = size
        self.preview = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumSize(PREVIEW, PREVIEW)
        self.preview.setToolTip("The control map the ControlNet will read")
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        show = buttons.addButton("Preview map", QDialogButtonBox.ButtonRole.ActionRole)
        show.clicked.connect(self.show_map)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Model", self.model)
        form.addRow("Image", image_row)
        form.addRow("Preprocessor", self.preprocessor)
        form.addRow("Weight", self.weight)
        form.addRow("Start", self.start)
        form.addRow("End", self.end)
        form.addRow("Control mode", self.mode)
        form.addRow("Resize mode", self.resize_mode)
        form.addRow("Processor res", self.resolution)
        form.addRow("", self.pixel_perfect)
        form.addRow(self.preview)
        form.addRow(buttons)
        self._kept = unit
        if unit is not None:
            self._show(unit)

    def _show(self, unit: ControlUnit) -> None:
        index = self.model.findData(unit.model)
        if index < 0:
            self.model.addItem(Path(unit.model.replace("\\", "/")).stem or unit.model, unit.model)
            index = self.model.count() - 1
        self.model.setCurrentIndex(index)
        self.image.setText(unit.image)
        self.preprocessor.setCurrentText(unit.preprocessor)
        self.weight.setValue(unit.weight)
        self.start.setValue(unit.start)
        self.end.setValue(unit.end)
        self.mode.setCurrentIndex(max(0, self.mode.findData(unit.mode.value)))
        self.resize_mode.setCurrentIndex(max(0, self.resize_mode.findData(unit.resize.value)))
        self.resolution.setValue(unit.resolution)
        self.pixel_perfect.setChecked(unit.pixel_perfect)

    def _browse(self) -> None:
        file, _ = QFileDialog.getOpenFileName(
            self, "Control image", "", "Images (*.png *.jpg *.jpeg *.webp);;All files (*)"
        )
        if file:
            self.image.setText(file)

    def show_map(self) -> bool:
        """Preview the unit's control map at the image's size; say why where it cannot be
        made. Returns whether a map is shown."""
        from sdstudio.engine.control.preprocessors import check_preprocessor, control_map
        from sdstudio.engine.images import open_image
        from sdstudio.ui.canvas import pil_to_qimage

        try:
            unit = self.unit()
            annotators = app_annotators()
            check_preprocessor(unit, annotators)
            image = open_image(unit.image, what="control image")
            made = control_map(image, unit, self._size, annotators=annotators)
        except SdStudioError as error:
            self.preview.setPixmap(QPixmap())
            self.preview.setText(str(error))
            self.preview.setWordWrap(True)
            return False
        pixmap = QPixmap.fromImage(pil_to_qimage(made))
        self.preview.setPixmap(
            pixmap.scaled(
                PREVIEW,
                PREVIEW,
                Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.SmoothTransformation,
            )
        )
        return True

    def unit(self) -> ControlUnit:
        """The unit described; raises :class:`InvalidRequest` for an unusable one. Settings
        the dialog does not show (thresholds, Union type) are kept from the unit edited."""
        index = self.model.currentIndex()
        typed = self.model.currentText().strip()
        data = self.model.itemData(index) if index >= 0 else None
        model = str(data) if data and self.model.itemText(index) == typed else typed
        kept = self._kept
        unit = ControlUnit(
            model=model,
            image=self.image.text().strip(),
            preprocessor=self.preprocessor.currentText().strip() or "none",
            weight=round(self.weight.value(), 2),
            start=round(self.start.value(), 2),
            end=round(self.end.value(), 2),
            mode=ControlMode(self.mode.currentData()),
            resize=ControlResize(self.resize_mode.currentData()),
            resolution=self.resolution.value(),
            pixel_perfect=self.pixel_perfect.isChecked(),
            threshold_a=kept.threshold_a if kept else None,
            threshold_b=kept.threshold_b if kept else None,
            control_type=kept.control_type if kept else "",
        )
        if not Path(unit.image).is_file():
            raise InvalidRequest(f"The control image {unit.image} is not a file.")
        return unit
