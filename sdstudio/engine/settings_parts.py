"""What the optional parts of a request (hires fix, refiner, detailer, upscale) share:
their JSON form and the checks of their values, with messages that name the part."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from sdstudio.engine.errors import InvalidRequest

T = TypeVar("T")


def part_to_dict(part: object) -> dict[str, Any]:
    """A JSON-ready dict of a settings dataclass."""
    return dataclasses.asdict(part)  # type: ignore[call-overload]


def part_from_dict(cls: type[T], data: object, label: str) -> T:
    """Rebuild ``cls`` from :func:`part_to_dict` output (unknown keys ignored)."""
    if not isinstance(data, dict):
        raise InvalidRequest(f"The {label} settings must be a JSON object.")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError as error:
        raise InvalidRequest(f"Unusable {label} settings: {error}.") from None


def check(ok: bool, message: str) -> None:
    """Raise :class:`InvalidRequest` with ``message`` unless ``ok``."""
    if not ok:
        raise InvalidRequest(message)


def check_text(part: object, label: str, *names: str) -> None:
    """Each named field is text."""
    for name in names:
        check(
            isinstance(getattr(part, name), str), f"{label} {name.replace('_', ' ')} must be text."
        )


def check_whole(part: object, label: str, name: str, low: int, high: int) -> None:
    """A field is a whole number from ``low`` to ``high``."""
    value = getattr(part, name)
    shown = name.replace("_", " ")
    check(
        isinstance(value, int) and not isinstance(value, bool),
        f"{label} {shown} must be a whole number, not {value!r:.40}.",
    )
    check(low <= value <= high, f"{label} {shown} must be between {low} and {high}, not {value}.")


def check_number(part: object, label: str, name: str, low: float, high: float) -> None:
    """A field is a number from ``low`` to ``high``; it is stored as a float."""
    value = getattr(part, name)
    shown = name.replace("_", " ")
    check(
        isinstance(value, int | float) and not isinstance(value, bool),
        f"{label} {shown} must be a number, not {value!r:.40}.",
    )
    check(
        low <= value <= high, f"{label} {shown} must be between {low:g} and {high:g}, not {value}."
    )
    object.__setattr__(part, name, float(value))
