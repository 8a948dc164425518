"""The Advanced section's variation rows: A1111's "Variation seed", "Variation strength"
and "Resize seed from" (see :mod:`sdstudio.engine.variation_noise`)."""

from __future__ import annotations

import random
from typing import Any

from PySide6.QtCore import QObject, QRegularExpression, Signal
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QToolButton,
    QWidget,
)

from sdstudio.engine.request import MAX_RANDOM_SEED, MAX_SEED, MAX_SIZE, GenerationRequest


class VariationRows(QObject):
    """The three rows' widgets; the Advanced section lays them out."""

    changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.seed_row = QWidget()
        self.seed = QLineEdit(placeholderText="Random")
        self.seed.setValidator(
            QRegularExpressionValidator(QRegularExpression(r"-1|\d{0,20}"), self.seed)
        )
        self.seed.setToolTip(
            f"A second seed whose noise is mixed into the seed's (0 to {MAX_SEED}; empty: "
            "a new random one each time). Image i of a batch uses it + i, all keeping the seed."
        )
        random_seed = QToolButton(text="Random", toolTip="Draw a new variation seed each time")
        random_seed.clicked.connect(self.seed.clear)
        layout = QHBoxLayout(self.seed_row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.seed, 1)
        layout.addWidget(random_seed)

        self.strength = QDoubleSpinBox(minimum=0.0, maximum=1.0, value=0.0, singleStep=0.05)
        self.strength.setDecimals(2)
        self.strength.setToolTip(
            "How much of the variation seed's noise: 0 the seed's picture (off), "
            "1 the variation seed's"
        )

        self.resize_row = QWidget()
        self.resize_width = _side("width")
        self.resize_height = _side("height")
        layout = QHBoxLayout(self.resize_row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.resize_width, 1)
        layout.addWidget(QLabel("×"))
        layout.addWidget(self.resize_height, 1)

        self.seed.textChanged.connect(self.changed)
        self.strength.valueChanged.connect(self.changed)
        self.resize_width.valueChanged.connect(self.changed)
        self.resize_height.valueChanged.connect(self.changed)

    def values(self, rng: random.Random | None = None) -> dict[str, Any]:
        """The request fields; an empty (random) variation seed is drawn now, while the
        strength is above 0, so the image's record names the one used."""
        text = self.seed.text().strip()
        strength = round(self.strength.value(), 2)
        if text and text != "-1":
            seed = int(text)
        else:
            seed = (rng or random.SystemRandom()).randint(0, MAX_RANDOM_SEED) if strength else 0
        width, height = self.resize_width.value(), self.resize_height.value()
        resize = (width, height) if width and height else (0, 0)
        return {"variation_seed": seed, "variation_strength": strength, "seed_resize_from": resize}

    def load(self, request: GenerationRequest) -> None:
        """Show a request's settings."""
        used = request.variation_strength > 0
        self.seed.setText(str(request.variation_seed) if used else "")
        self.strength.setValue(request.variation_strength)
        self.resize_width.setValue(request.seed_resize_from[0])
        self.resize_height.setValue(request.seed_resize_from[1])

    def describe(self) -> str:
        """The settings in words, for the section's header (empty: off)."""
        said = []
        if self.strength.value() > 0:
            said.append(f"variation {self.strength.value():g}")
        if self.resize_width.value() and self.resize_height.value():
            said.append(f"seed from {self.resize_width.value()}×{self.resize_height.value()}")
        return ", ".join(said)


def _side(name: str) -> QSpinBox:
    box = QSpinBox(minimum=0, maximum=MAX_SIZE, value=0, singleStep=64)
    box.setSpecialValueText("Off")
    box.setToolTip(
        f"Draw the noise at this {name} and place it in the middle of the image, so a seed "
        "keeps its picture at another size (multiples of 8; both 0: off)"
    )
    return box
