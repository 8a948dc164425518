"""Fuzzing the metadata parsers: hostile metadata gives "no settings", never a traceback.

Cases the fuzzer found are kept as regression tests at the end.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import read_image_settings
from sdstudio.engine.metadata.a1111 import read_parameters
from sdstudio.engine.metadata.comfyui import read_comfyui
from sdstudio.engine.metadata.exif import decode_user_comment
from sdstudio.engine.metadata.fooocus import read_fooocus
from sdstudio.engine.metadata.invokeai import read_invokeai
from sdstudio.engine.metadata.invokeai2 import read_invokeai2

# --- Fuzzing -----------------------------------------------------------------------------

KEYS = [
    "prompt", "text", "value", "seed", "noise_seed", "steps", "cfg", "sampler_name", "scheduler",
    "denoise", "model", "positive", "negative", "latent_image", "width", "height", "ckpt_name",
    "lora_name", "strength_model", "class_type", "inputs", "conditioning", "samples",
    "positive_prompt", "negative_prompt", "cfg_scale", "image", "weight", "loras", "name",
    "full_prompt", "resolution", "guidance_scale", "sampler", "base_model", "performance",
]  # fmt: skip
NODE_IDS = ["1", "2", "3", "10"]
CLASSES = ["KSampler", "KSamplerAdvanced", "KSampler (Efficient)", "CLIPTextEncode", "LoraLoader",
           "CheckpointLoaderSimple", "EmptyLatentImage", "PrimitiveString"]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(KEYS + NODE_IDS + CLASSES + ["dpmpp_2m_k", "(512, 512)", "karras"])
)
links = st.lists(st.sampled_from(NODE_IDS) | st.integers(0, 3), min_size=2, max_size=2)
json_values = st.recursive(
    scalars | links,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=6)
    ),
    max_leaves=24,
)
# Node inputs: links where ComfyUI has links, text or links for texts, anything elsewhere.
COMFY_INPUTS = {
    key: (
        links
        if key in ("model", "positive", "negative", "latent_image", "conditioning", "samples")
        else st.one_of(links, st.text(min_size=1, max_size=8))
        if key in ("text", "value", "ckpt_name", "lora_name", "sampler_name")
        else scalars
    )
    for key in [*KEYS[:19], "conditioning", "samples"]
}
graphs = st.dictionaries(
    st.sampled_from(NODE_IDS),
    st.fixed_dictionaries(
        {
            "class_type": st.sampled_from(CLASSES),
            "inputs": st.fixed_dictionaries({}, optional=COMFY_INPUTS),
        }
    )
    | json_values,
    max_size=4,
)
READERS = {
    "prompt": read_comfyui,
    "invokeai_metadata": read_invokeai,
    "sd-metadata": read_invokeai2,
    "Dream": read_invokeai2,
    "parameters": read_fooocus,
}
FUZZ = settings(max_examples=200, deadline=None)


def read_all(texts: dict[str, str]) -> None:
    """Every reader, guarded and not: only InvalidRequest may escape."""
    size = (512, 512)
    for read in (read_comfyui, read_invokeai, read_invokeai2, read_fooocus):
        with contextlib.suppress(InvalidRequest):
            read(texts, size)
        # Without the guard too: malformed input is handled on purpose, not by the safety net.
        with contextlib.suppress(InvalidRequest):
            read.__wrapped__(texts, size)  # type: ignore[attr-defined]
    with contextlib.suppress(InvalidRequest):
        read_parameters(texts.get("parameters", ""))


@FUZZ
@given(st.sampled_from(sorted(READERS)), json_values, st.booleans())
@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_fuzz_json_chunks(key: str, value: object, nest: bool) -> None:
    # InvokeAI 2.x keeps its settings one level down, under "image".
    text = json.dumps({"image": value, "model_weights": value} if nest else value)
    read_all({key: text, "fooocus_scheme": "fooocus"})


@FUZZ
@given(graphs)
@pytest.mark.slow
def test_fuzz_comfyui_graphs(graph: dict[str, Any]) -> None:
    read_all({"prompt": json.dumps(graph)})


@FUZZ
@given(st.sampled_from(sorted(READERS)), st.text(), st.sampled_from(["", "a1111", "fooocus"]))
def test_fuzz_text_chunks(key: str, value: str, scheme: str) -> None:
    read_all({key: value, "fooocus_scheme": scheme})


@FUZZ
@given(
    st.binary(max_size=64), st.sampled_from([b"", b"UNICODE\0", b"ASCII\0\0\0", b"JIS\0\0\0\0\0"])
)
def test_fuzz_user_comment(body: bytes, header: bytes) -> None:
    assert isinstance(decode_user_comment(header + body), str)


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from([*sorted(READERS), "fooocus_scheme"]),
    st.text(max_size=200) | json_values.map(json.dumps),
)
def test_fuzz_image_files(tmp_path_factory: pytest.TempPathFactory, key: str, value: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "x.png"
    info = PngInfo()
    info.add_text(key, value)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    with contextlib.suppress(InvalidRequest):
        read_image_settings(path)


# --- Regression cases found while fuzzing -------------------------------------------------


@pytest.mark.parametrize(
    "texts",
    [
        {"Dream": '"a cat -s 5'},  # shlex: No closing quotation
        {"Dream": "\\"},  # shlex: No escaped character
        {"Dream": "x -s 1 " * 5000},  # longer than any real command line (shlex is slow)
        {"invokeai_metadata": "[" * 100_000},  # json: RecursionError, not a ValueError
        {"sd-metadata": '{"a":' * 100_000},
        {"prompt": "{" * 100_000},
        {"parameters": "{" * 100_000, "fooocus_scheme": "fooocus"},
        {"prompt": json.dumps({"3": {"class_type": "KSampler", "inputs": {"positive": [[1], 0]}}})},
        {"invokeai_metadata": json.dumps({"steps": 2**80, "seed": 1e308, "cfg_scale": "inf"})},
    ],
)
def test_fuzz_regressions(texts: dict[str, str]) -> None:
    read_all(texts)


def test_long_parameters_line_is_read_in_linear_time() -> None:
    """A1111's pattern took quadratic time on a long line of words without a colon."""
    started = time.perf_counter()
    for line in ("word " * 40_000, "a" * 200_000, " " * 200_000 + "x"):
        with pytest.raises(InvalidRequest):
            read_parameters(line)
    assert time.perf_counter() - started < 5  # hours for 1 MB before; about a second now
