"""Upscaling from the app: the gallery's and the Generate menu's Upscale action, its
dialog, and the new history image it makes (pytest-qt, offscreen)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtWidgets import QDialog

from sdstudio.engine.refine.upscale_settings import Upscale
from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.ui.upscale_actions import upscale_request
from sdstudio.ui.upscale_dialog import UpscaleChoice, UpscaleDialog


def test_the_dialog_offers_built_in_and_found_upscalers_and_shows_the_size(qtbot) -> None:
    dialog = UpscaleDialog((500, 375), [("RealESRGAN_x4plus", "/m/RealESRGAN_x4plus.pth")])
    qtbot.addWidget(dialog)
    names = [dialog.upscaler.itemText(i) for i in range(dialog.upscaler.count())]
    assert names == ["Lanczos", "Nearest", "RealESRGAN_x4plus"]
    assert dialog.upscaler.currentText() == "RealESRGAN_x4plus"  # a model, when there is one
    assert dialog.result_size.text() == "500x375 → 2000x1500"
    dialog.scale.setValue(2.5)
    assert dialog.result_size.text() == "500x375 → 1250x938"
    assert not dialog.repaint.isEnabled()  # no model chosen: nothing to repaint with
    choice = dialog.choice()
    assert choice == UpscaleChoice(Upscale("RealESRGAN_x4plus", 2.5, 512, 64))


def test_a_choice_becomes_an_upscale_job_or_an_sd_upscale() -> None:
    source = Path("/inputs/a.png")
    alone = upscale_request(UpscaleChoice(Upscale("Lanczos", 2.0)), source, (300, 200), None)
    assert alone.mode is Mode.UPSCALE and (alone.width, alone.height) == (600, 400)
    assert alone.init_image == str(source)
    panel = GenerationRequest(model="/m/sd.safetensors", prompt="a castle", seed=5)
    choice = UpscaleChoice(Upscale("Lanczos", 2.0), repaint=True, denoise=0.25,
                           tile_width=256, tile_height=192)  # fmt: skip
    sd = upscale_request(choice, source, (300, 200), panel)
    assert sd.mode is Mode.IMG2IMG and sd.strength == 0.25 and sd.prompt == "a castle"
    assert (sd.width, sd.height) == (256, 192) and sd.upscale == choice.upscale


def test_upscaling_a_gallery_image_adds_a_larger_history_image(
    qtbot, window, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "small.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(source)

    def accept(dialog: UpscaleDialog) -> int:
        dialog.upscaler.setCurrentText("Lanczos")
        dialog.scale.setValue(3.0)
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(UpscaleDialog, "exec", accept)
    window.canvas.set_source(Image.open(source).convert("RGB"))
    with qtbot.waitSignal(window.controller.finished, timeout=60_000) as finished:
        assert window.upscale_actions.upscale_canvas() is not None
    (path,) = finished.args[1]
    with Image.open(path) as image:
        assert image.size == (120, 90)
    qtbot.waitUntil(lambda: window.gallery.model.rowCount() >= 1, timeout=10_000)
    entry = window.gallery.model.entry_at(0)
    assert entry.request.mode is Mode.UPSCALE and entry.request.upscale == Upscale("Lanczos", 3.0)
    assert window.gallery.model.data(window.gallery.model.index(0)) == "Upscaled with Lanczos"
    # From the gallery: the upscaled image upscaled again.
    monkeypatch.setattr(UpscaleDialog, "exec", accept)
    with qtbot.waitSignal(window.controller.finished, timeout=60_000) as finished:
        assert window.upscale_actions.upscale_entry(entry) is not None
    with Image.open(finished.args[1][0]) as image:
        assert image.size == (360, 270)


def test_the_status_bar_counts_an_upscales_tiles(window) -> None:
    from sdstudio.ui.controller import Job

    status = window.progress_status
    job = Job(
        7, upscale_request(UpscaleChoice(Upscale("Lanczos", 2.0)), Path("/a.png"), (64, 64), None)
    )
    status.start(job)
    status.step(7, 1, 4, 0, 1)
    assert status.bar.format() == "tile 1/4"
    status.start(Job(8, GenerationRequest(model="m", prompt="p")))
    status.step(8, 1, 20, 0, 1)
    assert status.bar.format() == "step 1/20"
