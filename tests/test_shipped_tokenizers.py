"""The tokenizers shipped with the app for the flow families' text encoders: Qwen's
(converted from llama.cpp's published vocabulary) with the chat templates the
pipelines render, T5's and CLIP's."""

from __future__ import annotations

import json

import pytest

from sdstudio.engine.errors import ModelError
from sdstudio.engine.parts.tokenizers import load_tokenizer

CLIP_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]


# Token ids llama.cpp expects from the Qwen2 vocabulary (models/ggml-vocab-qwen2.gguf.out).
QWEN_EXPECTED = {
    "Hello world": [9707, 1879],
    " Hello, world!": [21927, 11, 1879, 0],
    " this is 🦙.cpp": [419, 374, 11162, 99, 247, 13, 10821],
    "нещо на Български": [78762, 14144, 1456, 13073, 63471, 33594, 3038, 133178, 79012],
    "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～": [
        9707,
        11,
        379,
        64848,
        0,
        2585,
        525,
        498,
        26525,
        223,
        937,
        104100,
        18493,
        22377,
        99257,
        16,
        18,
        16,
        19,
        16,
        20,
        16,
        35727,
        21216,
    ],
    "\n\n\n": [1406],
    "    Hello\n    Hello": [262, 21927, 198, 262, 21927],
    "Cửa Việt": [34, 90063, 128324],
}


def test_qwen_tokenizer_matches_the_released_vocabulary() -> None:
    tokenizer = load_tokenizer("qwen3")
    for text, ids in QWEN_EXPECTED.items():
        assert tokenizer(text).input_ids == ids, text
    assert len(tokenizer) == 151669
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>"]
    assert tokenizer.convert_tokens_to_ids([*special, "<think>", "</think>"]) == [
        151643,
        151644,
        151645,
        151652,
        151655,
        151667,
        151668,
    ]
    assert tokenizer("<|im_start|>user\n<think></think>").input_ids == [
        151644,
        872,
        198,
        151667,
        151668,
    ]
    assert (tokenizer.pad_token_id, tokenizer.eos_token) == (151643, "<|im_end|>")


def test_chat_templates_render_what_the_real_ones_render() -> None:
    qwen3 = load_tokenizer("qwen3")
    messages = [{"role": "user", "content": "a photo of a cat"}]
    # Z-Image: enable_thinking=True renders no think block with Qwen3's template.
    assert (
        qwen3.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=True
        )
        == "<|im_start|>user\na photo of a cat<|im_end|>\n<|im_start|>assistant\n"
    )
    # FLUX.2 klein: enable_thinking=False closes an empty think block.
    assert (
        qwen3.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
        == "<|im_start|>user\na photo of a cat<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    with_system = [{"role": "system", "content": "Be brief."}, *messages]
    assert qwen3.apply_chat_template(with_system, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\na photo of a cat<|im_end|>\n<|im_start|>assistant\n"
    )
    vl = load_tokenizer("qwen2.5-vl")
    assert vl.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\na photo of a cat<|im_end|>\n<|im_start|>assistant\n"
    )


def test_t5_and_clip_tokenizers() -> None:
    t5 = load_tokenizer("t5")
    assert t5("a photo of a cat").input_ids == [3, 9, 1202, 13, 3, 9, 1712, 1]
    assert t5.model_max_length == 512
    clip = load_tokenizer("clip")
    assert clip("a photo of a cat").input_ids == CLIP_IDS
    assert (clip.model_max_length, clip.pad_token) == (77, "<|endoftext|>")
    second = load_tokenizer("clip", second_clip=True)
    assert (second.pad_token, second.pad_token_id) == ("!", 0)
    with pytest.raises(ModelError, match="No tokenizer"):
        load_tokenizer("llama")


def test_qwen_tokenizer_resources_are_complete() -> None:
    from sdstudio.resource_files import resource_path

    folder = resource_path("model_configs") / "qwen_tokenizer"
    config = json.loads((folder / "tokenizer_config.json").read_text("utf-8"))
    assert config["tokenizer_class"] == "Qwen2Tokenizer"
    assert sorted(int(i) for i in config["added_tokens_decoder"]) == list(range(151643, 151669))
    assert len(json.loads((folder / "vocab.json").read_text("utf-8"))) == 151643
