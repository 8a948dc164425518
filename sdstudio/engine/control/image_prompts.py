"""An image prompt of a request: an IP-Adapter with its reference images, how strongly
and when it guides the denoising, and optionally the region it guides (A1111's
ControlNet extension runs IP-Adapters as control units, with the same settings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdstudio.engine.settings_parts import (
    check,
    check_number,
    check_text,
    part_from_dict,
    part_to_dict,
)

MAX_IMAGE_PROMPTS = 4
MAX_REFERENCE_IMAGES = 8
MAX_IMAGE_PROMPT_WEIGHT = 2.0


@dataclass(frozen=True, slots=True)
class ImagePrompt:
    """One IP-Adapter guiding a generation with reference images."""

    model: str
    """An IP-Adapter file's name or path (``ip-adapter_sd15``, ``ip-adapter-plus_sdxl_vit-h``)."""
    images: tuple[str, ...]
    """The reference images: paths (stored copies in the inputs folder once it ran)."""
    weight: float = 1.0
    start: float = 0.0
    """The fraction of the steps where the image prompt starts guiding."""
    end: float = 1.0
    mask: str = ""
    """A mask image (white: where the image prompt guides); empty: the whole picture."""
    encoder: str = ""
    """The CLIP vision encoder (a file name or path); empty: the one the adapter needs,
    found in the CLIP vision folders."""

    def __post_init__(self) -> None:
        if isinstance(self.images, str):
            object.__setattr__(self, "images", (self.images,))
        elif isinstance(self.images, list):
            object.__setattr__(self, "images", tuple(self.images))
        check_text(self, "Image prompt", "model", "mask", "encoder")
        check(
            isinstance(self.images, tuple) and all(isinstance(i, str) for i in self.images),
            "Image prompt images must be a list of image paths.",
        )
        check(bool(self.model.strip()), "An image prompt needs an IP-Adapter model.")
        check(
            bool(self.images) and all(i.strip() for i in self.images),
            "An image prompt needs at least one reference image.",
        )
        check(
            len(self.images) <= MAX_REFERENCE_IMAGES,
            f"An image prompt takes at most {MAX_REFERENCE_IMAGES} reference images, "
            f"not {len(self.images)}.",
        )
        check_number(self, "Image prompt", "weight", 0.0, MAX_IMAGE_PROMPT_WEIGHT)
        check_number(self, "Image prompt", "start", 0.0, 1.0)
        check_number(self, "Image prompt", "end", 0.0, 1.0)
        check(
            self.start < self.end,
            f"An image prompt's start ({self.start:g}) must come before its end ({self.end:g}).",
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = part_to_dict(self)
        data["images"] = list(self.images)
        return data

    @classmethod
    def from_dict(cls, data: object) -> ImagePrompt:
        """Rebuild from :meth:`to_dict` output (unknown keys ignored)."""
        return part_from_dict(cls, data, "image prompt")
