"""The settings of a hires fix (A1111's "Hires. fix"): a second pass that upscales the
first pass's image and repaints it at the larger size.

Its fields are A1111's: ``Hires upscale`` (a factor) or ``Hires resize`` (a target
size), ``Hires upscaler`` (built in, or an upscaler model file such as ``4x-UltraSharp``:
see :mod:`sdstudio.engine.refine.upscalers`), ``Hires steps`` (0: as many as the first pass),
``Denoising strength``, and the optional ``Hires sampler``, ``Hires schedule type``,
``Hires prompt``, ``Hires negative prompt`` and ``Hires CFG Scale`` (empty or ``None``:
the first pass's).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sdstudio.engine.errors import InvalidRequest

MAX_HIRES_SCALE = 8.0
LATENT_UPSCALERS = (
    "Latent",
    "Latent (antialiased)",
    "Latent (bicubic)",
    "Latent (bicubic antialiased)",
    "Latent (nearest)",
    "Latent (nearest-exact)",
)
"""A1111's upscalers that resize the latents (before decoding) instead of the image."""
IMAGE_UPSCALERS = ("Lanczos", "Nearest")
"""A1111's built-in upscalers that resize the decoded image without a model."""
DEFAULT_UPSCALER = "Latent"
LATENT_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
"""Each latent upscaler's ``torch.nn.functional.interpolate`` mode and antialiasing, as
A1111 defines them (``shared.latent_upscale_modes``)."""


def builtin_upscaler(name: str) -> str | None:
    """A built-in upscaler's name as A1111 spells it (``"lanczos"`` gives ``"Lanczos"``), or
    ``None`` for a name that is not built in (an upscaler model's)."""
    key = name.strip().casefold()
    return next((n for n in (*LATENT_UPSCALERS, *IMAGE_UPSCALERS) if n.casefold() == key), None)


@dataclass(frozen=True, slots=True)
class HiresFix:
    """A second pass at a larger size. ``scale`` applies when ``width``/``height`` are 0."""

    scale: float = 2.0
    width: int = 0
    """A1111's "Hires resize" width; 0: the first pass's width times ``scale``."""
    height: int = 0
    upscaler: str = DEFAULT_UPSCALER
    """A built-in upscaler's name (:data:`LATENT_UPSCALERS`, :data:`IMAGE_UPSCALERS`, or
    A1111's ``None``, a Lanczos resize) or an upscaler model file's name, A1111 name
    (``R-ESRGAN 4x+``) or path."""
    steps: int = 0
    """Denoising steps of the second pass; 0: the first pass's."""
    denoise: float = 0.7
    """A1111's "Denoising strength" of the second pass."""
    sampler: str = ""
    """Empty: the first pass's sampler (and schedule)."""
    schedule: str = ""
    prompt: str = ""
    """Empty: the first pass's prompt."""
    negative_prompt: str = ""
    guidance_scale: float | None = None
    """None: the first pass's CFG scale."""

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise InvalidRequest(message)

        for name in ("upscaler", "sampler", "schedule", "prompt", "negative_prompt"):
            check(isinstance(getattr(self, name), str), f"Hires {name} must be text.")
        for name in ("width", "height", "steps"):
            value = getattr(self, name)
            check(
                isinstance(value, int) and not isinstance(value, bool),
                f"Hires {name} must be a whole number.",
            )
        for name in ("scale", "denoise"):
            value = getattr(self, name)
            check(
                isinstance(value, int | float) and not isinstance(value, bool),
                f"Hires {name} must be a number.",
            )
        check(
            1.0 <= self.scale <= MAX_HIRES_SCALE,
            f"Hires upscale must be between 1 and {MAX_HIRES_SCALE:g}, not {self.scale}.",
        )
        check(
            0.0 <= self.denoise <= 1.0,
            f"Hires denoising strength must be between 0 and 1, not {self.denoise}.",
        )
        check(0 <= self.steps <= 500, f"Hires steps must be between 0 and 500, not {self.steps}.")
        check(bool(self.upscaler.strip()), "No hires upscaler was given.")
        check(
            (self.width == 0) == (self.height == 0),
            "Hires resize needs both a width and a height (or neither, to use the scale).",
        )
        if self.guidance_scale is not None:
            check(
                isinstance(self.guidance_scale, int | float)
                and not isinstance(self.guidance_scale, bool)
                and 0.0 <= self.guidance_scale <= 50.0,
                f"Hires CFG scale must be between 0 and 50, not {self.guidance_scale}.",
            )
            object.__setattr__(self, "guidance_scale", float(self.guidance_scale))
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "denoise", float(self.denoise))

    def target_size(self, width: int, height: int, multiple: int = 8) -> tuple[int, int]:
        """The second pass's size for a first pass of ``width`` x ``height``: the resize
        size, or the scaled size rounded down to a multiple of ``multiple`` (8, as A1111's
        latents round it; 16 for the models whose latents are packed in 2x2 patches)."""
        if self.width and self.height:
            return self.width, self.height
        return (
            max(multiple, int(width * self.scale) // multiple * multiple),
            max(multiple, int(height * self.scale) // multiple * multiple),
        )

    def describe(self) -> str:
        """The settings in words: ``upscale 2 with Latent, 10 steps, denoising 0.5``."""
        size = f"resize to {self.width}x{self.height}" if self.width else f"upscale {self.scale:g}"
        parts = [f"{size} with {self.upscaler}"]
        steps = f"{self.steps} step{'s' if self.steps != 1 else ''}"
        parts.append(steps if self.steps else "the first pass's steps")
        parts.append(f"denoising {self.denoise:g}")
        if self.sampler:
            parts.append(f"sampler {self.sampler} {self.schedule}".rstrip())
        if self.guidance_scale is not None:
            parts.append(f"CFG {self.guidance_scale:g}")
        if self.prompt:
            parts.append(f"prompt {self.prompt!r}")
        if self.negative_prompt:
            parts.append(f"negative prompt {self.negative_prompt!r}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> HiresFix:
        """Rebuild from :meth:`to_dict` output (unknown keys ignored)."""
        if not isinstance(data, dict):
            raise InvalidRequest("The hires fix settings must be a JSON object.")
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as error:
            raise InvalidRequest(f"Unusable hires fix settings: {error}.") from None
