"""The selected ControlNet unit's weight, start and end, as compact spin boxes under the
unit list: the settings people adjust between runs, without opening the unit's dialog."""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QDoubleSpinBox, QHBoxLayout, QLabel, QWidget

from sdstudio.engine.control.units import MAX_WEIGHT, ControlUnit
from sdstudio.engine.errors import SdStudioError


class UnitValues(QWidget):
    """Weight, start and end of one unit; :attr:`edited` gives the unit changed."""

    edited = Signal(object)
    """The unit with the new values (a :class:`ControlUnit`)."""
    refused = Signal(str)
    """Why the values typed make no unit (the boxes go back to the unit's)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._unit: ControlUnit | None = None
        self.weight = _box(MAX_WEIGHT, "Weight: how strongly the unit guides the image")
        self.start = _box(1.0, "Start: the share of the steps before the unit begins guiding")
        self.end = _box(1.0, "End: the share of the steps after which the unit stops guiding")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        for label, box in (("W", self.weight), ("S", self.start), ("E", self.end)):
            text = QLabel(label)
            text.setToolTip(box.toolTip())
            text.setBuddy(box)
            layout.addWidget(text)
            layout.addWidget(box)
            box.valueChanged.connect(lambda _value: self._changed())
        layout.addStretch(1)
        self.setVisible(False)

    def show_unit(self, unit: ControlUnit | None) -> None:
        """Show this unit's values (``None``: hide the boxes)."""
        self._unit = unit
        self.setVisible(unit is not None)
        if unit is not None:
            self._set(unit)

    def _set(self, unit: ControlUnit) -> None:
        for box, value in ((self.weight, unit.weight), (self.start, unit.start),
                           (self.end, unit.end)):  # fmt: skip
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)

    def _changed(self) -> None:
        unit = self._unit
        if unit is None:
            return
        try:
            changed = dataclasses.replace(
                unit,
                weight=round(self.weight.value(), 2),
                start=round(self.start.value(), 2),
                end=round(self.end.value(), 2),
            )
        except SdStudioError as error:
            self._set(unit)
            self.refused.emit(str(error))
            return
        self._unit = changed
        self.edited.emit(changed)


def _box(maximum: float, tip: str) -> QDoubleSpinBox:
    box = QDoubleSpinBox(minimum=0.0, maximum=maximum, singleStep=0.05, decimals=2)
    box.setToolTip(tip)
    box.setAccelerated(True)
    return box
