"""The Advanced section's "Fast mode" row: an opt-in step cache or token merging and its
one parameter (see :mod:`sdstudio.engine.speed`). The mode is recorded with each image,
so a re-run computes the same pixels."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QWidget

from sdstudio.engine.speed.fast_mode import (
    DEEP_CACHE,
    DEFAULT_BRANCH,
    DEFAULT_INTERVAL,
    DEFAULT_RATIO,
    DEFAULT_THRESHOLD,
    FIRST_BLOCK_CACHE,
    MAX_INTERVAL,
    MAX_RATIO,
    MAX_THRESHOLD,
    TOKEN_MERGING,
    FastMode,
)

CHOICES = (
    ("Off", None),
    ("DeepCache (SD, SDXL)", DEEP_CACHE),
    ("Token merging (SD, SDXL)", TOKEN_MERGING),
    ("First-block cache (Flux.1, Qwen-Image)", FIRST_BLOCK_CACHE),
)
_PARAMETER: dict[str, tuple[str, float, float, float, int, float, str]] = {
    DEEP_CACHE: (
        "interval",
        2,
        MAX_INTERVAL,
        1,
        0,
        DEFAULT_INTERVAL,
        "Every how many steps the whole UNet runs; the steps between reuse its deep "
        "features (2: every other step; more: faster, further from the full image)",
    ),
    TOKEN_MERGING: (
        "ratio",
        0.05,
        MAX_RATIO,
        0.05,
        2,
        DEFAULT_RATIO,
        "The share of tokens merged before self-attention in the largest blocks",
    ),
    FIRST_BLOCK_CACHE: (
        "threshold",
        0.0,
        MAX_THRESHOLD,
        0.01,
        3,
        DEFAULT_THRESHOLD,
        "Reuse the other blocks' work while the first block's output changed less than "
        "this (higher: faster, further from the full image)",
    ),
}


class FastModeRow(QWidget):
    """A mode combo and the mode's one parameter."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.mode = QComboBox()
        for label, method in CHOICES:
            self.mode.addItem(label, method)
        self.mode.setToolTip(
            "Skip part of the denoiser's work on some steps: faster, and the image moves a "
            "little from the full computation. Recorded with the image."
        )
        self.parameter = QDoubleSpinBox()
        self._branch = DEFAULT_BRANCH
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.mode, 1)
        layout.addWidget(self.parameter)
        self.mode.currentIndexChanged.connect(self._on_mode)
        self.parameter.valueChanged.connect(self.changed)
        self._on_mode()

    def _on_mode(self) -> None:
        method = self.mode.currentData()
        self.parameter.setVisible(method is not None)
        if method is not None:
            name, low, high, step, decimals, default, tip = _PARAMETER[method]
            self.parameter.blockSignals(True)
            self.parameter.setDecimals(decimals)
            self.parameter.setRange(low, high)
            self.parameter.setSingleStep(step)
            self.parameter.setValue(default)
            self.parameter.setPrefix(f"{name} ")
            self.parameter.setToolTip(tip)
            self.parameter.blockSignals(False)
        self.changed.emit()

    def values(self) -> dict[str, Any]:
        """The request field ``fast``."""
        method = self.mode.currentData()
        if method is None:
            return {"fast": None}
        name = _PARAMETER[method][0]
        value: float | int = self.parameter.value()
        if method == DEEP_CACHE:
            return {"fast": FastMode(method, interval=int(value), branch=self._branch)}
        return {"fast": FastMode(method, **{name: round(value, 3)})}

    def load(self, fast: FastMode | None) -> None:
        """Show a request's fast mode."""
        index = self.mode.findData(fast.method if fast is not None else None)
        self.mode.setCurrentIndex(max(0, index))
        self._branch = fast.branch if fast is not None else DEFAULT_BRANCH
        if fast is not None:
            self.parameter.setValue(float(getattr(fast, _PARAMETER[fast.method][0])))

    def describe(self) -> str:
        """The mode in words, for the section's header (empty: off)."""
        values = self.values()["fast"]
        return f"fast: {values.describe()}" if values is not None else ""
