"""The prompt panel's folding "Advanced" section: rarely changed settings (the refiner and
the face detailer among them), and those of image-to-image and inpainting, shown only
while a source image is set."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.request import (
    MAX_BATCH,
    MAX_CLIP_SKIP,
    MAX_MASK_BLUR,
    MAX_MASKED_PADDING,
    GenerationRequest,
    InpaintArea,
    MaskedContent,
    ResizeMode,
)
from sdstudio.ui.control_row import ControlRow
from sdstudio.ui.detailer_row import DetailerRow
from sdstudio.ui.fast_mode_row import FastModeRow
from sdstudio.ui.ip_adapter_row import IpAdapterRow
from sdstudio.ui.refiner_row import RefinerRow
from sdstudio.ui.variation_rows import VariationRows

RESIZE_MODES = (
    ("Just resize", ResizeMode.RESIZE),
    ("Crop and resize", ResizeMode.CROP),
    ("Resize and fill", ResizeMode.FILL),
)
INPAINT_AREAS = (("Whole picture", InpaintArea.WHOLE), ("Only masked", InpaintArea.MASKED))
MASKED_CONTENTS = (
    ("Original", MaskedContent.ORIGINAL),
    ("Fill", MaskedContent.FILL),
    ("Latent noise", MaskedContent.LATENT_NOISE),
    ("Latent nothing", MaskedContent.LATENT_NOTHING),
)
_DEFAULTS = GenerationRequest(model="m", prompt="")


class AdvancedSettings(QWidget):
    """Clip skip, batch size and the source image's settings, folded away by default.

    The header names every setting that is not at its default, so a loaded clip skip
    or a batch of four is never hidden.
    """

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.toggle = QToolButton(checkable=True, objectName="advancedToggle")
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.toggle.setAutoRaise(True)
        self.toggle.toggled.connect(self.set_expanded)
        self.body = QWidget(visible=False)

        self.clip_skip = QSpinBox(minimum=1, maximum=MAX_CLIP_SKIP, value=_DEFAULTS.clip_skip)
        self.clip_skip.setToolTip(
            "Clip skip: 1 uses the text encoder's last layer, 2 the one before it "
            "(what many anime models were made with)"
        )
        self.batch = QSpinBox(minimum=1, maximum=MAX_BATCH, value=_DEFAULTS.batch_size)
        self.batch.setToolTip("How many images to make, with seeds s, s+1, …")
        self.resize_mode = _choices(RESIZE_MODES)
        self.resize_mode.setToolTip("How a source of another shape is fitted to the size")
        self.inpaint_area = _choices(INPAINT_AREAS)
        self.inpaint_area.setToolTip(
            "Only masked: repaint the masked area (with some padding) at the full size "
            "and paste it back"
        )
        self.masked_padding = _pixels(MAX_MASKED_PADDING, _DEFAULTS.masked_padding)
        self.masked_padding.setToolTip("Pixels of the picture around the mask the model sees")
        self.mask_blur = _pixels(MAX_MASK_BLUR, _DEFAULTS.mask_blur)
        self.mask_blur.setToolTip("How softly the repainted area blends into the picture")
        self.masked_content = _choices(MASKED_CONTENTS)
        self.masked_content.setToolTip("What the masked area starts from")
        self.refiner = RefinerRow()
        self.detailer = DetailerRow()
        self.control = ControlRow()
        self.ip_adapters = IpAdapterRow()
        self.fast = FastModeRow()
        self.variation = VariationRows(self)

        form = QFormLayout(self.body)
        form.setContentsMargins(12, 0, 0, 0)
        form.addRow("Clip skip", self.clip_skip)
        form.addRow("Batch", self.batch)
        form.addRow("Variation seed", self.variation.seed_row)
        form.addRow("Variation strength", self.variation.strength)
        form.addRow("Resize seed from", self.variation.resize_row)
        form.addRow("Refiner", self.refiner)
        form.addRow(self.detailer)
        form.addRow("ControlNet", self.control)
        form.addRow("Image prompt", self.ip_adapters)
        form.addRow("Fast mode", self.fast)
        form.addRow("Resize mode", self.resize_mode)
        form.addRow("Inpaint area", self.inpaint_area)
        form.addRow("Padding", self.masked_padding)
        form.addRow("Mask blur", self.mask_blur)
        form.addRow("Masked content", self.masked_content)
        self._form = form
        self._has_source = False

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.toggle, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.body)

        for box in (self.clip_skip, self.batch, self.masked_padding, self.mask_blur):
            box.valueChanged.connect(self._on_changed)
        for combo in (self.resize_mode, self.inpaint_area, self.masked_content):
            combo.currentIndexChanged.connect(self._on_changed)
        self.refiner.changed.connect(self._on_changed)
        self.detailer.changed.connect(self._on_changed)
        self.control.changed.connect(self._on_changed)
        self.ip_adapters.changed.connect(self._on_changed)
        self.fast.changed.connect(self._on_changed)
        self.variation.changed.connect(self._on_changed)
        self.set_source(False)

    def set_expanded(self, expanded: bool) -> None:
        """Unfold or fold the section."""
        self.toggle.setChecked(expanded)
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self.body.setVisible(expanded)

    def set_source(self, present: bool) -> None:
        """Show the image-to-image and inpainting settings only while a source is set."""
        self._has_source = present
        self._on_changed()

    def values(self) -> dict[str, Any]:
        """The settings as :class:`GenerationRequest` fields."""
        return {
            "clip_skip": self.clip_skip.value(),
            "batch_size": self.batch.value(),
            "resize_mode": self.resize_mode.currentData(),
            "inpaint_area": self.inpaint_area.currentData(),
            "masked_padding": self.masked_padding.value(),
            "mask_blur": self.mask_blur.value(),
            "masked_content": self.masked_content.currentData(),
            "refiner": self.refiner.value(),
            "detailer": self.detailer.values(),
            "control": self.control.values(),
            "ip_adapters": self.ip_adapters.values(),
            **self.fast.values(),
            **self.variation.values(),
        }

    def load(self, request: GenerationRequest) -> None:
        """Take the settings of a request."""
        self.clip_skip.setValue(request.clip_skip)
        self.batch.setValue(request.batch_size)
        _select(self.resize_mode, request.resize_mode)
        _select(self.inpaint_area, request.inpaint_area)
        self.masked_padding.setValue(request.masked_padding)
        self.mask_blur.setValue(request.mask_blur)
        _select(self.masked_content, request.masked_content)
        self.refiner.load(request.refiner)
        self.detailer.load(request.detailer)
        self.control.load(request.control)
        self.ip_adapters.load(request.ip_adapters)
        self.fast.load(request.fast)
        self.variation.load(request)

    def changed_settings(self) -> list[str]:
        """The settings in effect that are not at their defaults, in words."""
        said = []
        if self.clip_skip.value() != _DEFAULTS.clip_skip:
            said.append(f"clip skip {self.clip_skip.value()}")
        if self.batch.value() != _DEFAULTS.batch_size:
            said.append(f"batch {self.batch.value()}")
        if self.refiner.describe():
            said.append(self.refiner.describe())
        if self.detailer.switch.isChecked():
            said.append("detail faces")
        if self.control.describe():
            said.append(self.control.describe())
        if self.ip_adapters.describe():
            said.append(self.ip_adapters.describe())
        if self.fast.describe():
            said.append(self.fast.describe())
        if self.variation.describe():
            said.append(self.variation.describe())
        if self._has_source:
            for combo, default in (
                (self.resize_mode, _DEFAULTS.resize_mode),
                (self.inpaint_area, _DEFAULTS.inpaint_area),
                (self.masked_content, _DEFAULTS.masked_content),
            ):
                if combo.currentData() != default:
                    said.append(combo.currentText().lower())
            if self.mask_blur.value() != _DEFAULTS.mask_blur:
                said.append(f"mask blur {self.mask_blur.value()} px")
        return said

    def _on_changed(self) -> None:
        masked = self.inpaint_area.currentData() == InpaintArea.MASKED
        for widget in (self.resize_mode, self.inpaint_area, self.mask_blur, self.masked_content):
            self._form.setRowVisible(widget, self._has_source)
        self._form.setRowVisible(self.masked_padding, self._has_source and masked)
        said = self.changed_settings()
        self.toggle.setText("Advanced" + (f" ({', '.join(said)})" if said else ""))
        self.changed.emit()


def _choices(items: tuple[tuple[str, Any], ...]) -> QComboBox:
    combo = QComboBox()
    for text, value in items:
        combo.addItem(text, str(value))
    return combo


def _pixels(maximum: int, value: int) -> QSpinBox:
    box = QSpinBox(minimum=0, maximum=maximum, value=value)
    box.setSuffix(" px")
    return box


def _select(combo: QComboBox, value: object) -> None:
    index = combo.findData(str(value))
    if index >= 0:
        combo.setCurrentIndex(index)
