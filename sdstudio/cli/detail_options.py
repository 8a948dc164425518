"""``generate``'s detailer options: find the faces in the finished image and repaint
each at full resolution (ADetailer's job). ``--detail`` names the detector; any other
``--detail-...`` option alone turns the built-in face detector on. What is not given
takes ADetailer's defaults (denoising 0.4, confidence 0.3, padding 32, mask blur 4,
dilate 4, the image's prompts and steps)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from sdstudio.engine.refine.detailer_settings import DEFAULT_DETECTOR, Detailer

_OPTIONS = {
    "detail_prompt": "prompt",
    "detail_negative": "negative_prompt",
    "detail_denoise": "denoise",
    "detail_confidence": "confidence",
    "detail_padding": "padding",
    "detail_blur": "mask_blur",
    "detail_dilate": "dilate",
    "detail_steps": "steps",
    "detail_max": "max_faces",
}
"""Each option's :class:`Detailer` field."""


def add_detail_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--detail`` and the ``--detail-...`` options."""
    group = parser.add_argument_group(
        "detailer", "repaint each face found at full resolution (ADetailer's job)"
    )
    group.add_argument(
        "--detail",
        default=None,
        metavar="DETECTOR",
        help=f"'{DEFAULT_DETECTOR}' (built in), or OpenCV's YuNet face detector file "
        "(face_detection_yunet_2023mar.onnx, a path or its name in models/detectors)",
    )
    group.add_argument(
        "--detail-prompt",
        default=None,
        metavar="TEXT",
        help="prompt of the faces (default: --prompt; [PROMPT] stands for it, "
        "[SEP] separates the faces' prompts)",
    )
    group.add_argument(
        "--detail-negative", default=None, metavar="TEXT", help="negative prompt of the faces"
    )
    group.add_argument(
        "--detail-denoise", type=float, default=None, metavar="F", help="denoising (default 0.4)"
    )
    group.add_argument(
        "--detail-confidence",
        type=float,
        default=None,
        metavar="F",
        help="ignore faces found less surely than this, 0 to 1 (default 0.3)",
    )
    group.add_argument(
        "--detail-padding",
        type=int,
        default=None,
        metavar="PX",
        help="pixels of context around each face (default 32)",
    )
    group.add_argument(
        "--detail-blur", type=int, default=None, metavar="PX", help="mask blur (default 4)"
    )
    group.add_argument(
        "--detail-dilate",
        type=int,
        default=None,
        metavar="PX",
        help="grow each face's mask (negative: shrink; default 4)",
    )
    group.add_argument(
        "--detail-steps", type=int, default=None, help="steps of the faces (default: --steps)"
    )
    group.add_argument(
        "--detail-max",
        type=int,
        default=None,
        metavar="N",
        help="repaint only the N largest faces (default: all)",
    )


def detail_options(args: argparse.Namespace) -> Detailer | None:
    """The detailer the options ask for (``None``: none given).

    Raises :class:`~sdstudio.engine.errors.InvalidRequest` for a value out of range.
    """
    detector = getattr(args, "detail", None)
    given = {
        name: getattr(args, name) for name in _OPTIONS if getattr(args, name, None) is not None
    }
    if detector is None and not given:
        return None
    values: dict[str, object] = {_OPTIONS[name]: value for name, value in given.items()}
    if detector is not None:
        values["detector"] = detector_argument(detector)
    return Detailer(**values)  # type: ignore[arg-type]


def detector_argument(value: str) -> str:
    """``--detail``: the built-in detector, a path (made absolute), or a name to find."""
    if value.strip().casefold() == DEFAULT_DETECTOR:
        return DEFAULT_DETECTOR
    return str(Path(value).expanduser().resolve()) if os.path.exists(value) else value


def recorded_detailer(detailer: Detailer) -> Detailer:
    """A detailer read from an image that is not sdstudio's own: its detector file is
    looked for by file name only, in the detector folders (a recorded path could name
    any file on this computer)."""
    if detailer.detector.casefold() == DEFAULT_DETECTOR:
        return detailer
    name = Path(detailer.detector.replace("\\", "/")).name
    return dataclasses.replace(detailer, detector=name)
