"""Dynamic Prompts' fields of the A1111 ``parameters`` text.

An image made from a prompt with wildcards or variants carries the prompt it was
made with as the text's prompt, and the templates as ``Template`` and ``Negative
Template``. Read back, the prompts written stay the request's prompts: they made the
image, and another tool (Dynamic Prompts in A1111) chose its wildcard lines with a
random generator of its own, so only they re-run to the same picture. The templates
are kept in the extras to show. (sdstudio's own images re-run from their record,
which keeps the template: resolved again with the image's seed it gives the same
prompts.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sdstudio.engine.prompting.per_image import resolved_of

TEMPLATE = "Template"
NEGATIVE_TEMPLATE = "Negative Template"
KEYS = frozenset({TEMPLATE.casefold(), NEGATIVE_TEMPLATE.casefold()})
"""The keys (case-folded) that go into the request's prompts."""
WRITTEN = frozenset({TEMPLATE, NEGATIVE_TEMPLATE})
"""The extras' keys of the templates an image's prompts were resolved from."""


def prompts_written(
    prompt: str, negative: str, extra: Mapping[str, Any] | None
) -> tuple[str, str, list[tuple[str, object]]]:
    """The prompts to write and the ``Template`` settings: an image resolved from
    templates (``prompt`` and ``negative``) writes the prompts it was made with."""
    resolved = resolved_of(dict(extra or {}))
    if resolved is None:
        return prompt, negative, []
    settings: list[tuple[str, object]] = [(TEMPLATE, prompt)]
    if negative:
        settings.append((NEGATIVE_TEMPLATE, negative))
    return resolved[0], resolved[1], settings


def read(
    prompt: str, negative: str, settings: Mapping[str, str]
) -> tuple[str, str, dict[str, str], tuple[str, ...]]:
    """The request's prompts (the text's own), the templates they were resolved from
    (for the extras) and a note, from the text's case-folded ``settings``."""
    extras: dict[str, str] = {}
    for key, written in ((TEMPLATE, prompt), (NEGATIVE_TEMPLATE, negative)):
        template = settings.get(key.casefold())
        if template is not None and template != written:
            extras[key] = template
    notes: tuple[str, ...] = ()
    if extras:
        notes = (
            "The image was made from wildcard templates (Dynamic Prompts' Template, kept "
            "in the extras); the prompts are those it was made with, so a re-run makes "
            "the same image.",
        )
    return prompt, negative, extras, notes
