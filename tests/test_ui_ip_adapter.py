"""The Advanced section's Image prompt row: prompts made in the dialog or loaded with an
image's settings go into the next request whole, images dropped from the gallery or the
file manager become reference images, and bad files are refused with a message
(pytest-qt, offscreen)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QDialog

from sdstudio.engine.control.image_prompts import ImagePrompt
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.generation import GeneratedImage
from sdstudio.engine.metadata import ImageRecord
from sdstudio.engine.models.catalog import ModelEntry
from sdstudio.engine.request import GenerationRequest
from sdstudio.ui.ip_adapter_dialog import IpAdapterDialog
from sdstudio.ui.ip_adapter_row import IpAdapterRow, describe_prompt

SD1 = ("dreamshaper", "/m/dreamshaper.safetensors", "sd1", "SD 1.x")
ADAPTER = ("ip-adapter_sd15", "/ip/ip-adapter_sd15.safetensors")
ENCODER = ("CLIP-ViT-H-14", "/clip/CLIP-ViT-H-14.safetensors")


def picture(folder: Path, name: str, colour: str = "white") -> str:
    path = folder / name
    Image.new("RGB", (24, 16), colour).save(path)
    return str(path)


@pytest.fixture
def panel(window):
    panel = window.panel
    panel.set_known_models([SD1])
    panel.model.setCurrentIndex(panel.model.findData(SD1[1]))
    panel.advanced.ip_adapters.set_models([ADAPTER], [ENCODER])
    panel.advanced.set_expanded(True)
    return panel


@pytest.fixture
def warnings(panel) -> list[str]:
    said: list[str] = []
    panel.advanced.ip_adapters.warn = said.append
    return said


def answer(monkeypatch: pytest.MonkeyPatch, fill=None, accept: bool = True) -> list[list[str]]:
    """Make the dialog answer at once: ``fill`` sets its fields; returns the reference
    images each dialog was opened with."""
    shown: list[list[str]] = []

    def run(dialog: IpAdapterDialog) -> int:
        shown.append(dialog.image_paths())
        if fill is not None:
            fill(dialog)
        return QDialog.DialogCode.Accepted if accept else QDialog.DialogCode.Rejected

    monkeypatch.setattr(IpAdapterDialog, "exec", run)
    return shown


def drop(row: IpAdapterRow, urls: list[QUrl], at: QPoint | None = None) -> bool:
    """Drag ``urls`` over ``row`` and drop them at ``at`` (the buttons' side by default);
    returns whether the row accepted the drag."""
    QApplication.processEvents()  # the layout of a list just shown, as a user sees it
    mime = QMimeData()
    mime.setUrls(urls)
    point = QPointF(at if at is not None else row.add_button.geometry().center())
    action, buttons = Qt.DropAction.CopyAction, Qt.MouseButton.LeftButton
    modifiers = Qt.KeyboardModifier.NoModifier
    enter = QDragEnterEvent(point.toPoint(), action, mime, buttons, modifiers)
    QApplication.sendEvent(row, enter)
    if not enter.isAccepted():
        return False
    QApplication.sendEvent(row, QDropEvent(point, action, mime, buttons, modifiers))
    return True


def test_a_prompt_made_in_the_dialog_goes_into_the_request(panel, tmp_path, monkeypatch) -> None:
    first, second = picture(tmp_path, "face.png"), picture(tmp_path, "style.jpg", "red")
    mask = picture(tmp_path, "mask.png", "black")

    def fill(dialog: IpAdapterDialog) -> None:
        assert dialog.add_images([first, second]) == []
        dialog.weight.setValue(0.6)
        dialog.start.setValue(0.1)
        dialog.end.setValue(0.8)
        dialog.mask_path.setText(mask)
        dialog.encoder.setCurrentIndex(dialog.encoder.findData(ENCODER[1]))

    answer(monkeypatch, fill)
    row = panel.advanced.ip_adapters
    assert row.add()
    expected = ImagePrompt(ADAPTER[1], (first, second), 0.6, 0.1, 0.8, mask, ENCODER[1])
    assert panel.request().ip_adapters == (expected,)
    assert panel.advanced.values()["ip_adapters"] == (expected,)
    assert row.list.item(0).text() == describe_prompt(expected)
    assert describe_prompt(expected) == "ip-adapter_sd15 · 2 images · 0.6 · 0.1–0.8 · masked"
    assert "1 image prompt" in panel.advanced.toggle.text()


def test_loaded_prompts_are_kept_whole_and_the_dialog_shows_every_field(
    panel, qtbot, tmp_path
) -> None:
    typed = ImagePrompt("C:\\ip\\ip-adapter-plus_sdxl_vit-h.bin", ("/in/a.png", "/in/b.png"),
                        1.4, 0.25, 0.5, "/in/m.png", "/clip/clip_g.pth")  # fmt: skip
    plain = ImagePrompt(ADAPTER[1], ("/in/c.png",))
    panel.load(GenerationRequest(model=SD1[1], prompt="a tower", ip_adapters=(typed, plain)))
    assert panel.request().ip_adapters == (typed, plain)  # missing files are kept too
    assert panel.advanced.ip_adapters.list.count() == 2
    assert "2 image prompts" in panel.advanced.toggle.text()
    images = (picture(tmp_path, "a.png"), picture(tmp_path, "b.png"))
    real = ImagePrompt(typed.model, images, 1.4, 0.25, 0.5, picture(tmp_path, "m.png"),
                       typed.encoder)  # fmt: skip
    dialog = IpAdapterDialog([ADAPTER], [ENCODER], prompt=real)
    qtbot.addWidget(dialog)
    assert dialog.image_paths() == list(images)
    assert dialog.model.currentText() == "ip-adapter-plus_sdxl_vit-h"
    assert dialog.prompt() == real
    automatic = IpAdapterDialog([ADAPTER], [ENCODER], prompt=ImagePrompt(ADAPTER[1], images))
    qtbot.addWidget(automatic)
    assert automatic.encoder.currentText() == "Automatic"
    assert automatic.prompt().encoder == ""
    panel.load(GenerationRequest(model=SD1[1], prompt="plain"))
    assert panel.request().ip_adapters == ()
    assert "image prompt" not in panel.advanced.toggle.text()


def test_a_dropped_file_becomes_a_reference_image(panel, tmp_path, monkeypatch) -> None:
    row = panel.advanced.ip_adapters
    loaded = (ImagePrompt(ADAPTER[1], ("/in/a.png",)), ImagePrompt(ADAPTER[1], ("/in/b.png",)))
    row.load(loaded)
    dropped = picture(tmp_path, "dropped.webp")
    QApplication.processEvents()
    item = row.list.visualItemRect(row.list.item(1)).center()
    assert drop(row, [QUrl.fromLocalFile(dropped)], row.list.viewport().mapTo(row, item))
    assert row.values() == (loaded[0], ImagePrompt(ADAPTER[1], ("/in/b.png", dropped)))
    shown = answer(monkeypatch, accept=False)  # no prompt under it nor selected: a new one
    assert drop(row, [QUrl.fromLocalFile(dropped)])
    assert shown == [[dropped]] and len(row.values()) == 2
    row.list.setCurrentRow(0)  # selected: the drop adds to it at once
    assert drop(row, [QUrl.fromLocalFile(dropped)])
    assert row.values()[0].images == ("/in/a.png", dropped) and len(shown) == 1


def test_a_gallery_image_dragged_or_chosen_is_proposed(
    window, panel, tmp_path, monkeypatch
) -> None:
    request = GenerationRequest(model=SD1[1], prompt="a fox", width=64, height=64)
    record = ImageRecord(request=request, model_name="dreamshaper")
    entry = window.library.save(GeneratedImage(Image.new("RGB", (64, 64), "orange"), record))
    window.gallery.refresh()
    window.gallery.select_row(0)
    gallery = window.gallery
    assert gallery.ip_adapter_action in gallery.menu_actions
    shown = answer(monkeypatch)
    gallery.ip_adapter_action.trigger()
    assert shown == [[entry.path]]
    (made,) = panel.request().ip_adapters
    assert made == ImagePrompt(ADAPTER[1], (entry.path,))
    row = panel.advanced.ip_adapters
    mime = gallery.model.mimeData([gallery.model.index(0)])  # what a drag carries
    assert drop(row, mime.urls()) and shown[-1] == [entry.path]
    assert len(row.values()) == 2
    row.list.setCurrentRow(0)  # a prompt selected: the image is proposed as one more of it
    other = picture(tmp_path, "other.png")
    assert window.ip_adapter_actions.use_entry(SimpleNamespace(path=other))
    assert shown[-1] == [entry.path, other]
    assert row.values()[0].images == (entry.path, other) and len(row.values()) == 2
    (generate,) = (a.menu() for a in window.menuBar().actions() if a.text() == "&Generate")
    assert window.ip_adapter_actions.canvas_action in generate.actions()


def test_the_canvas_picture_is_kept_and_proposed(window, panel, monkeypatch) -> None:
    actions = window.ip_adapter_actions
    assert not actions.use_canvas()
    assert "no picture on the canvas" in window.last_error
    window.canvas.set_source(Image.new("RGB", (24, 16), (10, 200, 30)))
    shown = answer(monkeypatch, accept=False)
    assert actions.use_canvas()
    ((kept,),) = shown
    assert Path(kept).parent == window.inputs_dir
    assert panel.advanced.ip_adapters.values() == ()  # cancelled: no prompt


def test_remove_takes_the_selected_prompt_off(panel) -> None:
    row = panel.advanced.ip_adapters
    prompts = tuple(ImagePrompt(ADAPTER[1], (f"/in/{n}.png",)) for n in "abc")
    row.load(prompts)
    row.list.setCurrentRow(1)
    row.remove()
    assert panel.request().ip_adapters == (prompts[0], prompts[2])
    row.remove()  # nothing selected any more: nothing removed
    assert len(row.values()) == 2


def test_bad_files_are_refused_with_a_message(
    panel, qtbot, warnings, tmp_path, monkeypatch
) -> None:
    row = panel.advanced.ip_adapters
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    prompt = ImagePrompt(ADAPTER[1], ("/in/a.png",))
    row.load((prompt,))
    row.list.setCurrentRow(0)
    assert drop(row, [QUrl.fromLocalFile(str(text))])
    assert row.values() == (prompt,)
    assert len(warnings) == 1 and str(text) in warnings[0]
    assert drop(row, [QUrl("https://example.com/cat.png")])
    assert warnings[-1] == "Only image files on this computer can be reference images."
    row.load(())
    shown = answer(monkeypatch)
    assert drop(row, [QUrl.fromLocalFile(str(text))])
    assert shown == [] and row.values() == ()  # no dialog with nothing to show
    dialog = IpAdapterDialog([ADAPTER])
    qtbot.addWidget(dialog)
    (problem,) = dialog.add_images([str(text)])
    assert str(text) in problem and dialog.image_paths() == []
    with pytest.raises(InvalidRequest, match="at least one reference image"):
        dialog.prompt()
    broken = ImagePrompt(ADAPTER[1], (str(text),), mask=str(tmp_path / "gone.png"))
    shown_broken = IpAdapterDialog([ADAPTER], prompt=broken)
    qtbot.addWidget(shown_broken)
    with pytest.raises(InvalidRequest, match=r"notes\.txt"):
        shown_broken.prompt()
    shown_broken.images.clear()
    shown_broken.add_images([picture(tmp_path, "ok.png")])
    with pytest.raises(InvalidRequest, match=r"gone\.png does not exist"):
        shown_broken.prompt()


def test_the_found_adapters_and_encoders_are_offered(window, panel, monkeypatch) -> None:
    def found(name: str, kind: str) -> ModelEntry:
        return ModelEntry(name, kind, "safetensors", f"/m/{name}.safetensors", 9, "comfyui")

    offered: list[tuple[list[str], list[str]]] = []

    def look(dialog: IpAdapterDialog) -> None:
        models = [dialog.model.itemText(i) for i in range(dialog.model.count())]
        encoders = [dialog.encoder.itemText(i) for i in range(dialog.encoder.count())]
        offered.append((models, encoders))

    answer(monkeypatch, look, accept=False)
    window.show_models([found("ip-adapter-plus_sd15", "ipadapter"),
                        found("clip_h", "clip_vision"), found("canny", "controlnet")])  # fmt: skip
    row = panel.advanced.ip_adapters
    row.add()
    window.show_models([found("canny", "controlnet")])  # none of either kind: empty lists
    row.add()
    assert offered == [(["ip-adapter-plus_sd15"], ["Automatic", "clip_h"]), ([], ["Automatic"])]
