"""The Advanced section's ControlNet row: units loaded with an image's settings go into
the next request whole, and the unit dialog makes valid units (pytest-qt, offscreen)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from sdstudio.engine.control.units import ControlMode, ControlResize, ControlUnit
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.request import GenerationRequest
from sdstudio.ui.control_dialog import ControlUnitDialog
from sdstudio.ui.control_row import describe_unit

SD1 = ("dreamshaper", "/m/dreamshaper.safetensors", "sd1", "SD 1.x")
UNIT = ControlUnit(
    model="/cn/control_v11p_sd15_canny.safetensors",
    image="/inputs/ab12.png",
    preprocessor="canny",
    weight=0.8,
    start=0.1,
    end=0.9,
    mode=ControlMode.PROMPT,
    threshold_a=80.0,
    threshold_b=160.0,
)


def test_loaded_units_go_into_the_next_request_whole(window) -> None:
    panel = window.panel
    panel.set_known_models([SD1])
    request = GenerationRequest(model=SD1[1], prompt="a tower", control=(UNIT, UNIT))
    panel.load(request)
    assert panel.request().control == (UNIT, UNIT)
    advanced = panel.advanced
    assert "2 ControlNet units" in advanced.toggle.text()
    assert advanced.control.list.count() == 2
    assert advanced.control.list.item(0).text() == describe_unit(UNIT)
    assert describe_unit(UNIT) == "canny · control_v11p_sd15_canny · 0.8 · 0.1–0.9 · prompt first"
    advanced.control.list.setCurrentRow(0)
    advanced.control.remove()
    assert panel.request().control == (UNIT,)
    panel.load(GenerationRequest(model=SD1[1], prompt="plain"))
    assert panel.request().control == ()
    assert "ControlNet" not in advanced.toggle.text()


def test_the_dialog_makes_a_unit_and_keeps_what_it_does_not_show(qtbot, tmp_path: Path) -> None:
    image = tmp_path / "edges.png"
    Image.new("RGB", (32, 32), "white").save(image)
    found = [("control_v11p_sd15_canny", "/cn/control_v11p_sd15_canny.safetensors")]
    dialog = ControlUnitDialog(found)
    qtbot.addWidget(dialog)
    dialog.image.setText(str(image))
    dialog.preprocessor.setCurrentText("canny")
    dialog.weight.setValue(0.55)
    dialog.end.setValue(0.75)
    dialog.mode.setCurrentIndex(2)
    dialog.resize_mode.setCurrentIndex(1)
    unit = dialog.unit()
    assert unit == ControlUnit(found[0][1], str(image), "canny", 0.55, 0.0, 0.75,
                               ControlMode.CONTROL, ControlResize.RESIZE)  # fmt: skip
    edited = ControlUnitDialog(found, unit=ControlUnit(**{**UNIT.to_dict(), "image": str(image)}))
    qtbot.addWidget(edited)
    again = edited.unit()
    assert (again.threshold_a, again.threshold_b, again.mode) == (80.0, 160.0, ControlMode.PROMPT)
    assert again.model == UNIT.model and again.weight == 0.8


def test_the_dialog_refuses_a_missing_image_and_a_bad_range(qtbot, tmp_path: Path) -> None:
    dialog = ControlUnitDialog([("cn", "/cn/cn.safetensors")])
    qtbot.addWidget(dialog)
    dialog.image.setText(str(tmp_path / "missing.png"))
    with pytest.raises(InvalidRequest, match="is not a file"):
        dialog.unit()
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    dialog.image.setText(str(tmp_path / "ok.png"))
    dialog.start.setValue(0.8)
    dialog.end.setValue(0.2)
    with pytest.raises(InvalidRequest, match="must come before its end"):
        dialog.unit()


def test_a_gallery_image_becomes_a_units_control_image(
    window, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from PySide6.QtWidgets import QDialog

    image = tmp_path / "pose.png"
    Image.new("RGB", (16, 16), "black").save(image)
    panel = window.panel
    panel.set_known_models([SD1])
    panel.model.setCurrentIndex(panel.model.findData(SD1[1]))
    panel.advanced.control.set_models([("control_sd15_scribble", "/cn/scribble.safetensors")])
    proposed: list[str] = []

    def accept(dialog: ControlUnitDialog) -> int:
        proposed.append(dialog.image.text())
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(ControlUnitDialog, "exec", accept)
    window.control_actions.use_entry(SimpleNamespace(path=str(image)))
    assert proposed == [str(image)]
    (unit,) = panel.request().control
    assert unit.image == str(image) and unit.model == "/cn/scribble.safetensors"
    assert panel.advanced.toggle.isChecked()  # the section opened to show it


def test_the_dialog_previews_the_map_or_says_why_not(qtbot, tmp_path: Path) -> None:
    image = tmp_path / "square.png"
    drawn = Image.new("RGB", (96, 64), "white")
    drawn.paste((0, 0, 0), (30, 20, 60, 44))
    drawn.save(image)
    dialog = ControlUnitDialog([("cn", "/cn/cn.safetensors")], size=(48, 32))
    qtbot.addWidget(dialog)
    dialog.image.setText(str(image))
    dialog.preprocessor.setCurrentText("canny")
    assert dialog.show_map()
    shown = dialog.preview.pixmap()
    assert not shown.isNull() and shown.width() / shown.height() == pytest.approx(1.5, abs=0.05)
    dialog.preprocessor.setCurrentText("depth_midas")  # needs annotator weights
    assert not dialog.show_map()
    assert "annotator" in dialog.preview.text()


def test_the_panels_size_is_the_previews(window) -> None:
    panel = window.panel
    panel.size_row.set_size(640, 384)
    assert panel.advanced.control.image_size() == (640, 384)


def test_the_canvas_picture_is_kept_and_proposed(
    window, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PySide6.QtWidgets import QDialog

    assert not window.control_actions.use_canvas()  # nothing on the canvas yet
    window.canvas.set_source(Image.new("RGB", (24, 16), (10, 200, 30)))
    proposed: list[str] = []

    def cancel(dialog: ControlUnitDialog) -> int:
        proposed.append(dialog.image.text())
        return QDialog.DialogCode.Rejected

    monkeypatch.setattr(ControlUnitDialog, "exec", cancel)
    assert window.control_actions.use_canvas()
    (kept,) = proposed
    assert Path(kept).parent == window.inputs_dir
    with Image.open(kept) as image:
        assert image.size == (24, 16)
    assert window.panel.advanced.control.values() == ()  # cancelled: no unit
