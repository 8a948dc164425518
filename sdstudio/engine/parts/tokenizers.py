"""The tokenizers sdstudio ships for text encoders loaded from single files.

A text-encoder file holds weights only; its tokenizer comes from
``resources/model_configs``, so nothing is downloaded:

- ``clip_tokenizer``: OpenAI CLIP's BPE vocabulary, shared by CLIP-L and the
  OpenCLIP encoders (CLIP-G, CLIP-H), which pad with ``"!"`` instead of
  ``<|endoftext|>``.
- ``t5_tokenizer``: the SentencePiece vocabulary of T5 v1.1, as FLUX.1 and SD 3.x use it.
- ``qwen_tokenizer``: the byte-level BPE vocabulary Qwen2.5-VL and Qwen3 share, with
  their special tokens (written by ``tools/qwen_tokenizer.py``), Qwen3's chat format in
  ``chat_template.jinja`` and Qwen2.5-VL's in ``chat_template_qwen2_5_vl.jinja``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdstudio.engine.errors import ModelError
from sdstudio.resource_files import resource_path

CLIP_MAX_LENGTH = 77
T5_MAX_LENGTH = 512
QWEN25_VL_TEMPLATE_FILE = "chat_template_qwen2_5_vl.jinja"

KINDS = ("clip", "t5", "qwen3", "qwen2.5-vl")


def tokenizer_folder(kind: str) -> Path:
    """The shipped folder holding the tokenizer files of a text-encoder kind."""
    names = {"clip": "clip_tokenizer", "t5": "t5_tokenizer", "qwen3": "qwen_tokenizer"}
    names["qwen2.5-vl"] = "qwen_tokenizer"
    if kind not in names:
        raise ModelError(
            f"No tokenizer for text encoders of kind {kind!r}; known: {', '.join(KINDS)}."
        )
    folder = resource_path("model_configs") / names[kind]
    if not folder.is_dir():
        raise ModelError(
            f"sdstudio's {kind} tokenizer is missing from {folder}; reinstall sdstudio."
        )
    return folder


def load_tokenizer(kind: str, *, second_clip: bool = False) -> Any:
    """The shipped tokenizer for a text-encoder kind.

    ``"clip"`` gives a ``CLIPTokenizer`` (77 tokens; with ``second_clip=True`` it pads
    with ``"!"`` as OpenCLIP encoders such as SD3's and SDXL's CLIP-G do), ``"t5"`` a
    ``T5TokenizerFast`` (512 tokens), ``"qwen3"`` and ``"qwen2.5-vl"`` a Qwen2 tokenizer
    with that model's chat template (Z-Image and FLUX.2 klein call
    ``apply_chat_template``; Qwen-Image formats its prompt itself).
    """
    folder = tokenizer_folder(kind)
    try:
        if kind == "clip":
            from transformers import CLIPTokenizer

            options: dict[str, Any] = {"model_max_length": CLIP_MAX_LENGTH}
            if second_clip:
                options["pad_token"] = "!"
            return CLIPTokenizer.from_pretrained(folder, **options)
        if kind == "t5":
            import transformers

            t5_class = getattr(transformers, "T5TokenizerFast", None) or transformers.T5Tokenizer
            return t5_class.from_pretrained(folder, model_max_length=T5_MAX_LENGTH)
        return _qwen_tokenizer(folder, kind)
    except (OSError, ValueError) as error:
        raise ModelError(
            f"sdstudio's {kind} tokenizer in {folder} cannot be read ({error}); reinstall sdstudio."
        ) from error


def _qwen_tokenizer(folder: Path, kind: str) -> Any:
    import transformers

    tokenizer_class = (
        getattr(transformers, "Qwen2TokenizerFast", None) or transformers.Qwen2Tokenizer
    )
    options: dict[str, Any] = {}
    if kind == "qwen2.5-vl":
        options["chat_template"] = (folder / QWEN25_VL_TEMPLATE_FILE).read_text("utf-8")
    else:
        options["chat_template"] = (folder / "chat_template.jinja").read_text("utf-8")
    return tokenizer_class.from_pretrained(folder, **options)
