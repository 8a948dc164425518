"""The detailer's face detectors: OpenCV's cascades find drawn faces (and nothing in noise
or a plain picture), boxes that show one face are merged, YOLO files are refused with a
message that names what works, and a YuNet file OpenCV cannot read is refused cleanly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.models.catalog import list_models, network_folders
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.refine.face_detection import (
    Detection,
    detector_file,
    merge_overlapping,
    open_detector,
)
from sdstudio.engine.settings import Settings


def draw_face(draw: ImageDraw.ImageDraw, cx: float, cy: float, s: float) -> None:
    """A cartoon face of height about 1.3 ``s`` centred at (cx, cy): skin, hair, brows,
    eyes, the shade of a nose and a mouth, the contrasts a face cascade looks for."""
    draw.ellipse((cx - 0.5 * s, cy - 0.65 * s, cx + 0.5 * s, cy + 0.65 * s), fill=(205, 170, 140))
    draw.chord((cx - 0.52 * s, cy - 0.72 * s, cx + 0.52 * s, cy + 0.1 * s), 180, 360, (60, 40, 30))
    for side in (-1, 1):
        ex = cx + side * 0.2 * s
        draw.ellipse((ex - 0.13 * s, cy - 0.28 * s, ex + 0.13 * s, cy - 0.22 * s), (70, 50, 40))
        draw.ellipse((ex - 0.11 * s, cy - 0.17 * s, ex + 0.11 * s, cy - 0.07 * s), (250, 250, 250))
        draw.ellipse((ex - 0.05 * s, cy - 0.16 * s, ex + 0.05 * s, cy - 0.08 * s), (30, 20, 20))
    nose = [(cx, cy - 0.05 * s), (cx - 0.07 * s, cy + 0.17 * s), (cx + 0.07 * s, cy + 0.17 * s)]
    draw.polygon(nose, fill=(180, 140, 115))
    draw.ellipse((cx - 0.18 * s, cy + 0.28 * s, cx + 0.18 * s, cy + 0.38 * s), (140, 60, 60))


def faces_picture(scale: float = 1.0) -> tuple[Image.Image, list[tuple[float, float]]]:
    """Two faces on a plain background, and their centres (right one first)."""
    size = (round(320 * scale), round(240 * scale))
    image = Image.new("RGB", size, (90, 110, 140))
    centres = [(230 * scale, 110 * scale), (90 * scale, 120 * scale)]
    for (cx, cy), s in zip(centres, (80 * scale, 100 * scale), strict=True):
        draw_face(ImageDraw.Draw(image), cx, cy, s)
    return image.filter(ImageFilter.GaussianBlur(2 * scale)), centres


def contains(detection: Detection, point: tuple[float, float]) -> bool:
    return detection.x0 <= point[0] < detection.x1 and detection.y0 <= point[1] < detection.y1


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_the_built_in_detector_finds_drawn_faces_left_to_right(scale: float) -> None:
    image, (right, left) = faces_picture(scale)
    found = open_detector("face").detect(image, 0.3)
    assert len(found) == 2
    first, second = found
    assert contains(first, left) and contains(second, right)  # sorted left to right
    assert all(0.3 <= d.score <= 1 for d in found)
    # The boxes are the faces' own size (within a third), at the image's own scale.
    assert all(60 * scale <= d.x1 - d.x0 <= 180 * scale for d in found)
    assert all(0 <= d.x0 < d.x1 <= image.width and 0 <= d.y0 < d.y1 <= image.height for d in found)


def test_the_confidence_threshold_drops_less_certain_faces() -> None:
    image, _centres = faces_picture()
    detector = open_detector("face")
    scores = sorted(d.score for d in detector.detect(image, 0.0))
    assert len(scores) >= 2
    assert detector.detect(image, 0.999) == []
    assert len(detector.detect(image, scores[-1])) >= 1


def test_nothing_is_found_in_noise_or_a_plain_picture() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (384, 384, 3), dtype=np.uint8)
    detector = open_detector("face")
    assert detector.detect(Image.fromarray(noise), 0.3) == []
    assert detector.detect(Image.new("RGB", (256, 256), (128, 128, 128)), 0.0) == []


def test_a_mirrored_picture_gives_mirrored_boxes() -> None:
    """The profile cascade runs on the picture and on its mirror image, so a face is found
    the same however it is turned; mirrored boxes are put back where the face is."""
    image, _centres = faces_picture()
    detector = open_detector("face")
    found = detector.detect(image, 0.3)
    mirrored = detector.detect(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 0.3)
    assert len(mirrored) == len(found) == 2
    for face, flipped in zip(found, reversed(mirrored), strict=True):
        assert abs((image.width - flipped.x1) - face.x0) <= 6
        assert abs(flipped.y0 - face.y0) <= 6


def test_boxes_of_one_face_are_merged_keeping_the_surer() -> None:
    a = Detection(10, 10, 60, 60, 0.5)
    b = Detection(14, 12, 62, 58, 0.8)  # the same face, surer
    inner = Detection(30, 30, 45, 45, 0.9)  # a box inside another
    apart = Detection(100, 10, 150, 60, 0.4)
    merged = merge_overlapping([a, b, apart, inner])
    assert set(merged) == {inner, apart}
    assert set(merge_overlapping([a, b, apart])) == {b, apart}
    assert merge_overlapping([]) == []


@pytest.mark.parametrize("name", ["face_yolov8n.pt", "hand_yolov8n.pt", "face_yolov8s"])
def test_yolo_files_are_refused_saying_what_works(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "models" / "adetailer"
    folder.mkdir(parents=True)
    (folder / "face_yolov8s.pt").write_bytes(b"not unpickled")
    with pytest.raises(InvalidRequest) as refused:
        open_detector(name, [folder])
    message = str(refused.value)
    assert "ultralytics" in message and "'face' (built in" in message
    assert "YuNet" in message and "face_detection_yunet_2023mar.onnx" in message


def test_a_yunet_file_that_is_no_onnx_model_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "detectors"
    folder.mkdir()
    fake = folder / "face_detection_yunet_2023mar.onnx"
    fake.write_bytes(b"\x00garbage, not a protobuf" * 40)
    assert detector_file("face_detection_yunet_2023mar", [folder]) == fake.resolve()
    for value in ("face_detection_yunet_2023mar.onnx", str(fake)):
        with pytest.raises(ModelError, match="not an ONNX model OpenCV can read"):
            open_detector(value, [folder])


def test_unknown_detectors_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="'eyes' was not found"):
        open_detector("eyes", [tmp_path])
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(InvalidRequest, match=r"notes\.txt is not a detector"):
        open_detector(str(other), [tmp_path])


def test_detector_files_are_listed_and_found_in_their_folders(tmp_path: Path) -> None:
    paths = AppPaths.default()
    own = paths.models_dir / "detectors"
    own.mkdir(parents=True)
    (own / "face_detection_yunet_2023mar.onnx").write_bytes(b"onnx")
    a1111 = tmp_path / "webui"
    (a1111 / "models" / "Stable-diffusion").mkdir(parents=True)
    (a1111 / "models" / "adetailer").mkdir(parents=True)
    (a1111 / "models" / "adetailer" / "face_yolov8n.pt").write_bytes(b"pickle")
    settings = Settings(model_folders=(str(a1111),))
    catalog = list_models(paths, settings, with_hf=False)
    detectors = {(e.name, e.format, e.source) for e in catalog.entries if e.kind == "detector"}
    assert detectors == {
        ("face_detection_yunet_2023mar", "onnx", "app"),
        ("face_yolov8n", "pt", "a1111"),
    }
    folders = network_folders(paths, settings, "detector")
    assert a1111 / "models" / "adetailer" in folders
    assert detector_file("face_detection_yunet_2023mar", folders).parent == own
