"""Finding faces for the detailer, with OpenCV (no download, no extra library).

Two detectors work:

- ``face``, built in: OpenCV's Haar cascades (the frontal face cascade, and the
  profile cascade on the image and on its mirror image, for faces turned either
  way), shipped with OpenCV under its BSD licence.
- OpenCV's YuNet face detector, a small ONNX file the user puts in sdstudio's
  ``models/detectors`` folder or A1111/Forge's ``models/adetailer`` folder (named by
  file name or path), run by ``cv2.FaceDetectorYN``.

ADetailer's YOLO files (``face_yolov8n.pt`` ...) need the ultralytics library, which
sdstudio does not use (it is AGPL-licensed): they are refused with a message that
names the detectors that work.

A cascade gives no probability; it finds a face in many overlapping windows of its
sliding search, and the more windows agree, the surer the face (OpenCV's
``minNeighbors`` is a threshold on that count). The confidence of a face found by a
cascade is ``n / (n + 9)`` for ``n`` agreeing windows: 0.5 at 9 windows, and
ADetailer's default threshold 0.3 keeps faces found by at least 4 windows, as
OpenCV's default ``minNeighbors=3`` does. (The cascades' last-stage sums, which
``detectMultiScale3`` also gives, were measured to separate faces from noise worse:
single windows on random noise reach 6.3 where drawn faces reach 7.4.)

Faces found by more than one cascade (or twice by one) are merged, the surer kept;
detections come back sorted left to right.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.network_files import find_file
from sdstudio.engine.refine.detailer_settings import DEFAULT_DETECTOR
from sdstudio.engine.request_checks import shown

DETECTOR_SUFFIXES = (".onnx", ".pt", ".pth")
"""Detector files looked for by name (the ``.pt`` ones only to be refused clearly)."""
YUNET_FILE = "face_detection_yunet_2023mar.onnx"
"""The name OpenCV's model zoo gives its current YuNet face detector."""
WORKING_DETECTORS = (
    f"'{DEFAULT_DETECTOR}' (built in: OpenCV's face cascades) and OpenCV's YuNet face "
    f"detector ({YUNET_FILE}, an ONNX file) put in sdstudio's models/detectors folder or "
    "A1111's models/adetailer folder"
)
"""The detectors that work, in words for messages."""
MAX_DETECTION_SIDE = 1024
"""Larger images are scaled down to this for detection (the boxes are scaled back)."""
VOTES_AT_HALF = 9
"""Agreeing cascade windows that give a confidence of 0.5."""
_CASCADES = ("haarcascade_frontalface_alt2.xml", "haarcascade_profileface.xml")


@dataclass(frozen=True, slots=True)
class Detection:
    """A found face: its box in pixels (``x1``, ``y1`` exclusive, as PIL's boxes) and
    how sure the detector is, from 0 to 1."""

    x0: int
    y0: int
    x1: int
    y1: int
    score: float

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``."""
        return (self.x0, self.y0, self.x1, self.y1)

    @property
    def area(self) -> int:
        """Pixels in the box."""
        return max(0, self.x1 - self.x0) * max(0, self.y1 - self.y0)

    def to_list(self) -> list[float]:
        """``[x0, y0, x1, y1, score]`` for a record (score to 3 decimals)."""
        return [self.x0, self.y0, self.x1, self.y1, round(self.score, 3)]


class FaceDetector(Protocol):
    """Finds faces in an image."""

    name: str
    """How the request names it (``face``, or a file name)."""

    def detect(self, image: Image.Image, confidence: float) -> list[Detection]:
        """The faces at least ``confidence`` sure, sorted left to right."""
        ...


OpenDetector = Callable[[str], FaceDetector]
"""Opens the detector a request names."""


def open_detector(value: str, folders: Iterable[Path] = ()) -> FaceDetector:
    """The detector ``value`` names: ``face`` (built in), or a YuNet ONNX file by path
    or by name in ``folders``.

    Raises :class:`InvalidRequest` for a YOLO ``.pt`` file (ADetailer's), another kind of
    file, or a name not found; :class:`ModelError` for a file OpenCV cannot read as a
    YuNet model.
    """
    if value.strip().casefold() == DEFAULT_DETECTOR:
        return CascadeDetector()
    path = detector_file(value, folders)
    return YuNetDetector(path, value)


def detector_file(value: str, folders: Iterable[Path] = ()) -> Path:
    """The detector file ``value`` names (a path, or a file name or stem in ``folders``);
    refused unless it is an ONNX file."""
    folders = [Path(folder) for folder in folders]
    path = _existing_file(value)
    if path is None:
        name = Path(value.replace("\\", "/")).name
        stem = Path(name).stem if Path(name).suffix.lower() in DETECTOR_SUFFIXES else name
        found = find_file(stem, folders, DETECTOR_SUFFIXES) if stem.strip(".") else None
        if found is None:
            _refuse_suffix(Path(name))
            where = ", ".join(str(folder) for folder in folders) or "no detector folders"
            raise InvalidRequest(
                f"The detector {shown(value)} was not found (looked in {where}). "
                f"Detectors that work: {WORKING_DETECTORS}."
            )
        path = found
    _refuse_suffix(path)
    if path.suffix.lower() != ".onnx":
        raise InvalidRequest(
            f"{path.name} is not a detector sdstudio can use. Detectors that work: "
            f"{WORKING_DETECTORS}."
        )
    return path.resolve()


def _existing_file(value: str) -> Path | None:
    """The file ``value`` is a path of, if it is one (a name, a user folder that does not
    exist or a path too long is none)."""
    try:
        path = Path(value).expanduser()
        return path if path.is_file() else None
    except (OSError, RuntimeError, ValueError):
        return None


def _refuse_suffix(path: Path) -> None:
    """Refuse ADetailer's YOLO files by their suffix, saying what works instead."""
    if path.suffix.lower() in (".pt", ".pth"):
        raise InvalidRequest(
            f"{path.name} is a YOLO detector (ADetailer's): it needs the ultralytics library, "
            "which sdstudio does not use (its licence is the AGPL). Detectors that work: "
            f"{WORKING_DETECTORS}."
        )


class CascadeDetector:
    """OpenCV's frontal and profile face cascades (see the module's notes)."""

    name = DEFAULT_DETECTOR

    def __init__(self) -> None:
        import cv2
        from cv2.data import haarcascades

        self._cascades = []
        for file in _CASCADES:
            cascade = cv2.CascadeClassifier(str(Path(haarcascades) / file))
            if cascade.empty():
                raise ModelError(f"OpenCV's face cascade {file} is missing from its install.")
            self._cascades.append(cascade)

    def detect(self, image: Image.Image, confidence: float) -> list[Detection]:
        """The faces at least ``confidence`` sure, sorted left to right."""
        import numpy as np

        small, factor = _scaled_down(image)
        gray = np.asarray(small.convert("L"))
        frontal, profile = self._cascades
        found = _cascade_faces(frontal, gray)
        found += _cascade_faces(profile, gray)
        mirrored = _cascade_faces(profile, np.ascontiguousarray(gray[:, ::-1]))
        width = gray.shape[1]
        found += [Detection(width - d.x1, d.y0, width - d.x0, d.y1, d.score) for d in mirrored]
        kept = [d for d in found if d.score >= confidence]
        return sort_left_to_right(merge_overlapping(_scaled_back(kept, factor, image.size)))


def _cascade_faces(cascade: Any, gray: Any) -> list[Detection]:
    """One cascade's faces in a grey image, each with its confidence from its windows."""
    rects, votes = cascade.detectMultiScale2(
        gray, scaleFactor=1.1, minNeighbors=1, minSize=(20, 20)
    )
    return [
        Detection(int(x), int(y), int(x + w), int(y + h), int(n) / (int(n) + VOTES_AT_HALF))
        for (x, y, w, h), n in zip(rects, votes, strict=True)
    ]


class YuNetDetector:
    """OpenCV's YuNet face detector, from an ONNX file."""

    def __init__(self, path: Path, name: str = "") -> None:
        import cv2

        self.path = path
        self.name = name or path.name
        try:
            self._net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), 0.3, 0.3, 5000)
        except cv2.error:
            raise ModelError(
                f"{path.name} is not an ONNX model OpenCV can read. The detector file must be "
                f"OpenCV's YuNet face detector ({YUNET_FILE})."
            ) from None

    def detect(self, image: Image.Image, confidence: float) -> list[Detection]:
        """The faces at least ``confidence`` sure, sorted left to right."""
        import cv2
        import numpy as np

        small, factor = _scaled_down(image)
        pixels = cv2.cvtColor(np.asarray(small.convert("RGB")), cv2.COLOR_RGB2BGR)
        try:
            self._net.setInputSize(small.size)
            self._net.setScoreThreshold(float(confidence))
            _count, faces = self._net.detect(pixels)
        except cv2.error as error:
            raise ModelError(
                f"{self.path.name} did not run as a YuNet face detector ({_first(error)}). "
                f"Use OpenCV's YuNet file ({YUNET_FILE})."
            ) from None
        found = []
        for face in faces if faces is not None else ():
            x, y, w, h = (float(v) for v in face[:4])
            found.append(Detection(round(x), round(y), round(x + w), round(y + h), float(face[-1])))
        kept = [d for d in found if d.score >= confidence]
        return sort_left_to_right(merge_overlapping(_scaled_back(kept, factor, image.size)))


def merge_overlapping(detections: Sequence[Detection], overlap: float = 0.3) -> list[Detection]:
    """The detections with those that show the same face merged: of two boxes that
    overlap by more than ``overlap`` of their union, or whose smaller lies mostly (60 %)
    inside the other, the surer one is kept."""
    kept: list[Detection] = []
    for detection in sorted(detections, key=lambda d: -d.score):
        if not any(_same_face(detection, other, overlap) for other in kept):
            kept.append(detection)
    return kept


def _same_face(a: Detection, b: Detection, overlap: float) -> bool:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    if width <= 0 or height <= 0:
        return False
    shared = width * height
    union = a.area + b.area - shared
    return shared > overlap * union or shared > 0.6 * min(a.area, b.area)


def sort_left_to_right(detections: Iterable[Detection]) -> list[Detection]:
    """The detections by their left edge (ADetailer's "Position (left to right)")."""
    return sorted(detections, key=lambda d: (d.x0, d.y0))


def _scaled_down(image: Image.Image) -> tuple[Image.Image, float]:
    """The image at most :data:`MAX_DETECTION_SIDE` pixels on its longer side, and the
    factor it was scaled by."""
    longest = max(image.size)
    if longest <= MAX_DETECTION_SIDE:
        return image, 1.0
    factor = MAX_DETECTION_SIDE / longest
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.BILINEAR), factor


def _scaled_back(
    detections: Iterable[Detection], factor: float, size: tuple[int, int]
) -> list[Detection]:
    """Boxes found on a scaled-down image at the image's own size, within it."""
    width, height = size

    def scaled(value: int, limit: int) -> int:
        return max(0, min(round(value / factor), limit))

    back = []
    for d in detections:
        x0, x1 = scaled(d.x0, width), scaled(d.x1, width)
        y0, y1 = scaled(d.y0, height), scaled(d.y1, height)
        if x1 > x0 and y1 > y0:
            back.append(Detection(x0, y0, x1, y1, d.score))
    return back


def _first(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
