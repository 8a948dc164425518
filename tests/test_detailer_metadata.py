"""The detailer under ADetailer's names: an ADetailer image's face unit is read into the
request (its YOLO face model as the built-in detector, with a note), what sdstudio does
not run stays in the extras with a note, and a detailer is written back under the same
names and read again unchanged. ``info``, ``history show`` and the app show it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.cli import main
from sdstudio.cli.details import _text
from sdstudio.engine.metadata import read_image_settings
from sdstudio.engine.metadata.a1111 import format_parameters, read_parameters
from sdstudio.engine.refine.detailer_settings import Detailer, detailed_text
from sdstudio.engine.request import GenerationRequest

FIRST_UNIT = (
    'ADetailer model: face_yolov8n.pt, ADetailer prompt: "detailed face, [PROMPT]", '
    "ADetailer negative prompt: blurry eyes, ADetailer confidence: 0.35, "
    "ADetailer dilate erode: 8, ADetailer mask blur: 6, ADetailer denoising strength: 0.45, "
    "ADetailer inpaint only masked: True, ADetailer inpaint padding: 48, "
    "ADetailer use separate steps: True, ADetailer steps: 30"
)
SECOND_UNIT = (
    "ADetailer model 2nd: hand_yolov8n.pt, ADetailer confidence 2nd: 0.3, "
    "ADetailer dilate erode 2nd: 4, ADetailer mask blur 2nd: 4, "
    "ADetailer denoising strength 2nd: 0.4, ADetailer inpaint only masked 2nd: True, "
    "ADetailer inpaint padding 2nd: 32"
)
SAMPLE = (
    "a portrait of a sailor, smiling\nNegative prompt: lowres\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, "
    f"{FIRST_UNIT}, {SECOND_UNIT}, ADetailer version: 24.11.1, Version: v1.10.1"
)
"""A Forge image with two ADetailer units, keys as ADetailer 24 writes them."""


def png_with(path: Path, parameters: str) -> Path:
    info = PngInfo()
    info.add_text("parameters", parameters)
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    return path


def test_an_adetailer_face_unit_is_read_as_the_detailer() -> None:
    parsed = read_parameters(SAMPLE)
    assert parsed.request.detailer == Detailer(
        detector="face",
        prompt="detailed face, [PROMPT]",
        negative_prompt="blurry eyes",
        denoise=0.45,
        confidence=0.35,
        mask_blur=6,
        padding=48,
        dilate=8,
        steps=30,
    )
    assert "detailer" in parsed.read
    assert parsed.request.steps == 20 and parsed.request.seed == 1234
    # The second unit is kept as written, and the notes say why.
    assert dict(parsed.extras) == {
        "ADetailer model 2nd": "hand_yolov8n.pt",
        "ADetailer confidence 2nd": "0.3",
        "ADetailer dilate erode 2nd": "4",
        "ADetailer mask blur 2nd": "4",
        "ADetailer denoising strength 2nd": "0.4",
        "ADetailer inpaint only masked 2nd": "True",
        "ADetailer inpaint padding 2nd": "32",
        "Version": "v1.10.1",
    }
    assert (
        "ADetailer's face_yolov8n.pt is read as sdstudio's built-in face detector (OpenCV's "
        "face cascades); ADetailer's YOLO and MediaPipe models are not used."
    ) in parsed.notes
    assert (
        "ADetailer's 2nd unit (hand_yolov8n.pt) is kept as written: sdstudio runs one detailer."
    ) in parsed.notes


@pytest.mark.parametrize(
    "model", ["face_yolov8s.pt", "face_yolov9c.pt", "mediapipe_face_full", "mediapipe_face_mesh"]
)
def test_adetailers_face_models_map_to_the_built_in_detector(model: str) -> None:
    text = f"a\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 1, ADetailer model: {model}"
    parsed = read_parameters(text)
    assert parsed.request.detailer == Detailer()  # ADetailer's defaults are sdstudio's
    assert any(f"ADetailer's {model} is read as" in note for note in parsed.notes)
    assert dict(parsed.extras) == {}


@pytest.mark.parametrize(
    "model", ["hand_yolov8n.pt", "person_yolov8n-seg.pt", "mediapipe_face_mesh_eyes_only"]
)
def test_other_adetailer_models_stay_in_the_extras(model: str) -> None:
    text = (
        "a\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 1, "
        f"ADetailer model: {model}, ADetailer confidence: 0.3, ADetailer version: 24.1.2"
    )
    parsed = read_parameters(text)
    assert parsed.request.detailer is None and "detailer" not in parsed.read
    assert dict(parsed.extras) == {
        "ADetailer model": model,
        "ADetailer confidence": "0.3",
        "ADetailer version": "24.1.2",
    }
    assert any(f"ADetailer's {model} finds what" in note for note in parsed.notes)


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ("ADetailer confidence: 1.5", "its confidence '1.5' is unusable"),
        ("ADetailer mask blur: 200", "its mask blur '200' is unusable"),
        ("ADetailer denoising strength: 0", "its denoising strength is 0"),
        ("ADetailer use separate steps: True, ADetailer steps: 0", "its steps are unusable"),
    ],
)
def test_an_unusable_value_leaves_adetailer_unapplied(setting: str, reason: str) -> None:
    text = (
        "a\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 1, "
        f"ADetailer model: face_yolov8n.pt, {setting}"
    )
    parsed = read_parameters(text)
    assert parsed.request.detailer is None
    assert parsed.extras["ADetailer model"] == "face_yolov8n.pt"
    assert f"The ADetailer settings are kept as written, not applied: {reason}." in parsed.notes


def test_settings_sdstudio_does_not_apply_stay_in_the_extras() -> None:
    text = (
        "a\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 1, ADetailer model: face_yolov8n.pt, "
        "ADetailer x offset: 5, ADetailer use separate CFG scale: True, "
        "ADetailer CFG scale: 4.0, ADetailer inpaint only masked: False"
    )
    parsed = read_parameters(text)
    assert parsed.request.detailer == Detailer()
    assert dict(parsed.extras) == {
        "ADetailer x offset": "5",
        "ADetailer use separate CFG scale": "True",
        "ADetailer CFG scale": "4.0",
    }
    assert any("inpaint only masked: False" in note for note in parsed.notes)


def test_a_detailer_is_written_under_adetailers_names_and_read_back() -> None:
    detailer = Detailer(
        detector="/models/detectors/face_detection_yunet_2023mar.onnx",
        prompt="a smiling face, [PROMPT]",
        negative_prompt="blurry, lowres",
        denoise=0.35,
        confidence=0.5,
        mask_blur=8,
        padding=64,
        dilate=-2,
        steps=12,
        max_faces=2,
    )
    request = GenerationRequest(model="m", prompt="a boat", seed=7, detailer=detailer)
    text = format_parameters(request, model_name="m", version="sdstudio 1")
    assert (
        'ADetailer model: face_detection_yunet_2023mar.onnx, ADetailer prompt: "a smiling '
        'face, [PROMPT]", ADetailer negative prompt: "blurry, lowres", ADetailer confidence: '
        "0.5, ADetailer method to decide top k masks: Area, ADetailer mask only top k: 2, "
        "ADetailer dilate erode: -2, ADetailer mask blur: 8, ADetailer denoising strength: "
        "0.35, ADetailer inpaint only masked: True, ADetailer inpaint padding: 64, ADetailer "
        "use separate steps: True, ADetailer steps: 12, ADetailer version: 25.3.0, "
        "Version: sdstudio 1"
    ) in text
    parsed = read_parameters(text)
    # A detector file is named by its file name alone, as ADetailer names its models.
    expected = Detailer(**{**detailer.to_dict(), "detector": "face_detection_yunet_2023mar.onnx"})
    assert parsed.request.detailer == expected
    assert dict(parsed.extras) == {"Version": "sdstudio 1"}

    plain = GenerationRequest(model="m", prompt="a boat", seed=7, detailer=Detailer())
    again = read_parameters(format_parameters(plain, model_name="m"))
    assert again.request == plain and not again.notes


def test_info_and_the_record_show_the_detailer(capsys, tmp_path: Path) -> None:
    image = png_with(tmp_path / "adetailer.png", SAMPLE)
    settings = read_image_settings(image)
    assert settings.request.detailer is not None and settings.request.detailer.steps == 30
    assert main(["info", str(image), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["request"]["detailer"]["prompt"] == "detailed face, [PROMPT]"
    assert "detailer" in data["read"]
    assert main(["info", str(image)]) == 0
    out = capsys.readouterr().out
    assert "ADetailer model 2nd: hand_yolov8n.pt" in out

    detailer = Detailer(denoise=0.45, prompt="a face")
    assert _text(detailer) == (
        "face, denoising 0.45, confidence 0.3, padding 32, mask blur 4, dilate 4, prompt 'a face'"
    )
    record = {"faces": 1, "found": 2, "boxes": [[1, 2, 3, 4, 0.5], [5, 6, 7, 8, 0.4]]}
    assert _text(record) == detailed_text(record) == "1 of 2 faces repainted"
    assert detailed_text({"faces": 0, "found": 0, "boxes": []}) == "no face found"
