"""The ControlNet row of the Advanced section: the units that will guide the next image,
added, edited and removed through :class:`~sdstudio.ui.control_dialog.ControlUnitDialog`.

Units loaded with an image's settings are kept as they are (also settings the dialog
does not show) and go into the next request: nothing is dropped on the way."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.control.units import MAX_UNITS, ControlUnit
from sdstudio.engine.errors import SdStudioError
from sdstudio.ui.control_dialog import ControlUnitDialog
from sdstudio.ui.control_unit_values import UnitValues


def describe_unit(unit: ControlUnit) -> str:
    """``canny · control_v11p_sd15_canny · 0.8 · 0–1``, with the mode when not balanced."""
    model = Path(unit.model.replace("\\", "/")).stem or unit.model
    text = f"{unit.preprocessor} · {model} · {unit.weight:g} · {unit.start:g}–{unit.end:g}"
    return text if unit.mode.value == "balanced" else f"{text} · {unit.mode.value} first"


class ControlRow(QWidget):
    """A short list of control units with Add, Edit and Remove."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._units: list[ControlUnit] = []
        self._models: list[tuple[str, str]] = []
        self.image_size: Callable[[], tuple[int, int]] = lambda: (512, 512)
        """The size the next image will have (the map preview's); set by the panel."""
        self.list = QListWidget()
        self.list.setFixedHeight(64)  # never squeezed when the panel scrolls
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.list.setToolTip("ControlNet units guiding the next image; double-click to edit")
        self.list.itemDoubleClicked.connect(lambda _item: self.edit())
        self.list.currentRowChanged.connect(self._on_selected)
        self.values_box = UnitValues()
        self.values_box.edited.connect(self._on_values)
        self.note = QLabel(wordWrap=True)
        self.note.setVisible(False)
        self.values_box.refused.connect(self._say)
        self.add_button = QPushButton("Add…")
        self.add_button.clicked.connect(lambda: self.add())
        self.edit_button = QPushButton("Edit…")
        self.edit_button.clicked.connect(self.edit)
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self.remove)
        buttons = QHBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        for button in (self.add_button, self.edit_button, self.remove_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.list)
        layout.addWidget(self.values_box)
        layout.addWidget(self.note)
        layout.addLayout(buttons)
        self._refresh()

    def set_models(self, models: list[tuple[str, str]]) -> None:
        """The ControlNet files found, as (name, path), offered by the dialog."""
        self._models = list(models)

    def values(self) -> tuple[ControlUnit, ...]:
        """The units, for the request."""
        return tuple(self._units)

    def load(self, units: tuple[ControlUnit, ...]) -> None:
        """Take a request's units (all of their settings are kept)."""
        self._units = list(units)
        self._refresh()

    def add(self, image: str = "", preprocessor: str = "") -> bool:
        """Ask for a new unit (``image``: its control image, and ``preprocessor``, proposed);
        returns whether one was added."""
        if len(self._units) >= MAX_UNITS:
            QMessageBox.information(self, "sdstudio", f"At most {MAX_UNITS} units guide an image.")
            return False
        unit = self._ask(None, image, preprocessor)
        if unit is not None:
            self._units.append(unit)
            self._refresh(len(self._units) - 1)
        return unit is not None

    def find_image(self, image: str) -> int:
        """The row of the first unit guided by this control image, or -1."""
        return next((row for row, unit in enumerate(self._units) if unit.image == image), -1)

    def set_image(self, row: int, image: str) -> None:
        """Give unit ``row`` another control image, keeping its other settings."""
        self._units[row] = dataclasses.replace(self._units[row], image=image)
        self._refresh(row)

    def edit(self) -> None:
        """Edit the selected unit."""
        row = self.list.currentRow()
        if not 0 <= row < len(self._units):
            return
        unit = self._ask(self._units[row])
        if unit is not None:
            self._units[row] = unit
            self._refresh(row)

    def remove(self) -> None:
        """Remove the selected unit."""
        row = self.list.currentRow()
        if 0 <= row < len(self._units):
            del self._units[row]
            self._refresh()

    def describe(self) -> str:
        """The header's words for the units ("" when there are none)."""
        count = len(self._units)
        return f"{count} ControlNet unit{'s' if count != 1 else ''}" if count else ""

    def _ask(
        self, unit: ControlUnit | None, image: str = "", preprocessor: str = ""
    ) -> ControlUnit | None:
        dialog = ControlUnitDialog(
            self._models, self, unit=unit, size=self.image_size(), preprocessor=preprocessor
        )
        if image:
            dialog.image.setText(image)
        while dialog.exec() == QDialog.DialogCode.Accepted:
            try:
                return dialog.unit()
            except SdStudioError as error:
                QMessageBox.warning(self, "sdstudio", str(error))
        return None

    def _refresh(self, selected: int = -1) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        for unit in self._units:
            item = QListWidgetItem()
            self.list.addItem(item)
            self._describe(item, unit)
        self.list.setCurrentRow(selected if 0 <= selected < len(self._units) else -1)
        self.list.blockSignals(False)
        self._on_selected(self.list.currentRow())
        self.list.setVisible(bool(self._units))
        self.edit_button.setEnabled(bool(self._units))
        self.remove_button.setEnabled(bool(self._units))
        self.changed.emit()

    def _describe(self, item: QListWidgetItem, unit: ControlUnit) -> None:
        item.setText(describe_unit(unit))
        item.setToolTip(f"{describe_unit(unit)}\n{unit.model}\n{unit.image}")

    def _on_selected(self, row: int) -> None:
        self._say("")
        self.values_box.show_unit(self._units[row] if 0 <= row < len(self._units) else None)

    def _on_values(self, unit: ControlUnit) -> None:
        row = self.list.currentRow()
        if 0 <= row < len(self._units):
            self._say("")
            self._units[row] = unit
            item = self.list.item(row)
            if item is not None:
                self._describe(item, unit)
            self.changed.emit()

    def _say(self, message: str) -> None:
        self.note.setText(message)
        self.note.setVisible(bool(message))
