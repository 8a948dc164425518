"""The canvas as people use it: the mask only where it is seen, tool keys only on the
canvas, "Use as source" taking what is on screen, compare lining images up, a toolbar
that fits with every tool in a menu, File ▸ Open and Clear image, and outpainting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QImage
from PySide6.QtTest import QTest
from PySide6.QtWidgets import (
    QDialogButtonBox,
    QFileDialog,
    QMenu,
    QToolButton,
    QWidgetAction,
)

from sdstudio.engine.request import GenerationRequest


def _fill(window, model: Path, **changes) -> None:
    request = GenerationRequest(
        model=str(model), prompt="a lighthouse", steps=3, width=64, height=64, seed=3
    ).replace(**changes)
    window.panel.load(request)


def _drop(canvas, path: Path) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(
        QPointF(10, 10),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    canvas.dropEvent(event)


def _stroke(canvas, start: tuple[int, int], end: tuple[int, int]) -> None:
    viewport = canvas.viewport()
    first, last = canvas.mapFromScene(*start), canvas.mapFromScene(*end)
    QTest.mousePress(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, first)
    QTest.mouseMove(viewport, last)
    QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, last)


def _run_job(qtbot, window) -> None:
    with qtbot.waitSignal(window.controller.finished, timeout=60_000):
        assert window.generate() is not None


def _result(size: tuple[int, int] = (80, 72)) -> Image.Image:
    return Image.new("RGB", size, (250, 20, 20))


def _undo_action(toolbar):
    """The toolbar's Undo, found as a user finds it."""
    [action] = [a for a in toolbar.actions() if a.text().startswith("Undo")]
    return action


def _shown_pixels(canvas) -> bytes:
    image = canvas._item.pixmap().toImage().convertToFormat(QImage.Format.Format_RGB888)
    width, height = image.width(), image.height()
    rows = [bytes(image.constScanLine(y))[: width * 3] for y in range(height)]
    return b"".join(rows)


# After a generation the mask belongs to the source, which is hidden -----------------------


def test_after_a_result_the_mask_is_neither_painted_nor_undone_out_of_sight(
    qtbot, window, tiny_model, init_image
) -> None:
    toolbar, canvas = window.edit_toolbar, window.canvas
    _fill(window, tiny_model, steps=2)
    _drop(canvas, init_image)
    toolbar.tool_actions["brush"].trigger()
    toolbar.brush_size.setValue(10)
    _stroke(canvas, (20, 20), (60, 50))
    assert canvas.mask.has_paint() and _undo_action(toolbar).isEnabled()
    painted = canvas.mask.to_pil().tobytes()
    _run_job(qtbot, window)

    _stroke(canvas, (5, 60), (75, 60))  # over the result, where the mask is not seen
    assert canvas.mask.to_pil().tobytes() == painted
    _undo_action(toolbar).trigger()
    assert canvas.mask.to_pil().tobytes() == painted
    assert toolbar.tool_actions["pan"].isChecked()  # no brush over a result
    assert canvas.view == canvas.OUTPUT
    assert toolbar.result_view.isChecked() and not toolbar.source_view.isChecked()
    assert not toolbar.undo.isEnabled() and "show the source first" in toolbar.undo.toolTip()

    toolbar.source_view.trigger()  # the source is on show again: its edits can be undone
    assert canvas.view == canvas.SOURCE and toolbar.undo.isEnabled()
    toolbar.undo.trigger()
    assert not canvas.mask.has_paint()
    toolbar.result_view.trigger()
    assert canvas.view == canvas.OUTPUT and canvas.has_image


def test_the_brush_and_show_mask_bring_the_source_back(qtbot, window, init_image) -> None:
    toolbar, canvas = window.edit_toolbar, window.canvas
    _drop(canvas, init_image)
    source_pixels = _shown_pixels(canvas)
    canvas.show_image(_result())
    assert not canvas.mask._item.isVisible()
    toolbar.show_mask.setChecked(False)
    toolbar.show_mask.setChecked(True)  # "Show mask" over a result shows the source with it
    assert _shown_pixels(canvas) == source_pixels
    assert canvas.view == canvas.SOURCE and canvas.mask._item.isVisible()

    canvas.show_image(_result())
    toolbar.tool_actions["eraser"].trigger()
    assert _shown_pixels(canvas) == source_pixels
    assert canvas.view == canvas.SOURCE and canvas.tool == "eraser"


def test_an_undo_made_while_a_result_is_shown_brings_the_source_into_view(
    window, init_image
) -> None:
    canvas = window.edit_toolbar.canvas
    _drop(canvas, init_image)
    source_pixels = _shown_pixels(canvas)
    window.edit_toolbar.tool_actions["brush"].trigger()
    _stroke(canvas, (20, 20), (60, 50))
    canvas.show_image(_result())
    canvas.undo_stack.undo()
    assert not canvas.mask.has_paint() and _shown_pixels(canvas) == source_pixels
    assert canvas.view == canvas.SOURCE


# Tool keys act on the canvas only ---------------------------------------------------------


def test_tool_keys_act_only_when_the_canvas_has_the_focus(qtbot, window, init_image) -> None:
    toolbar, canvas, panel = window.edit_toolbar, window.canvas, window.panel
    _drop(canvas, init_image)
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)

    panel.prompt.setFocus()
    qtbot.waitUntil(panel.prompt.hasFocus)
    QTest.keyClick(panel.prompt, Qt.Key.Key_B)
    assert panel.prompt.toPlainText().endswith("b")
    assert toolbar.tool_actions["pan"].isChecked()

    panel.sampler.setFocus()  # typing in a list to find an entry
    qtbot.waitUntil(panel.sampler.hasFocus)
    QTest.keyClick(panel.sampler, Qt.Key.Key_B)
    QTest.keyClick(panel.sampler, Qt.Key.Key_E)
    assert toolbar.tool_actions["pan"].isChecked()

    canvas.setFocus()
    qtbot.waitUntil(canvas.hasFocus)
    QTest.keyClick(canvas, Qt.Key.Key_B)
    assert toolbar.tool_actions["brush"].isChecked()
    QTest.keyClick(canvas, Qt.Key.Key_E)
    assert toolbar.tool_actions["eraser"].isChecked() and canvas.tool == "eraser"
    size = toolbar.brush_size.value()
    QTest.keyClick(canvas, Qt.Key.Key_BracketRight)
    assert toolbar.brush_size.value() > size
    QTest.keyClick(canvas, Qt.Key.Key_H)
    assert canvas.tool == "pan"


# "Use as source" takes what is on screen --------------------------------------------------


def test_use_as_source_after_a_cancel_takes_the_preview_on_screen(
    qtbot, window, tiny_model
) -> None:
    _fill(window, tiny_model, steps=2, width=64, height=64)
    _run_job(qtbot, window)  # a finished 64×64 image
    _fill(window, tiny_model, steps=200, width=80, height=64)
    previews: list[int] = []

    def on_progress(job, step, total, index, batch, preview) -> None:
        if isinstance(preview, Image.Image):
            previews.append(step)
            if len(previews) == 2:
                window.cancel()

    window.controller.progress.connect(on_progress)
    with qtbot.waitSignal(window.controller.cancelled, timeout=60_000):
        window.generate()
    window.controller.progress.disconnect(on_progress)
    assert previews
    preview = np.frombuffer(_shown_pixels(window.canvas), np.uint8)

    window.edit_toolbar.use_shown.trigger()
    source = window.canvas.source
    assert source is not None and source.size == (80, 64)  # not the 64×64 finished image
    assert (np.asarray(source).ravel() == preview).all()  # as it was seen
    on_screen = window.canvas.output_image()
    assert on_screen is not None and source.tobytes() == on_screen.tobytes()
    assert (window.panel.width_box.value(), window.panel.height_box.value()) == (80, 64)
    assert not window.edit_toolbar.use_shown.isEnabled()  # the source is what is shown now


# Compare lines images of different sizes up -----------------------------------------------


def _painted_box(image: QImage, colour: str) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the pixels strongly of ``colour``."""
    points = [
        (x, y)
        for y in range(image.height())
        for x in range(image.width())
        if getattr(image.pixelColor(x, y), colour)() > 200 and image.pixelColor(x, y).green() < 80
    ]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def test_compare_shows_images_of_different_shapes_at_one_scale_centred(qtbot, window) -> None:
    from sdstudio.engine.generation import GeneratedImage
    from sdstudio.engine.metadata import ImageRecord
    from sdstudio.ui.compare import CompareDialog

    images = [Image.new("RGB", (64, 64), (250, 0, 0)), Image.new("RGB", (64, 128), (0, 0, 250))]
    entries = [
        window.library.save(
            GeneratedImage(image, ImageRecord(GenerationRequest(model="m", prompt="a", seed=s)))
        )
        for s, image in enumerate(images)
    ]
    window.gallery.compare_requested.emit(entries[0], entries[1])
    dialog = window.findChild(CompareDialog)
    assert dialog is not None
    view = dialog.view
    view.resize(400, 200)
    view.set_split(1.0)
    red = _painted_box(view.grab().toImage(), "red")
    view.set_split(0.0)
    blue = _painted_box(view.grab().toImage(), "blue")
    red_size = (red[2] - red[0] + 1, red[3] - red[1] + 1)
    blue_size = (blue[2] - blue[0] + 1, blue[3] - blue[1] + 1)
    assert blue_size[1] >= 190 and abs(red_size[1] * 2 - blue_size[1]) <= 2  # one scale
    assert abs(red_size[0] - blue_size[0]) <= 1
    assert abs((red[1] + red[3]) - (blue[1] + blue[3])) <= 2  # centred on each other
    assert abs((red[0] + red[2]) - (blue[0] + blue[2])) <= 2
    view.set_split(0.5)  # the line runs through the images, not the window
    shot = view.grab().toImage()
    middle = (red[0] + red[2]) // 2
    assert shot.pixelColor(middle - 5, 100).red() > 200
    assert shot.pixelColor(middle + 5, 100).blue() > 200
    assert dialog.sizes.text() == "A 64×64, B 64×128: shown at the same scale, centred"


def test_compare_shows_images_of_one_shape_at_one_size(qtbot) -> None:
    from sdstudio.ui.compare import CompareView, _sizes_text

    small, large = (QImage(n, n, QImage.Format.Format_RGB888) for n in (64, 128))
    view = CompareView(small, large)
    qtbot.addWidget(view)
    first, second, _box = view.placements(view.rect().toRectF())
    assert first == second
    assert _sizes_text((64, 64), (128, 128), True) == "A 64×64, B 128×128: shown at the same size"


# The toolbar: short fixed labels, every tool in a menu, fits 1024 pixels --------------------


def _menu_actions(menu: QMenu) -> list:
    found = []
    for action in menu.actions():
        found.append(action)
        if action.menu() is not None:
            found += _menu_actions(action.menu())
    return found


def test_toolbar_labels_stay_short_and_every_tool_is_in_a_menu(qtbot, window, init_image) -> None:
    toolbar, canvas = window.edit_toolbar, window.canvas
    _drop(canvas, init_image)
    toolbar.tool_actions["brush"].trigger()
    _stroke(canvas, (20, 20), (60, 50))
    undo = _undo_action(toolbar)
    assert undo.text() == "Undo" and "mask stroke" in undo.toolTip()
    undo.trigger()
    assert toolbar.redo.text() == "Redo" and "mask stroke" in toolbar.redo.toolTip()

    in_menus = [a for m in window.menuBar().actions() if m.menu() for a in _menu_actions(m.menu())]
    tools = [
        a for a in toolbar.actions() if not a.isSeparator() and not isinstance(a, QWidgetAction)
    ]
    assert len(tools) >= 12
    missing = [a.text() for a in tools if a not in in_menus]
    assert missing == []
    assert toolbar.larger_brush in in_menus and toolbar.smaller_brush in in_menus
    menus = [m.text() for m in window.menuBar().actions()]
    assert "&Image" in menus and menus.index("&Image") == menus.index("&File") + 1


def test_toolbar_fits_a_1024_pixel_window(qtbot, window) -> None:
    window.resize(1024, 640)
    qtbot.waitUntil(lambda: window.width() == 1024)
    toolbar = window.edit_toolbar
    qtbot.waitUntil(lambda: toolbar.width() <= 1024)
    extension = toolbar.findChild(QToolButton, "qt_toolbar_ext_button")
    assert extension is None or not extension.isVisible()
    hidden = [
        a.text()
        for a in toolbar.actions()
        if not a.isSeparator() and not toolbar.widgetForAction(a).isVisible()
    ]
    assert hidden == []
    assert toolbar.clear_source.text() == "Clear image"


# File ▸ Open and Clear image --------------------------------------------------------------


def test_file_open_makes_the_image_the_source_as_a_drop_does(
    window, init_image, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        QFileDialog, "getOpenFileName", staticmethod(lambda *args, **kwargs: (str(init_image), ""))
    )
    [open_action] = [a for a in window.file_menu.actions() if a.text() == "Open image…"]
    open_action.trigger()
    canvas = window.canvas
    assert canvas.source is not None and canvas.source.size == (80, 72)
    assert canvas.view == canvas.SOURCE
    assert window.panel.strength.isVisibleTo(window.panel)
    assert window.edit_toolbar.tool_actions["brush"].isEnabled()


def test_clear_image_leaves_nothing_on_screen(window, init_image, mask_image) -> None:
    from sdstudio.ui.mask_layer import mask_from_pil

    canvas, toolbar = window.canvas, window.edit_toolbar
    _drop(canvas, init_image)
    with Image.open(mask_image) as mask:
        canvas.mask.replace(mask_from_pil(mask))
    canvas.show_image(_result())
    assert toolbar.clear_source.isEnabled()
    toolbar.clear_source.trigger()
    assert not canvas.has_image and canvas.view == ""
    assert canvas.source is None and not canvas.has_output and not canvas.mask.has_paint()
    assert not canvas.undo_stack.canUndo()
    assert not window.panel.strength.isVisibleTo(window.panel)  # text-to-image again
    assert not toolbar.clear_source.isEnabled() and not toolbar.use_shown.isEnabled()
    assert not toolbar.result_view.isEnabled() and not toolbar.source_view.isEnabled()


def test_clear_image_without_a_model_brings_back_the_welcome_and_empties_the_info(
    window, init_image
) -> None:
    window.panel.model.setEditText("")
    window.open_file(init_image)
    assert window.stack.currentWidget() is window.canvas
    assert "No image selected" not in window.info_panel.text.toPlainText()
    window.edit_toolbar.clear_source.trigger()
    assert window.stack.currentWidget() is window.welcome
    assert "No image selected" in window.info_panel.text.toPlainText()


def test_clearing_the_source_shows_the_result_instead(window, init_image) -> None:
    canvas = window.canvas
    canvas.show_image(_result((40, 40)))
    _drop(canvas, init_image)
    canvas.clear_source()
    assert canvas.view == canvas.OUTPUT and canvas._item.pixmap().width() == 40


# Outpainting --------------------------------------------------------------------------------


def test_outpaint_300_pixels_on_the_left_with_the_dialog(qtbot, window, init_image) -> None:
    canvas, toolbar = window.canvas, window.edit_toolbar
    _drop(canvas, init_image)
    before = canvas.source.copy()
    toolbar.outpaint.trigger()
    dialog = toolbar.outpaint_dialog
    assert dialog is not None and dialog.isVisible()
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert not ok.isEnabled()  # nothing to add yet
    dialog.spins["left"].setValue(300)
    assert dialog.size_label.text() == "80×72\n→ 384×72"
    assert "multiple of 8" in dialog.note.text()
    assert ok.isEnabled()
    dialog.accept()

    source = canvas.source
    assert source.size == (384, 72)
    assert np.asarray(source)[:, 304:].tobytes() == before.tobytes()
    mask = np.asarray(canvas.mask.to_pil())
    assert (mask[:, :304] == 255).all() and (mask[:, 304:] == 0).all()
    assert (window.panel.width_box.value(), window.panel.height_box.value()) == (384, 72)
    assert "outpainting" in toolbar.undo.toolTip()
    toolbar.undo.trigger()
    assert canvas.source.size == (80, 72) and not canvas.mask.has_paint()
    toolbar.redo.trigger()
    assert canvas.source.size == (384, 72)


def test_outpaint_on_all_sides_keeps_the_painted_mask_and_remembers_the_choice(
    window, init_image
) -> None:
    canvas, toolbar = window.canvas, window.edit_toolbar
    _drop(canvas, init_image)
    toolbar.tool_actions["brush"].trigger()
    toolbar.brush_size.setValue(6)
    _stroke(canvas, (30, 30), (50, 30))
    painted = np.asarray(canvas.mask.to_pil())
    toolbar.outpaint.trigger()
    dialog = toolbar.outpaint_dialog
    for side, value in (("left", 16), ("top", 8), ("right", 32), ("bottom", 24)):
        dialog.spins[side].setValue(value)
    dialog.fill_box.setCurrentIndex(dialog.fill_box.findData("blur"))
    dialog.accept()
    assert canvas.source.size == (128, 104)
    mask = np.asarray(canvas.mask.to_pil())
    assert (mask[8:80, 16:96] == painted).all()
    assert (mask[:8] == 255).all() and (mask[80:] == 255).all()
    assert (mask[:, :16] == 255).all() and (mask[:, 96:] == 255).all()

    toolbar.outpaint.trigger()
    again = toolbar.outpaint_dialog
    assert again is not dialog and again.sides() == (16, 8, 32, 24) and again.fill() == "blur"
    again.reject()
    assert canvas.source.size == (128, 104)
