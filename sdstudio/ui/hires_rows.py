"""Rows of the prompt panel's hires fix section: a folding header whose text is elided
to the width there is, and the second pass's sampler row (or the first pass's sampler)."""

from __future__ import annotations

from PySide6.QtCore import QSignalBlocker, QSize, Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QSizePolicy, QToolButton, QWidget

from sdstudio.engine import samplers

SAME = "Same as first pass"


class HiresSamplerRow(QWidget):
    """The second pass's sampler and schedule type, or the first pass's (:data:`SAME`)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.sampler = narrow(QComboBox())
        self.schedule = narrow(QComboBox())
        self.sampler.setToolTip("Sampler of the second pass")
        self.schedule.setToolTip("Schedule type of the second pass")
        self._flow = False
        self._fill(False)
        self.sampler.currentTextChanged.connect(self._update_schedules)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.sampler, 3)
        layout.addWidget(self.schedule, 2)
        self._update_schedules(SAME)

    def set_flow(self, flow: bool) -> None:
        """Offer the samplers of flow-matching models or of the others, keeping the
        choice where the new list has it (else the first pass's)."""
        if flow == self._flow:
            return
        sampler, schedule = self.chosen()
        self._flow = flow
        self._fill(flow)
        self.choose(sampler, schedule)

    def choose(self, sampler: str, schedule: str) -> None:
        """Select a sampler and, where it supports it, a schedule type; an empty or
        unknown sampler selects the first pass's."""
        if sampler not in samplers.sampler_names(self._flow):
            sampler = SAME
        with QSignalBlocker(self.sampler):
            self.sampler.setCurrentText(sampler)
        self._update_schedules(sampler, schedule)

    def chosen(self) -> tuple[str, str]:
        """The sampler and schedule type, or two empty strings for the first pass's."""
        if self.sampler.currentIndex() <= 0:
            return "", ""
        return self.sampler.currentText(), self.schedule.currentText()

    def _fill(self, flow: bool) -> None:
        with QSignalBlocker(self.sampler):
            self.sampler.clear()
            self.sampler.addItems([SAME, *samplers.sampler_names(flow)])

    def _update_schedules(self, sampler: str, schedule: str = "") -> None:
        schedule = schedule or self.schedule.currentText()
        self.schedule.clear()
        same = sampler in ("", SAME)
        self.schedule.setEnabled(not same)
        if same:
            return
        supported = samplers.schedules_for(sampler, self._flow)
        self.schedule.addItems(supported)
        default = samplers.get_sampler(sampler, self._flow).default_schedule
        self.schedule.setCurrentText(schedule if schedule in supported else default)


class FoldButton(QToolButton):
    """A section's header: an arrow that folds ``body``, and a text that is elided to
    the width there is (the whole text is its tooltip)."""

    def __init__(self, body: QWidget, text: str, object_name: str = "") -> None:
        super().__init__()
        self.setObjectName(object_name)
        self.setCheckable(True)
        self.setAutoRaise(True)
        self.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.setArrowType(Qt.ArrowType.RightArrow)
        self.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)
        self._body = body
        self._full = ""
        self.toggled.connect(self._fold)
        self.set_full_text(text)

    def set_full_text(self, text: str) -> None:
        """Show a text, elided when it does not fit."""
        self._full = text
        self.setToolTip(text)
        self.updateGeometry()
        self._elide()

    def full_text(self) -> str:
        """The text before eliding."""
        return self._full

    def sizeHint(self) -> QSize:
        """Wide enough for the whole text."""
        metrics = self.fontMetrics()
        return QSize(
            self._chrome() + metrics.horizontalAdvance(self._full), super().sizeHint().height()
        )

    def minimumSizeHint(self) -> QSize:
        """Wide enough for the text's first words."""
        first = self._full.split(" (")[0] + " …"
        return QSize(
            self._chrome() + self.fontMetrics().horizontalAdvance(first),
            super().sizeHint().height(),
        )

    def resizeEvent(self, event: QResizeEvent) -> None:
        """Elide the text to the new width."""
        super().resizeEvent(event)
        self._elide()

    def _chrome(self) -> int:
        """The width of everything but the text: the arrow, spacing and margins."""
        return super().sizeHint().width() - self.fontMetrics().horizontalAdvance(self.text())

    def _elide(self) -> None:
        metrics, room = self.fontMetrics(), max(0, self.width() - self._chrome())
        text = self._full
        if metrics.horizontalAdvance(text) > room:
            text = metrics.elidedText(text, Qt.TextElideMode.ElideRight, room)
        if text != self.text():
            self.setText(text)

    def _fold(self, expanded: bool) -> None:
        self.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self._body.setVisible(expanded)


def narrow(combo: QComboBox, length: int = 6) -> QComboBox:
    """A combo box that may be narrower than its longest item (which the list shows)."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(length)
    return combo
