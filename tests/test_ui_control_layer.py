"""The control layer as people use it: a scribble drawn on a blank page (text-to-image)
or over the picture, undone, made a ControlNet unit with preprocessor none, shown over
the picture at an opacity, and the selected unit's weight, start and end edited in
place (pytest-qt, offscreen)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QImage, QPainter
from PySide6.QtTest import QTest

from sdstudio.engine.control.units import ControlUnit
from sdstudio.engine.request import GenerationRequest
from sdstudio.ui.control_dialog import ControlUnitDialog

SD1 = ("dreamshaper", "/m/dreamshaper.safetensors", "sd1", "SD 1.x")
SCRIBBLE_CN = ("control_v11p_sd15_scribble", "/cn/control_v11p_sd15_scribble.safetensors")


def _stroke(canvas, start, end, button=Qt.MouseButton.LeftButton) -> None:
    viewport = canvas.viewport()
    first, last = canvas.mapFromScene(QPointF(*start)), canvas.mapFromScene(QPointF(*end))
    QTest.mousePress(viewport, button, Qt.KeyboardModifier.NoModifier, first)
    QTest.mouseMove(viewport, last)
    QTest.mouseRelease(viewport, button, Qt.KeyboardModifier.NoModifier, last)


def _white(image: Image.Image, xy: tuple[int, int]) -> bool:
    return image.convert("L").getpixel(xy) > 200  # type: ignore[operator]


def _scene_pixel(canvas, xy: tuple[int, int]) -> tuple[int, int, int]:
    """The colour the scene shows at a scene point (what the user sees there)."""
    rect = canvas.sceneRect()
    image = QImage(int(rect.width()), int(rect.height()), QImage.Format.Format_RGB32)
    image.fill(Qt.GlobalColor.gray)
    painter = QPainter(image)
    canvas.scene().render(painter, QRectF(image.rect()), rect)
    painter.end()
    colour = image.pixelColor(*xy)
    return (colour.red(), colour.green(), colour.blue())


@pytest.fixture
def blank(window):
    """The window with a model and a 128x96 text-to-image size, nothing on the canvas."""
    panel = window.panel
    panel.set_known_models([SD1])
    panel.model.setCurrentIndex(panel.model.findData(SD1[1]))
    panel.size_row.set_size(128, 96)
    panel.advanced.control.set_models([SCRIBBLE_CN])
    return window


def test_a_scribble_on_the_blank_page_is_drawn_undone_and_redone(qtbot, blank) -> None:
    canvas, toolbar = blank.canvas, blank.edit_toolbar
    assert not canvas.has_image
    toolbar.tool_actions["scribble"].trigger()
    layer = canvas.control
    assert canvas.tool == "scribble" and layer.on_page and layer.item.isVisible()
    assert layer.size == (128, 96) and canvas.sceneRect() == QRectF(0, 0, 128, 96)
    assert not layer.has_paint()
    toolbar.brush_size.setValue(10)  # the scribble brush's size, kept apart from the mask's
    assert (layer.brush_size, canvas.mask.brush_size) == (10, 48)
    _stroke(canvas, (20, 48), (100, 48))
    drawn = layer.to_pil()
    assert drawn.size == (128, 96)
    assert _white(drawn, (60, 48)) and not _white(drawn, (60, 10))
    assert "scribble stroke" in toolbar.undo.toolTip() and toolbar.undo.isEnabled()
    assert not _white(drawn, (60, 55)) and _white(drawn, (60, 52))  # 10 pixels wide
    toolbar.undo.trigger()
    assert not layer.has_paint()
    toolbar.redo.trigger()
    assert _white(layer.to_pil(), (60, 48))
    _stroke(canvas, (50, 48), (70, 48), Qt.MouseButton.RightButton)  # the right button erases
    erased = layer.to_pil()
    assert not _white(erased, (60, 48)) and _white(erased, (25, 48))
    blank.panel.size_row.set_size(192, 96)  # the page follows the panel's size
    assert layer.size == (192, 96) and canvas.sceneRect().width() == 192


def test_the_drawing_becomes_a_unit_with_preprocessor_none_then_updates_it(
    qtbot, blank, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PySide6.QtWidgets import QDialog

    canvas, tools = blank.canvas, blank.control_tools
    proposed: list[tuple[str, str]] = []

    def accept(dialog: ControlUnitDialog) -> int:
        proposed.append((dialog.image.text(), dialog.preprocessor.currentText()))
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(ControlUnitDialog, "exec", accept)
    blank.edit_toolbar.tool_actions["scribble"].trigger()
    _stroke(canvas, (10, 10), (110, 80))
    assert tools.use_drawing.isEnabled()
    tools.use_drawing.trigger()
    (unit,) = blank.panel.request().control
    assert proposed == [(unit.image, "none")] and unit.preprocessor == "none"
    assert unit.model == SCRIBBLE_CN[1]
    assert Path(unit.image).parent == blank.inputs_dir and unit.image.endswith(".png")
    with Image.open(unit.image) as stored:
        assert stored.size == (128, 96) and _white(stored, (60, 45)) and not _white(stored, (5, 90))
    assert blank.panel.advanced.toggle.isChecked()

    _stroke(canvas, (10, 90), (110, 90))
    monkeypatch.setattr(type(tools), "ask_update", lambda _self, row: True)
    assert tools.use_as_unit()
    (updated,) = blank.panel.request().control
    assert updated.image != unit.image and updated.weight == unit.weight
    with Image.open(updated.image) as stored:
        assert _white(stored, (60, 90))
    monkeypatch.setattr(type(tools), "ask_update", lambda _self, row: False)
    _stroke(canvas, (10, 20), (20, 20))
    assert tools.use_as_unit()
    assert len(blank.panel.request().control) == 2 and len(proposed) == 2

    tools.clear_drawing.trigger()
    assert not canvas.control.has_paint()
    blank.edit_toolbar.undo.trigger()
    assert canvas.control.has_paint()


def test_show_map_and_opacity_change_what_the_picture_shows(
    qtbot, blank, init_image: Path, tmp_path: Path
) -> None:
    canvas, tools = blank.canvas, blank.control_tools
    assert blank.use_as_source(init_image)
    layer = canvas.control
    assert layer.size == (80, 72) and not layer.item.isVisible()
    picture = _scene_pixel(canvas, (5, 5))
    assert picture == (30, 90, 200)
    tools.show_map.setChecked(True)
    assert layer.item.isVisible() and not layer.on_page
    tools.opacity.setValue(100)
    assert _scene_pixel(canvas, (5, 5)) == (0, 0, 0)  # the empty map, black, covers it
    tools.opacity.setValue(50)
    half = _scene_pixel(canvas, (5, 5))
    assert half[2] == pytest.approx(100, abs=3)
    tools.opacity.setValue(0)
    assert _scene_pixel(canvas, (5, 5)) == picture
    tools.show_map.setChecked(False)
    tools.opacity.setValue(100)
    assert _scene_pixel(canvas, (5, 5)) == picture

    blank.edit_toolbar.tool_actions["scribble"].trigger()  # drawn over the picture
    assert canvas.showing_source and layer.item.isVisible() and not layer.on_page
    _stroke(canvas, (10, 36), (70, 36))
    assert _white(layer.to_pil(), (40, 36)) and canvas.mask.has_paint() is False
    assert _scene_pixel(canvas, (40, 36)) == (255, 255, 255)
    blank.edit_toolbar.tool_actions["pan"].trigger()
    assert _scene_pixel(canvas, (40, 36)) == (240, 200, 40)  # the picture's own colour

    # A unit's map, made at the picture's size: "invert" of a white picture is black.
    white = tmp_path / "white.png"
    Image.new("RGB", (40, 36), "white").save(white)
    unit = ControlUnit(model=SCRIBBLE_CN[1], image=str(white), preprocessor="invert")
    missing = ControlUnit(model=SCRIBBLE_CN[1], image=str(tmp_path / "gone.png"))
    blank.panel.advanced.control.load((unit, missing))
    assert tools.which.count() == 3
    tools.show_map.setChecked(True)
    layer.replace(_white_image(80, 72))
    assert _scene_pixel(canvas, (5, 5)) == (255, 255, 255)  # the drawing
    tools.which.setCurrentIndex(1)
    assert _scene_pixel(canvas, (5, 5)) == (0, 0, 0)  # the unit's map
    tools.which.setCurrentIndex(2)
    assert "cannot be shown" in blank.last_error and "gone.png" in blank.last_error
    assert _scene_pixel(canvas, (5, 5)) == (255, 255, 255)  # back to the drawing


def _white_image(width: int, height: int) -> QImage:
    image = QImage(width, height, QImage.Format.Format_RGB32)
    image.fill(Qt.GlobalColor.white)
    return image


def test_the_selected_units_weight_start_and_end_are_edited_in_place(qtbot, blank) -> None:
    row = blank.panel.advanced.control
    first = ControlUnit(model=SCRIBBLE_CN[1], image="/inputs/a.png", weight=0.8)
    second = ControlUnit(model=SCRIBBLE_CN[1], image="/inputs/b.png", start=0.2)
    blank.panel.load(GenerationRequest(model=SD1[1], prompt="a hill", control=(first, second)))
    assert row.values_box.isHidden()
    row.list.setCurrentRow(1)
    values = row.values_box
    assert not values.isHidden() and values.start.value() == pytest.approx(0.2)
    values.weight.setValue(0.45)
    values.end.setValue(0.7)
    assert blank.panel.request().control == (
        first,
        ControlUnit(model=SCRIBBLE_CN[1], image="/inputs/b.png", weight=0.45, start=0.2, end=0.7),
    )
    assert row.list.currentRow() == 1 and "0.45 · 0.2–0.7" in row.list.item(1).text()
    values.start.setValue(0.9)  # after the end: refused, said, and put back
    assert values.start.value() == pytest.approx(0.2)
    assert "before its end" in row.note.text() and not row.note.isHidden()
    assert blank.panel.request().control[1].start == pytest.approx(0.2)
    row.list.setCurrentRow(0)
    assert values.weight.value() == pytest.approx(0.8) and row.note.isHidden()


def test_nothing_breaks_with_no_picture_and_no_units(qtbot, blank) -> None:
    canvas, tools = blank.canvas, blank.control_tools
    tools.show_map.setChecked(True)
    assert canvas.control.on_page and tools.which.count() == 1
    tools.which.setCurrentIndex(0)
    tools.opacity.setValue(10)
    tools.clear_drawing.trigger()
    blank.edit_toolbar.undo.trigger()
    assert not tools.use_as_unit()
    assert "empty" in blank.last_error
    tools.show_map.setChecked(False)
    assert not canvas.control.item.isVisible() and not canvas.control.on_page
    canvas.set_tool("scribble")
    canvas.set_tool("pan")
    assert not canvas.has_image and blank.panel.request().control == ()
