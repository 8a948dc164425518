"""A control unit of a request: one ControlNet (or Union / T2I-Adapter) with its control
image, how that image is turned into a control map, and how strongly and when it guides
the denoising (A1111's ControlNet extension's settings, with its defaults)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.settings_parts import (
    check,
    check_number,
    check_text,
    check_whole,
    part_from_dict,
    part_to_dict,
)

MAX_UNITS = 8
MAX_WEIGHT = 2.0


class ControlMode(enum.StrEnum):
    """How the prompt and the control share the guidance (A1111's "Control Mode")."""

    BALANCED = "balanced"
    PROMPT = "prompt"
    """"My prompt is more important": the control's effect fades in the deeper layers."""
    CONTROL = "control"
    """"ControlNet is more important": the control guides only the prompt's half of CFG."""


class ControlResize(enum.StrEnum):
    """How a control image of another shape is fitted (A1111's "Resize Mode")."""

    RESIZE = "resize"
    """"Just Resize"."""
    CROP = "crop"
    """"Crop and Resize" (A1111's default)."""
    FILL = "fill"
    """"Resize and Fill"."""


@dataclass(frozen=True, slots=True)
class ControlUnit:
    """One ControlNet guiding a generation."""

    model: str
    """A ControlNet file's name or path, or a diffusers folder."""
    image: str
    """The control image: a path (a stored copy in the inputs folder once it ran)."""
    preprocessor: str = "none"
    """A1111's module name (``canny``, ``scribble``, ``tile``...); ``none``: the image is
    already a control map."""
    weight: float = 1.0
    start: float = 0.0
    """The fraction of the steps where the control starts guiding."""
    end: float = 1.0
    mode: ControlMode = ControlMode.BALANCED
    resize: ControlResize = ControlResize.CROP
    resolution: int = 512
    """The preprocessor's working size (A1111's "Processor Res")."""
    threshold_a: float | None = None
    """The preprocessor's first setting (canny: low threshold); None: its default."""
    threshold_b: float | None = None
    control_type: str = ""
    """For a Union ControlNet: which control it reads (``canny``, ``depth``...)."""
    pixel_perfect: bool = False
    """A1111's "Pixel Perfect": the preprocessor works at the size the control image
    takes in the generated picture, instead of at :attr:`resolution`."""

    def __post_init__(self) -> None:
        for name, kind in (("mode", ControlMode), ("resize", ControlResize)):
            value = getattr(self, name)
            if isinstance(value, str) and not isinstance(value, kind):
                try:
                    object.__setattr__(self, name, kind(value))
                except ValueError:
                    valid = ", ".join(m.value for m in kind)
                    message = f"Control {name} {value!r:.40} is unknown; valid: {valid}."
                    raise InvalidRequest(message) from None
        check_text(self, "Control", "model", "image", "preprocessor", "control_type")
        check(bool(self.model.strip()), "A control unit needs a ControlNet model.")
        check(bool(self.image.strip()), "A control unit needs a control image.")
        check(bool(self.preprocessor.strip()), "A control unit needs a preprocessor (or none).")
        check_number(self, "Control", "weight", 0.0, MAX_WEIGHT)
        check_number(self, "Control", "start", 0.0, 1.0)
        check_number(self, "Control", "end", 0.0, 1.0)
        check(
            self.start < self.end,
            f"A control unit's start ({self.start:g}) must come before its end ({self.end:g}).",
        )
        check_whole(self, "Control", "resolution", 64, 2048)
        check(isinstance(self.pixel_perfect, bool), "Control pixel perfect must be true or false.")
        for name in ("threshold_a", "threshold_b"):
            if getattr(self, name) is not None:
                check_number(self, "Control", name, -10_000.0, 10_000.0)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = part_to_dict(self)
        data["mode"], data["resize"] = self.mode.value, self.resize.value
        return data

    @classmethod
    def from_dict(cls, data: object) -> ControlUnit:
        """Rebuild from :meth:`to_dict` output (unknown keys ignored)."""
        return part_from_dict(cls, data, "control unit")
