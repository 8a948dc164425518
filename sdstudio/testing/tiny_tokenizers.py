"""Small, valid tokenizers built offline for the tiny random pipelines.

- T5: a SentencePiece-style Unigram model over printable ASCII characters and
  a few word pieces, with T5's ``<pad>``, ``</s>`` and ``<unk>`` (ids 0, 1, 2).
  Characters outside the vocabulary become ``<unk>``, as with the real T5.
- Qwen2 (used by Qwen-Image, Z-Image and FLUX.2 klein): a byte-level BPE
  over the 256 byte characters of GPT-2's table, so it tokenizes any Unicode
  text, with Qwen's pre-tokenizer, its special tokens and a chat template.
  Merges make each word of Qwen-Image's prompt template one token, so that
  the template's first 34 tokens (which the pipeline drops) are exactly its
  system part, as with the real tokenizer.

Each writer saves ``tokenizer.json``, ``tokenizer_config.json`` and
``special_tokens_map.json``; the CLIP tokenizer lives in
:mod:`sdstudio.testing.vocab`.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

from sdstudio.testing.vocab import byte_to_unicode

T5_MAX_LENGTH = 512

_T5_WORDS = ["a", "the", "of", "and", "in", "on", "with", "photo", "cat", "dog", "red", "blue"]

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Added as tokens but not special: chat templates write them as text.
QWEN_THINK_TOKENS = ["<think>", "</think>"]

QWEN_MAX_LENGTH = 131072

# Whole words of Qwen-Image's prompt template (the pipeline drops its first 34
# tokens); a leading "Ġ" is the byte-level form of a space.
_QWEN_WORDS = [
    "system",
    "user",
    "assistant",
    "Describe",
    "Ġthe",
    "Ġimage",
    "Ġby",
    "Ġdetailing",
    "Ġcolor",
    "Ġshape",
    "Ġsize",
    "Ġtexture",
    "Ġquantity",
    "Ġtext",
    "Ġspatial",
    "Ġrelationships",
    "Ġof",
    "Ġobjects",
    "Ġand",
    "Ġbackground",
]

# The pre-tokenizer of Qwen2 tokenizers.
_QWEN_PRETOKENIZE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen3's chat format for system, user and assistant messages without tools: for these
# it renders what Qwen3's own template renders, including the empty think block it writes
# when a caller passes enable_thinking=False (FLUX.2 klein) and nothing when thinking stays
# on (Z-Image). The shipped tokenizer (tools/qwen_tokenizer.py) carries the same text.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

# Qwen2.5-VL's chat format (text only), with its default system message.
QWEN25_VL_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)


def write_tiny_t5_tokenizer(directory: str | Path, *, max_length: int = T5_MAX_LENGTH) -> Path:
    """Write a tiny T5 (Unigram) tokenizer that ``T5TokenizerFast`` loads."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    characters = [c for c in string.printable if not c.isspace()]
    pieces += [(c, -5.0) for c in characters]
    pieces += [("▁" + c, -4.5) for c in string.ascii_letters + string.digits]
    pieces += [("▁" + word, -3.0) for word in _T5_WORDS]
    tokenizer = Tokenizer(Unigram(pieces, unk_id=2, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(" {2,}", " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"],
        pair=["$A", "</s>", "$B", "</s>"],
        special_tokens=[("</s>", 1)],
    )
    _add_special(tokenizer, ["<pad>", "</s>", "<unk>"])
    tokenizer.save(str(directory / "tokenizer.json"))
    special = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    config: dict[str, Any] = {
        "tokenizer_class": "T5Tokenizer",
        "model_max_length": max_length,
        "extra_ids": 0,
        "additional_special_tokens": [],
        "clean_up_tokenization_spaces": True,
        **special,
    }
    _write_configs(directory, config, special)
    return directory


def qwen_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Return the (vocab, merges) of the tiny byte-level BPE, before added tokens."""
    tokens = list(byte_to_unicode().values())
    merges: list[tuple[str, str]] = []
    known = set(tokens)
    for word in _QWEN_WORDS:
        # Merge left to right: "Ġthe" is ("Ġ", "t"), ("Ġt", "h"), ("Ġth", "e").
        left = word[0]
        for character in word[1:]:
            merged = left + character
            if merged not in known:
                merges.append((left, character))
                tokens.append(merged)
                known.add(merged)
            left = merged
    return {token: index for index, token in enumerate(tokens)}, merges


def write_tiny_qwen_tokenizer(
    directory: str | Path,
    *,
    chat_template: str = QWEN3_CHAT_TEMPLATE,
    eos_token: str = "<|im_end|>",
) -> Path:
    """Write a tiny Qwen2 (byte-level BPE) tokenizer that ``Qwen2TokenizerFast`` loads."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = qwen_vocabulary()
    tokenizer = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_PRETOKENIZE), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    _add_special(tokenizer, QWEN_SPECIAL_TOKENS)
    from tokenizers import AddedToken

    tokenizer.add_tokens(
        [AddedToken(t, special=False, normalized=False) for t in QWEN_THINK_TOKENS]
    )
    tokenizer.save(str(directory / "tokenizer.json"))
    special = {"eos_token": eos_token, "pad_token": "<|endoftext|>"}
    config: dict[str, Any] = {
        "tokenizer_class": "Qwen2Tokenizer",
        "model_max_length": QWEN_MAX_LENGTH,
        "bos_token": None,
        "unk_token": None,
        "errors": "replace",
        "add_prefix_space": False,
        "split_special_tokens": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": chat_template,
        **special,
    }
    _write_configs(directory, config, special)
    return directory


def _add_special(tokenizer: Any, tokens: list[str]) -> None:
    from tokenizers import AddedToken

    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens])


def _write_configs(directory: Path, config: dict[str, Any], special: dict[str, str]) -> None:
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2), "utf-8")
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2), "utf-8")
