"""Text and JSON read from an image's metadata, made safe to store and show.

Text read from an image passes :func:`clean_text` (chunk texts) or
:func:`load_json` / :func:`parse_json` (JSON, whose ``\\ud800`` escapes give
lone surrogates), so every string a reader returns can be encoded as UTF-8
(SQLite, PNG text, the terminal) and holds no control characters.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from sdstudio.engine.errors import InvalidRequest

MAX_JSON_DEPTH = 64
"""Metadata JSON nests a few levels; deeper input is refused, not walked."""
# Lone UTF-16 surrogates (UTF-8 cannot encode them) and control characters other
# than tab, line feed and carriage return (NUL ends C strings and paths; ESC starts
# terminal escape sequences).
_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
REPLACEMENT = "\ufffd"
# Longer JSON integers are no real setting; Python refuses to read over 4300 digits.
_MAX_DIGITS = 30


def clean_text(value: str) -> str:
    """``value`` with what cannot be stored or shown replaced by U+FFFD.

    That is lone UTF-16 surrogates and control characters other than tab and
    line breaks.
    """
    return _UNSTORABLE.sub(REPLACEMENT, value)


def parse_json(value: str, what: str = "The metadata") -> object:
    """The JSON value in ``value`` with every string and key cleaned by :func:`clean_text`.

    Numbers too long or too large for a setting become infinite, so they read
    as unusable values. Raises :class:`InvalidRequest` (its message starting
    with ``what``) when the text is not JSON or nests deeper than :data:`MAX_JSON_DEPTH`.
    """
    try:
        data = json.loads(value, parse_int=_parse_int)
    except RecursionError:
        raise InvalidRequest(f"{what} is nested too deeply.") from None
    except (ValueError, TypeError) as error:
        raise InvalidRequest(f"{what} is not valid JSON ({error}).") from None
    return _clean_json(data, what)


def load_json(value: str | None) -> object:
    """Like :func:`parse_json`, but ``None`` for missing, invalid or too deeply nested text."""
    if not value:
        return None
    try:
        return parse_json(value)
    except InvalidRequest:
        return None


def _parse_int(digits: str) -> int | float:
    if len(digits.lstrip("-")) > _MAX_DIGITS:
        return -math.inf if digits.startswith("-") else math.inf
    return int(digits)


def _clean_json(data: object, what: str) -> object:
    """A copy of decoded JSON with cleaned strings, built without recursion."""
    if isinstance(data, str):
        return clean_text(data)
    if not isinstance(data, dict | list):
        return data
    result: dict[str, object] | list[object] = {} if isinstance(data, dict) else []
    pending: list[tuple[dict[Any, object] | list[object], dict[str, object] | list[object], int]]
    pending = [(data, result, 1)]
    while pending:
        source, target, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidRequest(f"{what} is nested too deeply.")
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, value in items:
            if isinstance(value, str):
                value = clean_text(value)
            elif isinstance(value, dict | list):
                child: dict[str, object] | list[object] = {} if isinstance(value, dict) else []
                pending.append((value, child, depth + 1))
                value = child
            if isinstance(target, dict):
                target[clean_text(str(key))] = value
            else:
                target.append(value)
    return result


def text(value: object) -> str:
    """``value`` when it is text, else ``""``."""
    return value if isinstance(value, str) else ""
