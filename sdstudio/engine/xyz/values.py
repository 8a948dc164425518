"""The value syntax of an X/Y/Z plot axis, as AUTOMATIC1111's "X/Y/Z plot" reads it.

Values are a comma-separated list; a value holding a comma is quoted (``"a, b", c``).
Number axes also take ranges, each expanded where it stands in the list:

- ``1-5``: every whole number from 1 to 5 (both ends included);
- ``1-9 (+2)``: from 1 to 9 in steps of 2 (``10-1 (-3)`` counts down);
- ``1-10 [4]``: 4 values spread evenly from 1 to 10 (whole numbers are truncated,
  as A1111 does: 1, 4, 7, 10);
- the same with decimals on decimal axes: ``0.5-1.5 (+0.25)``, ``0-1 [5]``.

Written by hand: A1111's reader is tied to its web UI (and to numpy); this one is a
few regular expressions, with clear errors and a limit on how far a range expands.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable

from sdstudio.engine.errors import InvalidRequest

_INT = r"[+-]?\s*\d+"
_UNSIGNED_FLOAT = r"(?:\d+(?:\.\d*)?|\.\d+)"
_FLOAT = rf"[+-]?\s*{_UNSIGNED_FLOAT}"
_INT_STEP = re.compile(rf"\s*({_INT})\s*-\s*({_INT})\s*(?:\(\s*([+-]\s*\d+)\s*\))?\s*")
_INT_COUNT = re.compile(rf"\s*({_INT})\s*-\s*({_INT})\s*\[\s*(\d+)\s*\]\s*")
_FLOAT_STEP = re.compile(
    rf"\s*({_FLOAT})\s*-\s*({_FLOAT})\s*(?:\(\s*([+-]\s*{_UNSIGNED_FLOAT})\s*\))?\s*"
)
_FLOAT_COUNT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})\s*\[\s*(\d+)\s*\]\s*")
_SIZE = re.compile(r"\s*(\d+)\s*[x×X*]\s*(\d+)\s*")


def split_values(text: str) -> list[str]:
    """The comma-separated values of ``text``, stripped, quotes honoured; empty ones dropped
    at the ends only (``"1,2,"`` is 1 and 2)."""
    try:
        rows = list(csv.reader(text.splitlines() or [""], skipinitialspace=True))
    except csv.Error as error:
        raise InvalidRequest(f"Could not read the values {text!r}: {error}.") from None
    values = [value.strip() for row in rows for value in row]
    while values and not values[-1]:
        values.pop()
    return values


def _number(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _int_range(value: str, limit: int) -> list[int] | None:
    if match := _INT_COUNT.fullmatch(value):
        start, end, count = int(_number(match[1])), int(_number(match[2])), int(match[3])
        return [int(v) for v in _spread(start, end, count, limit, value)]
    if match := _INT_STEP.fullmatch(value):
        start, end = int(_number(match[1])), int(_number(match[2]))
        step = int(_number(match[3])) if match[3] else 1
        if step == 0:
            raise InvalidRequest(f"The range {value!r} has a step of 0.")
        if (end - start) * step < 0:
            raise InvalidRequest(
                f"The range {value!r} never reaches {end}: its step goes the other way."
            )
        count = (end - start) // step + 1
        _check_count(count, limit, value)
        return [start + i * step for i in range(count)]
    return None


def _float_range(value: str, limit: int) -> list[float] | None:
    if match := _FLOAT_COUNT.fullmatch(value):
        start, end, count = float(_number(match[1])), float(_number(match[2])), int(match[3])
        return _spread(start, end, count, limit, value)
    if match := _FLOAT_STEP.fullmatch(value):
        start, end = float(_number(match[1])), float(_number(match[2]))
        step = float(_number(match[3])) if match[3] else 1.0
        if step == 0:
            raise InvalidRequest(f"The range {value!r} has a step of 0.")
        if (end - start) * step < 0:
            raise InvalidRequest(
                f"The range {value!r} never reaches {end:g}: its step goes the other way."
            )
        count = math.floor((end - start) / step + 1e-9) + 1
        _check_count(count, limit, value)
        return [round(start + i * step, 10) for i in range(count)]
    return None


def _spread(start: float, end: float, count: int, limit: int, value: str) -> list[float]:
    if count < 1:
        raise InvalidRequest(f"The range {value!r} asks for no values.")
    _check_count(count, limit, value)
    if count == 1:
        return [start]
    return [round(start + (end - start) * i / (count - 1), 10) for i in range(count)]


def _check_count(count: int, limit: int, value: str) -> None:
    if count > limit:
        raise InvalidRequest(
            f"The range {value!r} makes {count:,} values; an axis takes at most {limit}."
        )


def int_values(text: str, what: str, limit: int) -> list[int]:
    """Whole numbers and whole-number ranges."""
    values: list[int] = []
    for item in split_values(text):
        expanded = _int_range(item, limit)
        if expanded is None:
            try:
                expanded = [int(_number(item))]
            except ValueError:
                raise InvalidRequest(f"{what}: {item!r} is not a whole number.") from None
        values += expanded
    return values


def float_values(text: str, what: str, limit: int) -> list[float]:
    """Numbers and number ranges."""
    values: list[float] = []
    for item in split_values(text):
        expanded = _float_range(item, limit)
        if expanded is None:
            try:
                number = float(_number(item))
            except ValueError:
                raise InvalidRequest(f"{what}: {item!r} is not a number.") from None
            if not math.isfinite(number):
                raise InvalidRequest(f"{what}: {item!r} is not a number.")
            expanded = [number]
        values += expanded
    return values


def size_values(text: str, what: str, limit: int) -> list[tuple[int, int]]:
    """Sizes written ``WIDTHxHEIGHT`` (``512x768``)."""
    values = []
    for item in split_values(text):
        match = _SIZE.fullmatch(item)
        if match is None:
            raise InvalidRequest(f"{what}: {item!r} is not a size such as 512x768.")
        values.append((int(match[1]), int(match[2])))
    return values


def text_values(text: str, what: str, limit: int) -> list[str]:
    """Texts as they are (quoted where they hold a comma)."""
    return split_values(text)


ValueReader = Callable[[str, str, int], list]
