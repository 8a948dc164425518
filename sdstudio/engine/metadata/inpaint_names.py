"""The image-to-image and inpainting settings under AUTOMATIC1111's names.

A1111 writes ``Mask blur`` (when the mask is blurred), ``Inpaint area: Only masked``
with ``Masked area padding``, and Forge and extensions ``Resize mode``. What the
masked area starts from is written as ``Masked content`` with the words of
A1111's choice (``original``, ``fill``, ``latent noise``, ``latent nothing``);
``Inpainting fill`` (A1111's parameter name) and SD.Next's ``Mask content`` (its
index) are read too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from sdstudio.engine.metadata.values import Parsed, as_int
from sdstudio.engine.request import (
    MAX_MASK_BLUR,
    MAX_MASKED_PADDING,
    GenerationRequest,
    InpaintArea,
    MaskedContent,
    Mode,
    ResizeMode,
)

RESIZE_MODES = {
    ResizeMode.RESIZE: "Just resize",
    ResizeMode.CROP: "Crop and resize",
    ResizeMode.FILL: "Resize and fill",
}
MASKED_CONTENT = {
    MaskedContent.FILL: "fill",
    MaskedContent.ORIGINAL: "original",
    MaskedContent.LATENT_NOISE: "latent noise",
    MaskedContent.LATENT_NOTHING: "latent nothing",
}
"""A1111's words, in the order of its index."""
_AREAS = {"whole picture": InpaintArea.WHOLE, "only masked": InpaintArea.MASKED}
"""In the order of A1111's index (its ``inpaint_full_res``)."""
_CONTENT_KEYS = ("masked content", "inpainting fill", "mask content")
KEYS = frozenset(
    {"resize mode", "mask blur", "inpaint area", "masked area padding", *_CONTENT_KEYS}
)
"""The keys read (case-folded)."""


def settings_written(request: GenerationRequest) -> list[tuple[str, object]]:
    """The ``parameters`` entries of the request's image-to-image and inpainting settings
    (none for text-to-image; resize mode only when it is not A1111's default)."""
    settings: list[tuple[str, object]] = []
    if request.mode is Mode.TXT2IMG:
        return settings
    masked = request.mode is Mode.INPAINT and request.inpaint_area is InpaintArea.MASKED
    if request.resize_mode is not ResizeMode.RESIZE and not masked:
        settings.append(("Resize mode", RESIZE_MODES[request.resize_mode]))
    if request.mode is not Mode.INPAINT:
        return settings
    settings.append(("Mask blur", request.mask_blur))
    if masked:
        settings += [
            ("Inpaint area", "Only masked"),
            ("Masked area padding", request.masked_padding),
        ]
    settings.append(("Masked content", MASKED_CONTENT[request.masked_content]))
    return settings


@dataclass(frozen=True, slots=True)
class InpaintSettings:
    """What a ``parameters`` text says of these settings."""

    values: dict[str, object] = field(default_factory=dict)
    unusable: frozenset[str] = frozenset()
    """Keys (case-folded) whose values could not be used: kept as extras."""
    notes: tuple[str, ...] = ()

    def apply(self, parsed: Parsed) -> Parsed:
        """``parsed`` with these settings in its request and in its ``read`` fields."""
        if not self.values and not self.notes:
            return parsed
        return dataclasses.replace(
            parsed,
            request=parsed.request.replace(**self.values),
            read=parsed.read | set(self.values),
            notes=(*parsed.notes, *self.notes),
        )


def read(settings: Mapping[str, str]) -> InpaintSettings:
    """Read the settings from A1111 entries keyed by case-folded name."""
    values: dict[str, object] = {}
    unusable: set[str] = set()
    notes: list[str] = []

    def choose(key: str, choices: Mapping[str, object], name: str) -> None:
        if key not in settings:
            return
        written = settings[key].strip()
        words = {word.casefold(): value for word, value in choices.items()}
        index = as_int(written)
        ordered = list(choices.values())
        if written.casefold() in words:
            values[name] = words[written.casefold()]
        elif index is not None and 0 <= index < len(ordered):
            values[name] = ordered[index]
        else:
            unusable.add(key)
            notes.append(f"{key.capitalize()} {written!r} is unknown; it is kept as written.")

    resize = {word: mode for mode, word in RESIZE_MODES.items()}
    resize["Just resize (latent upscale)"] = ResizeMode.RESIZE
    choose("resize mode", resize, "resize_mode")
    if "resize mode" in settings and "latent upscale" in settings["resize mode"].lower():
        notes.append("Resize mode 'Just resize (latent upscale)' is read as 'Just resize'.")
    content = {word: kind for kind, word in MASKED_CONTENT.items()}
    for key in _CONTENT_KEYS:
        if key in settings and "masked_content" not in values:
            choose(key, content, "masked_content")
    areas: dict[str, object] = dict(_AREAS)
    choose("inpaint area", areas, "inpaint_area")
    for key, name, limit in (
        ("mask blur", "mask_blur", MAX_MASK_BLUR),
        ("masked area padding", "masked_padding", MAX_MASKED_PADDING),
    ):
        if key not in settings:
            continue
        number = as_int(settings[key])
        if number is None or not 0 <= number <= limit:
            unusable.add(key)
            notes.append(
                f"{key.capitalize()} {settings[key]!r} is unusable; it is kept as written."
            )
        else:
            values[name] = number
    return InpaintSettings(values, frozenset(unusable), tuple(notes))
