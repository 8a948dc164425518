"""A model's recommended settings, which never overwrite what the user set.

When a model is picked, its recommendations (see
:func:`~sdstudio.engine.models.defaults.defaults_for`) go only into the settings
nobody set in this session; for the others an inline bar offers them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.models.defaults import ModelDefaults

FIELDS = ("size", "steps", "guidance", "sampler")
"""The settings a model recommends (``sampler`` with its schedule type)."""


class TouchedFields:
    """Which of :data:`FIELDS` were set in this session: edited, loaded from an image,
    the history or the last session, or set from a source image."""

    def __init__(self) -> None:
        self._touched: set[str] = set()
        self._quiet = 0

    def mark(self, *fields: str) -> None:
        """Record fields as set, unless the change is the panel's own (see :meth:`quietly`)."""
        if not self._quiet:
            self._touched.update(fields)

    @contextlib.contextmanager
    def quietly(self) -> Iterator[None]:
        """Changes made inside do not count as the user's."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def forget(self, *fields: str) -> None:
        """Count fields as not set (the user took the model's values for them)."""
        self._touched.difference_update(fields)

    def __contains__(self, field: str) -> bool:
        return field in self._touched


def describe(defaults: ModelDefaults) -> str:
    """The recommendations in words, such as ``1024×1024, 25 steps, CFG 7, DPM++ 2M Karras``."""
    schedule = "" if defaults.schedule == "Automatic" else f" {defaults.schedule}"
    return (
        f"{defaults.width}×{defaults.height}, {defaults.steps} steps, "
        f"CFG {defaults.guidance_scale:g}, {defaults.sampler}{schedule}"
    )


class RecommendationBar(QFrame):
    """An inline offer of the picked model's settings: one click applies them."""

    accepted = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="recommendationBar")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.label = QLabel(wordWrap=True)
        self.use_button = QPushButton("Use the model's settings")
        self.use_button.clicked.connect(self._accept)
        close = QToolButton(text="✕", toolTip="Keep my settings", autoRaise=True)
        close.clicked.connect(self.withdraw)
        row = QHBoxLayout()
        row.addWidget(self.use_button, 1)
        row.addWidget(close)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.addWidget(self.label)
        layout.addLayout(row)
        self.hide()

    def offer(self, model: str, defaults: ModelDefaults, kept: list[str]) -> None:
        """Show what ``model`` recommends, and which of the user's settings differ."""
        self.label.setText(
            f"{model} recommends {describe(defaults)}. Your {_listed(kept)} "
            f"{'was' if len(kept) == 1 else 'were'} kept."
        )
        self.use_button.setToolTip(describe(defaults))
        self.show()

    def withdraw(self) -> None:
        """Hide the offer."""
        self.hide()

    def _accept(self) -> None:
        self.hide()
        self.accepted.emit()


def _listed(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"
