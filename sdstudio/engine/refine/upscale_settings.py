"""The settings of upscaling a source image: alone (the ``upscale`` mode, A1111's Extras
tab) or before repainting it tile by tile with image-to-image (A1111's "SD upscale"
script, whose tiles have the request's size)."""

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

MAX_UPSCALE = 8.0
MAX_UPSCALED_SIZE = 16384
"""The longest side an upscaled image may have."""
DEFAULT_TILE = 512
"""Source pixels per tile side an upscaler model processes at a time."""
DEFAULT_OVERLAP = 64
"""A1111's default "SD upscale overlap"."""


@dataclass(frozen=True, slots=True)
class Upscale:
    """Which upscaler, by how much, and in what pieces."""

    upscaler: str = "Lanczos"
    """A built-in upscaler (``Lanczos``, ``Nearest``) or an upscaler file's name or path."""
    scale: float = 2.0
    tile: int = DEFAULT_TILE
    """Tile side (source pixels) for an upscaler model; 0: the whole image at once."""
    overlap: int = DEFAULT_OVERLAP
    """With image-to-image: pixels the repainted tiles overlap (A1111's "SD upscale
    overlap"); their seams are blended across it."""

    def __post_init__(self) -> None:
        check_text(self, "Upscale", "upscaler")
        check(bool(self.upscaler.strip()), "No upscaler was given.")
        check_number(self, "Upscale", "scale", 1.0, MAX_UPSCALE)
        check_whole(self, "Upscale", "tile", 0, 4096)
        check(
            self.tile == 0 or self.tile >= 32,
            f"Upscale tile must be 0 or at least 32, not {self.tile}.",
        )
        check_whole(self, "Upscale", "overlap", 0, 1024)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return part_to_dict(self)

    @classmethod
    def from_dict(cls, data: object) -> Upscale:
        """Rebuild from :meth:`to_dict` output (unknown keys ignored)."""
        return part_from_dict(cls, data, "upscale")
