"""Hypernetworks in AUTOMATIC1111's ``parameters`` text.

Since its extra networks (1.0), A1111 keeps a hypernetwork's ``<hypernet:name:strength>``
tag in the prompt it writes and adds no setting for it. Before, a hypernetwork was
chosen in the settings and written as ``Hypernet: name``, ``Hypernet hash:`` (the
8-digit legacy hash of the file) and ``Hypernet strength: 0.8`` (left out at 1). A1111's
reader (``parse_generation_parameters``) turns those keys into a tag appended to the
prompt, ``<hypernet:name:strength>`` with strength 1.0 when absent; so does
:func:`prompt_read`, so an old image re-runs with the file found by name, as a LoRA is.

sdstudio writes the tags in the prompt and ``Hypernet hashes: "name: 0123456789"``
(the form of ``Lora hashes``, with the 10 hex digits of A1111's hypernetwork
``shorthash``). It never writes ``Hypernet``: A1111 would add that key's tag to a
prompt that already holds one and apply the network twice. Hash keys stay in the
record's extras as written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sdstudio.engine.metadata.values import as_float

HYPERNET = "hypernet"
STRENGTH = "hypernet strength"
KEYS = frozenset({HYPERNET, STRENGTH})
"""The keys (case-folded) read into the prompt."""
HASHES = "Hypernet hashes"


def prompt_read(prompt: str, settings: Mapping[str, str]) -> tuple[str, frozenset[str]]:
    """The prompt with the tag of an old ``Hypernet`` key appended (unless the prompt
    already names it), and the keys used; ``settings`` are keyed case-folded."""
    name = settings.get(HYPERNET, "").strip()
    if not name or name.lower() == "none":
        return prompt, frozenset()
    strength = as_float(settings.get(STRENGTH))
    written = settings.get(STRENGTH, "").strip() if strength is not None else "1.0"
    tag = re.compile(rf"<hypernet:{re.escape(name)}(:[^>]*)?>", re.IGNORECASE)
    if tag.search(prompt):
        return prompt, KEYS
    return f"{prompt}<hypernet:{name}:{written}>", KEYS
