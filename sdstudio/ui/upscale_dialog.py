"""The Upscale dialog: which upscaler, by how much, and whether the model repaints the
result tile by tile (SD upscale)."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.refine.upscale_settings import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    MAX_UPSCALE,
    Upscale,
)

BUILT_IN = ("Lanczos", "Nearest")


@dataclass(frozen=True, slots=True)
class UpscaleChoice:
    """What the user chose: the upscale, and for SD upscale the repaint settings."""

    upscale: Upscale
    repaint: bool = False
    denoise: float = 0.3
    tile_width: int = 512
    tile_height: int = 512


class UpscaleDialog(QDialog):
    """Asks how to upscale an image of a known size; shows the size it will have."""

    def __init__(
        self,
        size: tuple[int, int],
        upscalers: list[tuple[str, str]],
        parent: QWidget | None = None,
        *,
        tile_size: tuple[int, int] = (512, 512),
        model: str = "",
    ) -> None:
        """``upscalers`` are the upscaler files found, as (name, path); ``tile_size`` is the
        prompt panel's size (SD upscale's tiles) and ``model`` the model that repaints."""
        super().__init__(parent)
        self.setWindowTitle("Upscale")
        self._size = size
        self.upscaler = QComboBox()
        for name in BUILT_IN:
            self.upscaler.addItem(name, name)
        for name, path in sorted(upscalers, key=lambda item: item[0].casefold()):
            self.upscaler.addItem(name, name)
            self.upscaler.setItemData(self.upscaler.count() - 1, path, 3)  # tooltip role
        if upscalers:
            self.upscaler.setCurrentIndex(len(BUILT_IN))
        self.upscaler.setToolTip(
            "Upscaler files (ESRGAN, SwinIR, DAT…) are found in the upscaler folders: "
            "A1111's models/ESRGAN and RealESRGAN, ComfyUI's models/upscale_models, "
            "and sdstudio's models/upscalers"
        )
        self.scale = QDoubleSpinBox(minimum=1.0, maximum=MAX_UPSCALE, singleStep=0.5, value=4.0)
        self.scale.setDecimals(2)
        self.tile = QSpinBox(minimum=0, maximum=4096, singleStep=64, value=DEFAULT_TILE)
        self.tile.setSpecialValueText("Whole image")
        self.tile.setToolTip("Source pixels an upscaler file works on at a time: less memory")
        self.result_size = QLabel()
        form = QFormLayout()
        form.addRow("Upscaler", self.upscaler)
        form.addRow("Scale", self.scale)
        form.addRow("Tile", self.tile)
        form.addRow("Result", self.result_size)
        self.repaint = QGroupBox("Repaint with the model (SD upscale)")
        self.repaint.setCheckable(True)
        self.repaint.setChecked(False)
        self.repaint.setEnabled(bool(model))
        self.repaint.setToolTip(
            "Repaint the upscaled image tile by tile with image-to-image, using the prompt "
            "panel's model, prompt and sampler"
            if model
            else "Choose a model first"
        )
        self.denoise = QDoubleSpinBox(minimum=0.01, maximum=1.0, singleStep=0.05, value=0.3)
        self.tile_width = QSpinBox(minimum=64, maximum=2048, singleStep=64, value=tile_size[0])
        self.tile_height = QSpinBox(minimum=64, maximum=2048, singleStep=64, value=tile_size[1])
        self.overlap = QSpinBox(minimum=0, maximum=512, singleStep=16, value=DEFAULT_OVERLAP)
        repaint_form = QFormLayout(self.repaint)
        repaint_form.addRow("Denoising strength", self.denoise)
        repaint_form.addRow("Tile width", self.tile_width)
        repaint_form.addRow("Tile height", self.tile_height)
        repaint_form.addRow("Overlap", self.overlap)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Upscale")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.repaint)
        layout.addWidget(buttons)
        self.scale.valueChanged.connect(self._show_size)
        self._show_size()

    def _show_size(self) -> None:
        width, height = self._size
        scale = self.scale.value()
        self.result_size.setText(
            f"{width}x{height} → {max(1, round(width * scale))}x{max(1, round(height * scale))}"
        )

    def choice(self) -> UpscaleChoice:
        """The settings chosen (valid: the boxes allow no others)."""
        upscale = Upscale(
            upscaler=str(self.upscaler.currentData()),
            scale=round(self.scale.value(), 2),
            tile=self.tile.value() if self.tile.value() == 0 else max(32, self.tile.value()),
            overlap=self.overlap.value(),
        )
        return UpscaleChoice(
            upscale,
            repaint=self.repaint.isChecked(),
            denoise=round(self.denoise.value(), 2),
            tile_width=self.tile_width.value() // 8 * 8,
            tile_height=self.tile_height.value() // 8 * 8,
        )
