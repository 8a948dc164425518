"""The settings of a detailer pass (ADetailer's): find faces in the finished image,
repaint each at full resolution with its own prompt and denoising strength, and paste
it back."""

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

    def __post_init__(self) -> None:
        check_text(self, "Detailer", "detector", "prompt", "negative_prompt")
        check(bool(self.detector.strip()), "No detailer detector was given.")
        check_number(self, "Detailer", "denoise", 0.0, 1.0)
        check(self.denoise > 0, "A detailer denoising strength of 0 repaints nothing.")
        check_number(self, "Detailer", "confidence", 0.0, 1.0)
        check_whole(self, "Detailer", "mask_blur", 0, 64)
        check_whole(self, "Detailer", "padding", 0, 512)
        check_whole(self, "Detailer", "dilate", -128, 128)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return part_to_dict(self)

    @classmethod
    def from_dict(cls, data: object) -> Detailer:
        """Rebuild from :meth:`to_dict` output (unknown keys ignored)."""
        return part_from_dict(cls, data, "detailer")
