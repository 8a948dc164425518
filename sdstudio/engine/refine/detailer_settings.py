"""The settings of a detailer pass (ADetailer's): find faces in the finished image,
repaint each at full resolution with its own prompt and denoising strength, and paste
it back.

The prompts take ADetailer's words: empty is the image's own prompt, ``[PROMPT]`` stands
for it inside a longer prompt, ``[SEP]`` separates the prompts of the first, second ...
face (the last one serving the rest), and a face whose prompt is ``[SKIP]`` is left
as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdstudio.engine.settings_parts import (
    check,
    check_number,
    check_text,
    check_whole,
    part_from_dict,
    part_to_dict,
)

DEFAULT_DETECTOR = "face"
"""The built-in face detector."""
MAX_DETAIL_STEPS = 500


@dataclass(frozen=True, slots=True)
class Detailer:
    """What is found, and how each found area is repainted (ADetailer's defaults)."""

    detector: str = DEFAULT_DETECTOR
    """The built-in ``face`` detector, or a detector file's name or path."""
    prompt: str = ""
    """Empty: the image's own prompt."""
    negative_prompt: str = ""
    denoise: float = 0.4
    confidence: float = 0.3
    """Detections less certain than this are ignored."""
    mask_blur: int = 4
    padding: int = 32
    """Pixels of context around each area, repainted with it ("inpaint padding")."""
    dilate: int = 4
    """Pixels each area's mask grows by (negative: shrinks), ADetailer's "dilate erode"."""
    steps: int = 0
    """Steps of the schedule each area is repainted with (the denoising strength runs
    their last part, as image-to-image does); 0: the image's steps."""
    max_faces: int = 0
    """Only the largest this many areas are repainted (ADetailer's "mask only top k");
    0: every area found."""

    def __post_init__(self) -> None:
        check_text(self, "Detailer", "detector", "prompt", "negative_prompt")
        check(bool(self.detector.strip()), "No detailer detector was given.")
        check_number(self, "Detailer", "denoise", 0.0, 1.0)
        check(self.denoise > 0, "A detailer denoising strength of 0 repaints nothing.")
        check_number(self, "Detailer", "confidence", 0.0, 1.0)
        check_whole(self, "Detailer", "mask_blur", 0, 64)
        check_whole(self, "Detailer", "padding", 0, 512)
        check_whole(self, "Detailer", "dilate", -128, 128)
        check_whole(self, "Detailer", "steps", 0, MAX_DETAIL_STEPS)
        check_whole(self, "Detailer", "max_faces", 0, 100)

    def describe(self) -> str:
        """The settings in words: ``face, denoising 0.4, confidence 0.3, ...``."""
        parts = [self.detector, f"denoising {self.denoise:g}", f"confidence {self.confidence:g}"]
        parts += [f"padding {self.padding}", f"mask blur {self.mask_blur}"]
        parts.append(f"dilate {self.dilate}")
        if self.steps:
            parts.append(f"{self.steps} step{'s' if self.steps != 1 else ''}")
        if self.max_faces:
            parts.append(f"at most {self.max_faces} face{'s' if self.max_faces != 1 else ''}")
        if self.prompt:
            parts.append(f"prompt {self.prompt!r}")
        if self.negative_prompt:
            parts.append(f"negative prompt {self.negative_prompt!r}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return part_to_dict(self)

    @classmethod
    def from_dict(cls, data: object) -> Detailer:
        """Rebuild from :meth:`to_dict` output (unknown keys ignored)."""
        return part_from_dict(cls, data, "detailer")


def detailed_text(result: object) -> str:
    """An image record's ``detailer`` entry in words: ``2 of 3 faces repainted``."""
    if not isinstance(result, dict):
        return ""
    found, faces = result.get("found", 0), result.get("faces", 0)
    if not found:
        return "no face found"
    return f"{faces} of {found} face{'s' if found != 1 else ''} repainted"
