"""Write sdstudio's shipped Qwen tokenizer from a vocabulary-only GGUF file.

Qwen2, Qwen2.5 (and Qwen2.5-VL) and Qwen3 share one byte-level BPE vocabulary
of 151,643 tokens and 151,387 merges; they differ only in the special tokens
added after it. llama.cpp keeps that vocabulary as ``models/ggml-vocab-qwen2.gguf``
(in its source tree and in the llama-cpp-python source archive on the package
index). This script turns it into the files ``Qwen2Tokenizer`` reads::

    .venv/bin/python tools/qwen_tokenizer.py path/to/ggml-vocab-qwen2.gguf

It writes ``vocab.json``, ``merges.txt``, ``tokenizer_config.json`` (the special
tokens 151643-151668 of Qwen3 and Qwen2.5-VL) and the two chat templates the
diffusers pipelines use into ``resources/model_configs/qwen_tokenizer``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sdstudio.testing.tiny_tokenizers import QWEN3_CHAT_TEMPLATE, QWEN25_VL_CHAT_TEMPLATE

BASE_VOCAB_SIZE = 151643
"""Tokens of the BPE vocabulary proper; the added tokens follow from this id."""

# The added tokens of Qwen3's tokenizer (Qwen2.5-VL's are the first 22 of them), in
# id order from 151643, with whether each is special (never split, skipped when
# decoding with skip_special_tokens).
ADDED_TOKENS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
]

MODEL_MAX_LENGTH = 131072

QWEN25_VL_TEMPLATE_FILE = "chat_template_qwen2_5_vl.jinja"


def read_gguf_vocabulary(path: Path) -> tuple[list[str], list[str]]:
    """The BPE tokens (id order) and merges of a vocabulary GGUF file."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    model = reader.fields["tokenizer.ggml.model"].contents()
    if model != "gpt2":
        raise SystemExit(f"{path} holds a {model!r} tokenizer, not a byte-level BPE one")
    tokens = list(reader.fields["tokenizer.ggml.tokens"].contents())
    types = list(reader.fields["tokenizer.ggml.token_type"].contents())
    merges = list(reader.fields["tokenizer.ggml.merges"].contents())
    normal = [token for token, kind in zip(tokens, types, strict=True) if kind == 1]
    if normal != tokens[:BASE_VOCAB_SIZE]:
        raise SystemExit(f"{path}: the first {BASE_VOCAB_SIZE} tokens are not the BPE vocabulary")
    if tokens[BASE_VOCAB_SIZE] != "<|endoftext|>":
        raise SystemExit(f"{path}: token {BASE_VOCAB_SIZE} is not <|endoftext|>")
    return normal, merges


def tokenizer_config() -> dict[str, object]:
    """``tokenizer_config.json`` of the Qwen tokenizer."""
    decoder = {
        str(BASE_VOCAB_SIZE + index): {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
        for index, (content, special) in enumerate(ADDED_TOKENS)
    }
    return {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": decoder,
        "additional_special_tokens": [c for c, special in ADDED_TOKENS[1:] if special],
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "add_prefix_space": False,
        "split_special_tokens": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MODEL_MAX_LENGTH,
    }


def write(gguf: Path, directory: Path) -> None:
    """Write the tokenizer files from ``gguf`` into ``directory``."""
    tokens, merges = read_gguf_vocabulary(gguf)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {token: index for index, token in enumerate(tokens)}
    (directory / "vocab.json").write_text(
        json.dumps(vocab, ensure_ascii=False, separators=(",", ":")), "utf-8"
    )
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", "utf-8")
    (directory / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(), indent=2) + "\n", "utf-8"
    )
    (directory / "chat_template.jinja").write_text(QWEN3_CHAT_TEMPLATE, "utf-8")
    (directory / QWEN25_VL_TEMPLATE_FILE).write_text(QWEN25_VL_CHAT_TEMPLATE, "utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path, help="ggml-vocab-qwen2.gguf")
    default = Path(__file__).resolve().parents[1] / "resources" / "model_configs" / "qwen_tokenizer"
    parser.add_argument("--out", type=Path, default=default, help=f"default: {default}")
    arguments = parser.parse_args()
    write(arguments.gguf, arguments.out)
    print(f"wrote {arguments.out}")


if __name__ == "__main__":
    main()
