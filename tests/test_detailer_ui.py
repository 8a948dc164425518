"""The "Detail faces" row of the prompt panel's Advanced section: its switch, prompts and
denoising go into the request, a loaded detailer comes back equal (its settings the row
does not show kept), the headers name what is on, and the info panel shows it (pytest-qt,
offscreen)."""

from __future__ import annotations

from sdstudio.engine.refine.detailer_settings import Detailer
from sdstudio.engine.request import GenerationRequest
from sdstudio.ui.info_panel import ShownImage

SD1 = ("dreamshaper", "/m/dreamshaper.safetensors", "sd1", "SD 1.x")


def choose_model(panel) -> None:
    panel.set_known_models([SD1])
    panel.model.setCurrentIndex(panel.model.findData(SD1[1]))


def test_off_gives_no_detailer_and_on_gives_the_chosen_values(window) -> None:
    panel, row = window.panel, window.panel.advanced.detailer
    choose_model(panel)
    assert row.toggle.full_text() == "Detail faces (off)"
    assert panel.request().detailer is None
    row.switch.setChecked(True)
    assert panel.request().detailer == Detailer()  # ADetailer's defaults
    assert row.toggle.full_text() == "Detail faces (denoise 0.4)"
    assert panel.advanced.toggle.text() == "Advanced (detail faces)"
    panel.advanced.set_expanded(True)
    row.set_expanded(True)
    assert row.prompt.isVisibleTo(panel)
    row.prompt.setPlainText("a smiling face, [PROMPT]")
    row.negative.setPlainText("blurry")
    row.denoise.setValue(0.3)
    assert panel.request().detailer == Detailer(
        prompt="a smiling face, [PROMPT]", negative_prompt="blurry", denoise=0.3
    )
    assert row.toggle.full_text() == "Detail faces (denoise 0.3, own prompt)"


def test_a_loaded_detailer_comes_back_equal(window) -> None:
    panel, row = window.panel, window.panel.advanced.detailer
    choose_model(panel)
    detailer = Detailer(
        detector="/m/detectors/face_detection_yunet_2023mar.onnx",
        prompt="a face",
        denoise=0.35,
        confidence=0.5,
        padding=48,
        mask_blur=6,
        dilate=-2,
        steps=12,
        max_faces=2,
    )
    request = GenerationRequest(model=SD1[1], prompt="a fox", detailer=detailer)
    panel.load(request)
    assert row.switch.isChecked() and row.prompt.toPlainText() == "a face"
    assert panel.request().detailer == detailer  # what the section does not show is kept
    assert row.toggle.full_text() == (
        "Detail faces (face_detection_yunet_2023mar.onnx, denoise 0.35, own prompt)"
    )
    panel.load(request.replace(detailer=None))
    assert panel.request().detailer is None and row.toggle.full_text() == "Detail faces (off)"


def test_the_info_panel_shows_the_detailer_and_what_it_did() -> None:
    from sdstudio.engine.metadata.record import ImageRecord

    detailer = Detailer(denoise=0.5)
    request = GenerationRequest(model="m", prompt="a fox", seed=1, detailer=detailer)
    lines = ShownImage("a.png", request).lines()
    assert [("Detailer", detailer.describe())] in lines
    record = ImageRecord(
        request=request,
        model_name="m",
        extra={"detailer": {"faces": 2, "found": 2, "boxes": [[0, 0, 9, 9, 0.5]] * 2}},
    )
    shown = ShownImage("a.png", request, record=record).lines()
    assert [("Detailer", detailer.describe()), ("Result", "2 of 2 faces repainted")] in shown


def test_the_detailer_survives_the_last_session(window, paths) -> None:
    from sdstudio.app import restore_last_request, save_last_request

    panel = window.panel
    choose_model(panel)
    detailer = Detailer(prompt="a face", denoise=0.3, confidence=0.6)
    panel.load(GenerationRequest(model=SD1[1], prompt="a fox", detailer=detailer))
    save_last_request(window, paths)
    panel.advanced.detailer.load(None)
    assert panel.request().detailer is None
    restore_last_request(window, paths)
    assert panel.request().detailer == detailer
