"""The draft decode (the final image decoded by a tiny VAE) in the ``parameters`` text.

AUTOMATIC1111 and Forge have no such key (their TAESD is for previews only), so sdstudio
writes its own, ``Draft decode: TAESD`` (the tiny VAE's name: ``TAESDXL``, ``TAESD3``,
``TAEF1``), only when it is on; other tools show it as an unknown key. Reading it turns
the draft decode on again, so a re-run decodes the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sdstudio.engine.metadata.values import Parsed
from sdstudio.engine.request import GenerationRequest

KEY = "Draft decode"
KEYS = frozenset({KEY.casefold()})
"""The keys read (case-folded)."""
_OFF = frozenset({"", "false", "off", "no", "none", "0"})


def settings_written(
    request: GenerationRequest, extra: Mapping[str, Any] | None = None
) -> list[tuple[str, object]]:
    """The ``Draft decode`` entry (none when the draft decode is off); its value is the
    tiny VAE that decoded, as the record's extras name it."""
    if not request.draft_decode:
        return []
    label = (extra or {}).get("draft_decode")
    return [(KEY, label if isinstance(label, str) and label else "TAESD")]


def read(settings: Mapping[str, str], parsed: Parsed) -> Parsed:
    """``parsed`` with the draft decode of ``settings`` (A1111 entries keyed by
    case-folded name) in its request."""
    value = settings.get(KEY.casefold())
    if value is None:
        return parsed
    on = value.strip().casefold() not in _OFF
    return dataclasses.replace(
        parsed,
        request=parsed.request.replace(draft_decode=on),
        read=parsed.read | {"draft_decode"},
    )
