"""The settings of an SDXL refiner pass (A1111's ``Refiner`` and ``Refiner switch at``):
a second model takes over the denoising at a fraction of the steps."""

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

DEFAULT_SWITCH_AT = 0.8
"""A1111's default: the refiner runs the last fifth of the steps."""


@dataclass(frozen=True, slots=True)
class Refiner:
    """The model that finishes the denoising, and when it takes over."""

    model: str
    """A model's name, file name or path, as the request's own ``model``."""
    switch_at: float = DEFAULT_SWITCH_AT
    """The fraction of the steps after which the refiner takes over (0 < f < 1)."""

    def __post_init__(self) -> None:
        check_text(self, "Refiner", "model")
        check(bool(self.model.strip()), "No refiner model was given.")
        check_number(self, "Refiner", "switch_at", 0.0, 1.0)
        check(
            0.0 < self.switch_at < 1.0,
            f"Refiner switch at must be between 0 and 1 (exclusive), not {self.switch_at:g}.",
        )

    def describe(self) -> str:
        """The settings in words: ``sd_xl_refiner_1.0, switch at 0.8``."""
        return f"{self.model}, switch at {self.switch_at:g}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return part_to_dict(self)

    @classmethod
    def from_dict(cls, data: object) -> Refiner:
        """Rebuild from :meth:`to_dict` output (unknown keys ignored)."""
        return part_from_dict(cls, data, "refiner")
