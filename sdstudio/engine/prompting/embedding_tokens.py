"""Multi-vector textual-inversion tokens, spelled out as the diffusers pipelines spell them."""

from __future__ import annotations

import re
from typing import Any


def expand_embedding_tokens(tokenizer: Any, text: str, *, expand: bool = True) -> str:
    """Spell out multi-vector textual-inversion tokens as the pipelines do.

    diffusers loads an embedding of *n* vectors as the tokens ``name``,
    ``name_1`` … ``name_{n-1}`` and writes all of them where the prompt says
    ``name`` (``maybe_convert_prompt``); the tokenizer alone would read only
    the first. Matching ignores case, as CLIP does. With ``expand=False`` the
    names are only written in the case they were loaded with, so that the
    pipeline's own (case-sensitive) conversion finds them.
    """
    added = getattr(tokenizer, "added_tokens_encoder", None)
    special = set(getattr(tokenizer, "all_special_tokens", []))
    if not added or all(token in special for token in added):
        return text
    for token in dict.fromkeys(tokenizer.tokenize(text)):
        if token in special or token not in added:
            continue
        replacement, index = token, 1
        while expand and f"{token}_{index}" in added:
            replacement += f" {token}_{index}"
            index += 1
        pattern = rf"(?<![\w-]){re.escape(token)}(?![\w-])"
        text = re.compile(pattern, re.IGNORECASE).sub(replacement.replace("\\", r"\\"), text)
    return text
