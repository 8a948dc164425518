"""The detailer under ADetailer's names, as ADetailer writes and reads them in A1111 and
Forge (``ADetailerArgs.extra_params`` in its ``adetailer/args.py``).

ADetailer writes, for its first unit: ``ADetailer model`` (a file name such as
``face_yolov8n.pt``), ``ADetailer prompt`` and ``ADetailer negative prompt`` (when not
empty), ``ADetailer confidence``, ``ADetailer mask only top k`` with ``ADetailer method
to decide top k masks`` (when not 0), ``ADetailer dilate erode``, ``ADetailer mask
blur``, ``ADetailer denoising strength``, ``ADetailer inpaint only masked: True`` with
``ADetailer inpaint padding``, ``ADetailer use separate steps: True`` with
``ADetailer steps`` (when used), a few more settings when they are not their defaults,
and ``ADetailer version``. Its second, third ... units write the same keys ending in
`` 2nd``, `` 3rd`` ...

Reading maps ADetailer's face models (``face_yolov8n.pt``, ``face_yolov8s.pt``,
``mediapipe_face_full`` ...) to the built-in ``face`` detector, with a note. Every
ADetailer key of another model (hands, persons), of a unit after the first, or that
sdstudio does not apply (offsets, a separate checkpoint or sampler, ControlNet ...)
stays in the extras, with a note where the reason is not plain.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata.values import Parsed, as_float, as_int
from sdstudio.engine.refine.detailer_settings import DEFAULT_DETECTOR, MAX_DETAIL_STEPS, Detailer
from sdstudio.engine.request import GenerationRequest

ADETAILER_VERSION = "25.3.0"
"""The ADetailer release whose keys and meanings these follow (written as ``ADetailer
version``, which tools that list the extensions an image used read)."""
PREFIX = "adetailer "
_MODEL = "adetailer model"
_SCALARS = {
    "adetailer confidence": ("confidence", float, 0.0, 1.0),
    "adetailer dilate erode": ("dilate", int, -128, 128),
    "adetailer mask blur": ("mask_blur", int, 0, 64),
    "adetailer denoising strength": ("denoise", float, 0.0, 1.0),
    "adetailer inpaint padding": ("padding", int, 0, 512),
    "adetailer mask only top k": ("max_faces", int, 0, 100),
}
"""Keys (case-folded) of one number each: the field, its type and its range."""
_TEXTS = {"adetailer prompt": "prompt", "adetailer negative prompt": "negative_prompt"}
_INFORMATIONAL = frozenset({"adetailer version", "adetailer method to decide top k masks"})
_LATER_UNIT = re.compile(r"(?i)adetailer .+ (\d+(?:st|nd|rd|th))")
_FACE_MODELS = re.compile(r"(?i)(face_yolo\w*|mediapipe_face_(full|short|mesh))(\.pt)?")
"""ADetailer's models that find whole faces, as the built-in detector does."""


def settings_written(request: GenerationRequest) -> list[tuple[str, object]]:
    """The ``parameters`` entries of the request's detailer, in ADetailer's order; none
    without one. A detector file is named by its file name, as ADetailer names models."""
    detailer = request.detailer
    if detailer is None:
        return []
    model = detailer.detector
    if model.casefold() != DEFAULT_DETECTOR:
        model = Path(model.replace("\\", "/")).name
    settings: list[tuple[str, object]] = [("ADetailer model", model)]
    if detailer.prompt:
        settings.append(("ADetailer prompt", detailer.prompt))
    if detailer.negative_prompt:
        settings.append(("ADetailer negative prompt", detailer.negative_prompt))
    settings.append(("ADetailer confidence", f"{detailer.confidence:g}"))
    if detailer.max_faces:
        settings += [
            ("ADetailer method to decide top k masks", "Area"),
            ("ADetailer mask only top k", detailer.max_faces),
        ]
    settings += [
        ("ADetailer dilate erode", detailer.dilate),
        ("ADetailer mask blur", detailer.mask_blur),
        ("ADetailer denoising strength", f"{detailer.denoise:g}"),
        ("ADetailer inpaint only masked", "True"),
        ("ADetailer inpaint padding", detailer.padding),
    ]
    if detailer.steps:
        settings += [("ADetailer use separate steps", "True"), ("ADetailer steps", detailer.steps)]
    settings.append(("ADetailer version", ADETAILER_VERSION))
    return settings


@dataclass(frozen=True, slots=True)
class DetailerRead:
    """What a ``parameters`` text says of ADetailer."""

    detailer: Detailer | None = None
    """The detailer read; ``None`` when there is none sdstudio can run."""
    used: frozenset[str] = frozenset()
    """Keys (case-folded) read into it; the other ADetailer keys stay extras."""
    notes: tuple[str, ...] = ()

    def apply(self, parsed: Parsed) -> Parsed:
        """``parsed`` with the detailer in its request and its ``read`` fields."""
        notes = (*parsed.notes, *self.notes)
        if self.detailer is None:
            return dataclasses.replace(parsed, notes=notes)
        return dataclasses.replace(
            parsed,
            request=parsed.request.replace(detailer=self.detailer),
            read=parsed.read | {"detailer"},
            notes=notes,
        )


def read(settings: Mapping[str, str]) -> DetailerRead:
    """Read ADetailer's first unit from A1111 entries keyed by case-folded name.

    A face model becomes the built-in ``face`` detector; an ONNX detector file is kept
    by its file name. Another model, or a value sdstudio cannot use, leaves the
    detailer unread (its keys kept as extras) with a note.
    """
    notes = _later_unit_notes(settings)
    model = settings.get(_MODEL, "").strip()
    if not model or model.casefold() == "none":
        return DetailerRead(notes=tuple(notes))
    detector, note = _detector(model)
    if detector is None:
        return DetailerRead(notes=(*notes, note))
    if note:
        notes.append(note)
    values: dict[str, object] = {"detector": detector}
    used = {_MODEL, *(key for key in _INFORMATIONAL if key in settings)}
    for key, name in _TEXTS.items():
        if key in settings:
            values[name] = settings[key]
            used.add(key)
    for key, (name, kind, low, high) in _SCALARS.items():
        if key not in settings:
            continue
        number = as_int(settings[key]) if kind is int else as_float(settings[key])
        if number is None or not low <= number <= high:
            problem = f"its {key.removeprefix(PREFIX)} {settings[key]!r} is unusable"
            return DetailerRead(notes=(*notes, _unread(problem)))
        values[name] = number
        used.add(key)
    if _switched(settings, "adetailer use separate steps"):
        steps = as_int(settings.get("adetailer steps"))
        if steps is None or not 1 <= steps <= MAX_DETAIL_STEPS:
            return DetailerRead(notes=(*notes, _unread("its steps are unusable")))
        values["steps"] = steps
        used |= {"adetailer use separate steps", "adetailer steps"}
    if "adetailer inpaint only masked" in settings:
        used.add("adetailer inpaint only masked")
        if not _switched(settings, "adetailer inpaint only masked"):
            notes.append(
                "ADetailer repainted its faces with the whole picture (inpaint only masked: "
                "False); sdstudio's detailer repaints each face's area at full size."
            )
    method = settings.get("adetailer method to decide top k masks", "Area").strip()
    if values.get("max_faces") and method.casefold() != "area":
        notes.append(f"ADetailer chose its top faces by {method}; sdstudio keeps the largest.")
    if values.get("denoise") == 0:
        return DetailerRead(notes=(*notes, _unread("its denoising strength is 0")))
    try:
        detailer = Detailer(**values)  # type: ignore[arg-type]
    except InvalidRequest as error:  # not expected: every value was checked
        return DetailerRead(notes=(*notes, _unread(str(error))))
    return DetailerRead(detailer, frozenset(used), tuple(notes))


def _detector(model: str) -> tuple[str | None, str]:
    """The detector sdstudio runs for an ADetailer model (``None``: none), and a note."""
    name = Path(model.replace("\\", "/")).name
    if name.casefold() == DEFAULT_DETECTOR:
        return DEFAULT_DETECTOR, ""
    if _FACE_MODELS.fullmatch(name):
        return DEFAULT_DETECTOR, (
            f"ADetailer's {name} is read as sdstudio's built-in face detector (OpenCV's face "
            "cascades); ADetailer's YOLO and MediaPipe models are not used."
        )
    if name.lower().endswith(".onnx"):
        return name, ""
    return None, (
        f"ADetailer's {name} finds what sdstudio's detailer does not (it finds faces); the "
        "ADetailer settings are kept as written."
    )


def _later_unit_notes(settings: Mapping[str, str]) -> list[str]:
    """A note for each ADetailer unit after the first: sdstudio runs one detailer."""
    units: dict[str, str] = {}
    for key in settings:
        found = _LATER_UNIT.fullmatch(key)
        if found:
            suffix = found.group(1)
            units.setdefault(suffix, settings.get(f"{_MODEL} {suffix}", "").strip())
    return [
        f"ADetailer's {suffix} unit{f' ({model})' if model else ''} is kept as written: "
        "sdstudio runs one detailer."
        for suffix, model in units.items()
    ]


def _switched(settings: Mapping[str, str], key: str) -> bool:
    return settings.get(key, "").strip().casefold() == "true"


def _unread(reason: str) -> str:
    return f"The ADetailer settings are kept as written, not applied: {reason}."
