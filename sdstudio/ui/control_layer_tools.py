"""The control layer's toolbar, over the canvas: "Show control map" with the map to show
(the drawing or a unit's preprocessed map) and its opacity, "Use drawing" and "Clear
drawing". The same actions are in the Image menu."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QComboBox,
    QMenu,
    QMessageBox,
    QSlider,
    QStatusBar,
    QToolBar,
    QToolButton,
    QWidget,
)

from sdstudio.engine.control.units import ControlUnit
from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.images import store_input
from sdstudio.ui.canvas import Canvas, pil_to_qimage
from sdstudio.ui.control_row import ControlRow, describe_unit

DRAWING = "Drawing"


class ControlLayerToolbar(QToolBar):
    """Tools of the control layer, and the step that makes a drawing a ControlNet unit."""

    def __init__(
        self,
        canvas: Canvas,
        units: ControlRow,
        inputs_dir: Path,
        show_error: Callable[[str], None],
        parent: QWidget | None = None,
    ) -> None:
        """``units`` is the panel's ControlNet row; drawings are kept in ``inputs_dir``."""
        super().__init__("Control layer", parent)
        self.setObjectName("controlToolbar")
        self.canvas, self.units, self.inputs_dir = canvas, units, inputs_dir
        self.show_error = show_error
        self.status_bar: QStatusBar | None = None
        self.before_adding: Callable[[], None] = lambda: None
        """Called before the unit dialog opens (the window shows the unit list)."""
        self.made = ""
        """The control image of the unit the drawing last made ("" before any)."""
        self._map_key: tuple[ControlUnit, tuple[int, int]] | None = None
        layer = canvas.control

        self.show_map = QAction("Show map", self, checkable=True)
        self.show_map.setToolTip(
            "Show the control map over the picture: the drawing or a unit's preprocessed map"
        )
        self.show_map.toggled.connect(self._on_show_map)
        self.addAction(self.show_map)
        self.which = QComboBox()
        self.which.setToolTip("The map to show: the drawing, or a ControlNet unit's map")
        self.which.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.which.setMaximumWidth(120)
        self.which.currentIndexChanged.connect(lambda _index: self.update_map())
        self.addWidget(self.which)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(round(layer.opacity * 100))
        self.opacity.setFixedWidth(64)
        self.opacity.valueChanged.connect(self._on_opacity)
        self.addWidget(self.opacity)
        self.use_drawing = QAction("Use drawing", self)
        self.use_drawing.setToolTip(
            "Use the drawing as a ControlNet unit's image (a scribble map: preprocessor none)"
        )
        self.use_drawing.triggered.connect(self.use_as_unit)
        self.clear_drawing = QAction("Clear drawing", self, toolTip="Clear the control layer")
        self.clear_drawing.triggered.connect(layer.clear)
        drawing = QToolButton(popupMode=QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        drawing.setDefaultAction(self.use_drawing)
        drawing_menu = QMenu(drawing)
        drawing_menu.addActions([self.use_drawing, self.clear_drawing])
        drawing.setMenu(drawing_menu)
        self.addWidget(drawing)
        self._on_opacity(self.opacity.value())
        units.changed.connect(self._list_units)
        canvas.source_changed.connect(self._on_source_changed)
        self._list_units()

    def add_to_menu(self, menu: QMenu | None) -> None:
        """Put the layer's actions at the end of the Image menu."""
        if menu is not None:
            menu.addSeparator()
            menu.addActions([self.show_map, self.use_drawing, self.clear_drawing])

    def use_as_unit(self) -> bool:
        """Keep the drawing (white on black, at the layer's size) in the inputs folder and
        make it a unit's control image with preprocessor ``none``; if the drawing already
        made a unit, offer to update that unit's image instead. Returns whether a unit
        now holds it."""
        layer = self.canvas.control
        if not layer.has_paint():
            self.show_error("The control layer is empty: draw on it with the Scribble tool (S).")
            return False
        try:
            path = str(store_input(layer.to_pil(), self.inputs_dir))
        except (OSError, SdStudioError) as error:
            self.show_error(f"The drawing could not be kept for the ControlNet: {error}")
            return False
        row = self.units.find_image(self.made) if self.made else -1
        if row >= 0:
            choice = self.ask_update(row)
            if choice is None:
                return False
            if choice:
                self.units.set_image(row, path)
                self.made = path
                self._say(f"ControlNet unit {row + 1} now uses the drawing.")
                return True
        self.before_adding()
        if not self.units.add(path, preprocessor="none"):
            return False
        self.made = path
        return True

    def ask_update(self, row: int) -> bool | None:
        """Ask whether to update unit ``row``'s image (True), add a unit (False) or
        neither (None)."""
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "sdstudio",
            f"The drawing already guides ControlNet unit {row + 1}. Update that unit's image?",
            parent=self.window(),
        )
        update = box.addButton("Update unit", QMessageBox.ButtonRole.AcceptRole)
        add = box.addButton("Add another unit", QMessageBox.ButtonRole.ActionRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        clicked = box.clickedButton()
        return True if clicked is update else False if clicked is add else None

    def update_map(self) -> bool:
        """Show the chosen map: the drawing, or the unit's map made at the layer's size
        (a reason, never a traceback, when it cannot be made). Returns whether the chosen
        map is shown."""
        layer, index = self.canvas.control, self.which.currentIndex()
        units = self.units.values()
        if index <= 0 or index > len(units):
            self._map_key = None
            layer.show_map(None)
            self.canvas.strokes.sync()
            return True
        unit = units[index - 1]
        key = (unit, layer.size)
        if key == self._map_key:
            return True
        from sdstudio.engine.control.preprocessors import check_preprocessor, control_map
        from sdstudio.engine.images import open_image

        try:
            check_preprocessor(unit)
            made = control_map(open_image(unit.image, what="control image"), unit, layer.size)
        except (OSError, SdStudioError) as error:
            self._map_key = None
            layer.show_map(None)
            self.canvas.strokes.sync()
            self.show_error(f"The map of ControlNet unit {index} cannot be shown: {error}")
            return False
        self._map_key = key
        layer.show_map(pil_to_qimage(made))
        self.canvas.strokes.sync()
        return True

    def _list_units(self) -> None:
        chosen = self.which.currentIndex()
        self.which.blockSignals(True)
        self.which.clear()
        self.which.addItem(DRAWING)
        for number, unit in enumerate(self.units.values(), 1):
            self.which.addItem(f"Unit {number}", describe_unit(unit))
            self.which.setItemData(number, describe_unit(unit), Qt.ItemDataRole.ToolTipRole)
        self.which.setCurrentIndex(chosen if 0 <= chosen < self.which.count() else 0)
        self.which.blockSignals(False)
        if self.show_map.isChecked():
            self.update_map()

    def _on_source_changed(self) -> None:
        if self.show_map.isChecked():
            self.update_map()

    def _on_show_map(self, shown: bool) -> None:
        self.canvas.control.map_wanted = shown
        if shown:
            self.update_map()
        self.canvas.strokes.sync()

    def _on_opacity(self, value: int) -> None:
        self.opacity.setToolTip(f"The map's opacity over the picture: {value} %")
        self.canvas.control.opacity = value / 100
        self.canvas.strokes.sync()

    def _say(self, message: str) -> None:
        if self.status_bar is not None:
            self.status_bar.showMessage(message, 5_000)
