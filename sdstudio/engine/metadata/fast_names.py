"""A fast mode in the ``parameters`` text, under sdstudio's own keys.

A1111 and Forge write nothing standard for step caches or token merging, so sdstudio
writes ``Fast mode`` with the method and one key for each of its parameters::

    Fast mode: deep-cache, Fast interval: 3, Fast branch: 0, Fast layer: 0
    Fast mode: first-block-cache, Fast threshold: 0.05
    Fast mode: token-merging, Fast ratio: 0.5
    Fast mode: taylorseer-cache, Fast interval: 3, Fast warmup: 3, Fast order: 1

Read back, they give the request's ``fast`` part, so a re-run computes the same pixels.
DeepCache without ``Fast layer`` (written before layers could be chosen) caches whole
blocks, as it did then.
Other tools show them as unknown keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata.values import Parsed, as_float, as_int
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.speed.fast_mode import FastMode

MODE = "Fast mode"
_PARAMETERS = ("threshold", "interval", "branch", "layer", "ratio", "warmup", "order")
KEYS = frozenset({MODE.casefold(), *(f"fast {name}" for name in _PARAMETERS)})
"""The keys read (case-folded)."""


def settings_written(request: GenerationRequest) -> list[tuple[str, object]]:
    """The ``parameters`` entries of the request's fast mode (none without one)."""
    fast = request.fast
    if fast is None:
        return []
    settings: list[tuple[str, object]] = [(MODE, fast.method)]
    for name, value in fast.values().items():
        settings.append((f"Fast {name}", f"{value:g}"))
    return settings


@dataclass(frozen=True, slots=True)
class FastSettings:
    """What a ``parameters`` text says of the fast mode."""

    fast: FastMode | None = None
    note: str = ""
    """Why the written mode could not be used (then its keys are kept as extras)."""

    @property
    def used(self) -> frozenset[str]:
        """The keys whose values go into the request."""
        return KEYS if self.fast is not None else frozenset()

    def apply(self, parsed: Parsed) -> Parsed:
        """``parsed`` with the fast mode in its request and ``read`` fields."""
        if self.fast is not None:
            return dataclasses.replace(
                parsed,
                request=parsed.request.replace(fast=self.fast),
                read=parsed.read | {"fast"},
            )
        if self.note:
            return dataclasses.replace(parsed, notes=(*parsed.notes, self.note))
        return parsed


def read(settings: Mapping[str, str]) -> FastSettings:
    """Read the fast mode from entries keyed by case-folded name."""
    method = settings.get(MODE.casefold(), "").strip()
    if not method:
        return FastSettings()
    values: dict[str, object] = {}
    for name in _PARAMETERS:
        written = settings.get(f"fast {name}")
        if written is None:
            continue
        whole = name in ("interval", "branch", "layer", "warmup", "order")
        value = as_int(written) if whole else as_float(written)
        if value is None:
            return FastSettings(
                note=f"Fast {name} {written!r} is unusable; the image's fast "
                f"mode is kept as written and not used."
            )
        values[name] = value
    try:
        return FastSettings(FastMode(method, **values))  # type: ignore[arg-type]
    except InvalidRequest as error:
        return FastSettings(note=f"{error} The fast mode is kept as written and not used.")
