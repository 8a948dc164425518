"""The Advanced section's "Fast mode" row: an opt-in step cache or token merging and its
one parameter, and for DeepCache where it caches (see :mod:`sdstudio.engine.speed`). The
mode is recorded with each image, so a re-run computes the same pixels."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QWidget

from sdstudio.engine.speed.fast_mode import (
    DEEP_CACHE,
    DEFAULT_BRANCH,
    DEFAULT_INTERVAL,
    DEFAULT_LAYER,
    DEFAULT_ORDER,
    DEFAULT_RATIO,
    DEFAULT_THRESHOLD,
    DEFAULT_WARMUP,
    FIRST_BLOCK_CACHE,
    MAX_INTERVAL,
    MAX_RATIO,
    MAX_THRESHOLD,
    TAYLORSEER_CACHE,
    TOKEN_MERGING,
    FastMode,
)

CHOICES = (
    ("Off", None),
    ("DeepCache (SD, SDXL)", DEEP_CACHE),
    ("Token merging (SD, SDXL)", TOKEN_MERGING),
    ("First-block cache (Flux.1, Qwen-Image)", FIRST_BLOCK_CACHE),
    ("TaylorSeer (Flux, SD 3.x, Qwen-Image, Z-Image, Chroma)", TAYLORSEER_CACHE),
)
INSIDE, WHOLE = "inside", "block"
CACHE_CHOICES = (
    ("Whole blocks", WHOLE),
    ("Cache inside the top block (faster)", INSIDE),
)
"""DeepCache's choices: the paper's caching inside the branch's blocks, or whole blocks."""
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
    TAYLORSEER_CACHE: (
        "interval",
        2,
        MAX_INTERVAL,
        1,
        0,
        DEFAULT_INTERVAL,
        "After the first full steps, one step in this many runs the whole transformer; "
        "the others forecast its output (more: faster, further from the full image)",
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
        self._warmup, self._order = DEFAULT_WARMUP, DEFAULT_ORDER
        self.cache = QComboBox()
        for label, where in CACHE_CHOICES:
            self.cache.addItem(label, where)
        self.cache.setToolTip(
            "Whole blocks: the steps between full ones run the whole top level. Inside the "
            "top block: they run only its first and last layers (the DeepCache paper's "
            "setting: faster, and the image moves further from the full computation)."
        )
        self.cache.setCurrentIndex(self.cache.findData(WHOLE if DEFAULT_LAYER is None else INSIDE))
        self._layer = DEFAULT_LAYER if DEFAULT_LAYER is not None else 0
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.mode, 1)
        layout.addWidget(self.parameter)
        layout.addWidget(self.cache)
        self.mode.currentIndexChanged.connect(self._on_mode)
        self.parameter.valueChanged.connect(self.changed)
        self.cache.currentIndexChanged.connect(self.changed)
        self._on_mode()

    def _on_mode(self) -> None:
        method = self.mode.currentData()
        self.parameter.setVisible(method is not None)
        self.cache.setVisible(method == DEEP_CACHE)
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
            layer = self._layer if self.cache.currentData() == INSIDE else None
            return {"fast": FastMode(method, interval=int(value), branch=self._branch, layer=layer)}
        if method == TAYLORSEER_CACHE:
            fast = FastMode(method, interval=int(value), warmup=self._warmup, order=self._order)
            return {"fast": fast}
        return {"fast": FastMode(method, **{name: round(value, 3)})}

    def load(self, fast: FastMode | None) -> None:
        """Show a request's fast mode."""
        index = self.mode.findData(fast.method if fast is not None else None)
        self.mode.setCurrentIndex(max(0, index))
        self._branch = fast.branch if fast is not None else DEFAULT_BRANCH
        self._warmup = fast.warmup if fast is not None else DEFAULT_WARMUP
        self._order = fast.order if fast is not None else DEFAULT_ORDER
        layer = fast.layer if fast is not None else DEFAULT_LAYER
        self._layer = layer if layer is not None else 0
        self.cache.setCurrentIndex(self.cache.findData(WHOLE if layer is None else INSIDE))
        if fast is not None:
            self.parameter.setValue(float(getattr(fast, _PARAMETER[fast.method][0])))

    def describe(self) -> str:
        """The mode in words, for the section's header (empty: off)."""
        values = self.values()["fast"]
        return f"fast: {values.describe()}" if values is not None else ""
