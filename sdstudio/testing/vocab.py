"""A small, valid byte-level BPE vocabulary for the CLIP tokenizer.

It holds the 256 byte characters of GPT-2's byte-to-unicode table, their
end-of-word forms, a few merges and CLIP's special tokens, so it tokenizes any
Unicode text while staying a few kilobytes.
"""

from __future__ import annotations

import json
from pathlib import Path

_MERGES = [
    ("t", "h"),
    ("th", "e</w>"),
    ("a", "n"),
    ("an", "d</w>"),
    ("o", "r"),
    ("i", "n"),
    ("e", "r</w>"),
    ("a", "t</w>"),
]


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible mapping of bytes to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, codes, strict=True)}


def tiny_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Return the (vocab, merges) of the tiny tokenizer."""
    characters = list(byte_to_unicode().values())
    tokens = characters + [c + "</w>" for c in characters]
    tokens += ["".join(pair) for pair in _MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, list(_MERGES)


def write_tiny_clip_tokenizer(directory: str | Path) -> Path:
    """Write vocab.json, merges.txt and the configs a CLIPTokenizer needs."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = tiny_vocabulary()
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), "utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", "utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2), "utf-8")
    special = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2), "utf-8")
    return directory
