"""Variation seeds, "Seed resize from" and the styles applied, under AUTOMATIC1111's names.

A1111 writes ``Variation seed`` and ``Variation seed strength`` only when the strength
is not 0, and ``Seed resize from: WxH`` only when both sides are set
(``processing.py``, ``create_infotext``). Styles: A1111 and Forge write no key for them
(their text is already in the prompts; pasting finds the styles again by their text);
``Styles array`` is the name A1111's paste gives the list it finds, and sdstudio writes
the names under it, as JSON (``Styles array: "[\\"a\\", \\"b\\"]"`` once quoted), so that
the record says where the prompt's text came from. A1111 shows the key as an unknown one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sdstudio.engine.metadata.inpaint_names import InpaintSettings
from sdstudio.engine.metadata.values import as_float, as_int
from sdstudio.engine.request import MAX_SEED, MAX_SIZE, MIN_SIZE, GenerationRequest

STYLES = "Styles array"
KEYS = frozenset({"variation seed", "variation seed strength", "seed resize from", "styles array"})
"""The keys read (case-folded)."""


def settings_written(request: GenerationRequest) -> list[tuple[str, object]]:
    """The ``parameters`` entries of the request's variation, seed resize and styles
    (none when they are off)."""
    settings: list[tuple[str, object]] = []
    if request.variation_strength > 0:
        settings += [
            ("Variation seed", request.variation_seed),
            ("Variation seed strength", f"{request.variation_strength:g}"),
        ]
    width, height = request.seed_resize_from
    if width > 0 and height > 0:
        settings.append(("Seed resize from", f"{width}x{height}"))
    if request.styles:
        settings.append((STYLES, json.dumps(list(request.styles), ensure_ascii=False)))
    return settings


@dataclass(frozen=True, slots=True)
class VariationSettings(InpaintSettings):
    """What a ``parameters`` text says of these settings (read and applied as the
    inpainting settings are)."""

    @property
    def used(self) -> frozenset[str]:
        """The keys whose values go into the request."""
        return KEYS - self.unusable


def read(settings: Mapping[str, str]) -> VariationSettings:
    """Read the settings from A1111 entries keyed by case-folded name."""
    values: dict[str, object] = {}
    unusable: set[str] = set()
    notes: list[str] = []

    def refuse(key: str) -> None:
        unusable.add(key)
        notes.append(f"{key.capitalize()} {settings[key]!r} is unusable; it is kept as written.")

    strength = as_float(settings.get("variation seed strength"))
    if "variation seed strength" in settings:
        if strength is None or not 0 <= strength <= 1:
            refuse("variation seed strength")
        else:
            values["variation_strength"] = strength
    if "variation seed" in settings:
        seed = as_int(settings["variation seed"])
        if seed is None or not 0 <= seed <= MAX_SEED:
            refuse("variation seed")
        else:
            values["variation_seed"] = seed
    if "seed resize from" in settings:
        size = _size(settings["seed resize from"])
        if size is None:
            refuse("seed resize from")
        elif size != (0, 0):
            values["seed_resize_from"] = size
    if STYLES.casefold() in settings:
        names = _names(settings[STYLES.casefold()])
        if names is None:
            refuse(STYLES.casefold())
        else:
            values["styles"] = names
    return VariationSettings(values, frozenset(unusable), tuple(notes))


def _size(text: str) -> tuple[int, int] | None:
    """``WxH`` as a seed resize size; (0, 0) for A1111's "off" (-1 or 0 sides)."""
    match = re.fullmatch(r"\s*(-?\d+)\s*x\s*(-?\d+)\s*", text)
    if not match:
        return None
    width, height = int(match.group(1)), int(match.group(2))
    if width <= 0 or height <= 0:
        return (0, 0)
    if all(MIN_SIZE <= v <= MAX_SIZE and v % 8 == 0 for v in (width, height)):
        return (width, height)
    return None


def _names(text: str) -> tuple[str, ...] | None:
    """A JSON list of style names (a bare name is one style)."""
    try:
        value = json.loads(text)
    except ValueError:
        value = text.strip()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        return tuple(value)
    return None
