"""Text encoders kept as single safetensors files (ComfyUI's ``models/text_encoders``
and ``models/clip``): CLIP-L, CLIP-G, T5-XXL, Qwen3 and Qwen2.5-VL, in bf16, fp16 or fp8.

A file is recognised from its header alone (:func:`identify_text_encoder`) and loaded
into the transformers class a pipeline wants (:func:`load_text_encoder`) with the
config its shapes imply (:mod:`.text_encoder_configs`). The model is built on the meta
device and each tensor is read once, converted to the wanted dtype and assigned, so
loading needs about the model's size in memory, not twice that. fp8 weights of linear
layers (with or without ComfyUI's scales) stay fp8 and are computed in the wanted dtype
layer by layer (:mod:`.fp8_storage`); other fp8 weights, or all of them when asked,
are dequantized to the wanted dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import ModelError
from sdstudio.engine.parts.text_encoder_configs import (
    EncoderLayout,
    LayoutError,
    Shapes,
    clip_config,
    find_layouts,
    is_side_tensor,
    qwen3_config,
    qwen25_vl_config,
    t5_config,
    t5_embedding,
)

MODEL_KINDS = {
    "CLIPTextModel": "clip",
    "CLIPTextModelWithProjection": "clip",
    "T5EncoderModel": "t5",
    "Qwen3Model": "qwen3",
    "Qwen3ForCausalLM": "qwen3",
    "Qwen2_5_VLForConditionalGeneration": "qwen2.5-vl",
}
"""The transformers classes :func:`load_text_encoder` builds, and the kind each needs."""

KIND_NAMES = {"clip": "CLIP", "t5": "T5", "qwen3": "Qwen3", "qwen2.5-vl": "Qwen2.5-VL"}
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
FP8_DTYPES = {"F8_E4M3", "F8_E5M2"}
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

_CLIP_SIZES = {768: "CLIP-L", 1024: "CLIP-H", 1280: "CLIP-G"}
_T5_SIZES = {4096: "T5-XXL", 2048: "T5-XL", 1024: "T5-Large"}
_QWEN3_SIZES = {1024: "0.6B", 2048: "1.7B", 2560: "4B", 4096: "8B", 5120: "14B"}
_QWEN25_SIZES = {2048: "3B", 3584: "7B", 5120: "32B", 8192: "72B"}


@dataclass(frozen=True, slots=True)
class TextEncoderFile:
    """What a text-encoder file holds, as its header tells it."""

    kind: str
    """``clip``, ``t5``, ``qwen3`` or ``qwen2.5-vl``."""
    label: str
    """For users: ``CLIP-L``, ``T5-XXL fp8``, ``Qwen3 4B``, ``CLIP (width 32)`` ..."""
    width: int
    """The hidden size: CLIP-L 768, CLIP-G 1280, T5-XXL 4096, Qwen3 4B 2560 ..."""
    layers: int
    quantization: str = ""
    """``""`` or ``"fp8"``."""


def identify_text_encoder(
    shapes: Shapes, *, dtypes: Mapping[str, str] | None = None
) -> TextEncoderFile | None:
    """What text encoder a file is, from its tensor names and shapes alone.

    None when the file is no text encoder, holds several (ComfyUI's SD3 files with
    all three) or holds more than one (a whole checkpoint). ``dtypes`` (safetensors
    dtype names such as ``"F8_E4M3"``) tell fp8 files without scales from others;
    without them only scaled fp8 files are labelled fp8.
    """
    layouts = [layout for layout in find_layouts(shapes) if layout.kind]
    if len(layouts) != 1:
        return None
    layout = layouts[0]
    if any(name not in layout.claimed() and not is_side_tensor(name) for name in shapes):
        return None
    return describe_layout(layout, shapes, dtypes)


def find_text_encoders(
    shapes: Shapes, *, dtypes: Mapping[str, str] | None = None
) -> list[tuple[str, TextEncoderFile]]:
    """Every text encoder in a file, each with the prefix its tensor names carry
    (``text_encoders.clip_l.transformer.`` ...) for :func:`load_text_encoder`'s ``prefix``."""
    found = []
    for layout in find_layouts(shapes):
        if layout.kind and (info := describe_layout(layout, shapes, dtypes)) is not None:
            found.append((layout.prefix, info))
    return found


def describe_layout(
    layout: EncoderLayout, shapes: Shapes, dtypes: Mapping[str, str] | None = None
) -> TextEncoderFile | None:
    """The :class:`TextEncoderFile` of one encoder found in a file; None if its
    tensors are too incomplete to tell its size."""
    canonical = layout.shapes(shapes)
    try:
        if layout.kind == "clip":
            config = clip_config(canonical)
            width, layers = config.hidden_size, config.num_hidden_layers
            name = _CLIP_SIZES.get(width, f"CLIP (width {width})")
        elif layout.kind == "t5":
            width = t5_embedding(canonical)[1]
            layers = t5_config(canonical).num_layers
            name = _T5_SIZES.get(width, f"T5 (width {width})")
        elif layout.kind == "qwen3":
            config = qwen3_config(canonical)
            width, layers = config.hidden_size, config.num_hidden_layers
            size = _QWEN3_SIZES.get(width)
            name = f"Qwen3 {size}" if size else f"Qwen3 (width {width})"
        else:
            text = qwen25_vl_config(canonical).text_config
            width, layers = text.hidden_size, text.num_hidden_layers
            size = _QWEN25_SIZES.get(width)
            name = f"Qwen2.5-VL {size}" if size else f"Qwen2.5-VL (width {width})"
    except LayoutError:
        return None
    fp8 = _is_fp8(layout, shapes, dtypes)
    return TextEncoderFile(
        layout.kind, name + (" fp8" if fp8 else ""), width, layers, "fp8" if fp8 else ""
    )


def _is_fp8(layout: EncoderLayout, shapes: Shapes, dtypes: Mapping[str, str] | None) -> bool:
    if dtypes is not None and any(dtypes.get(name) in FP8_DTYPES for name in layout.names.values()):
        return True
    scaled = (".scale_weight", ".weight_scale")
    return any(
        name == "scaled_fp8" or name.endswith(".scaled_fp8") or name.endswith(scaled)
        for name in shapes
        if name == "scaled_fp8" or name.startswith(layout.prefix)
    )


def inspect_text_encoder(path: Path) -> TextEncoderFile | None:
    """:func:`identify_text_encoder` for a file, with fp8 told from the header's dtypes.

    Raises :class:`ModelError` when the file cannot be read.
    """
    _, shapes, dtypes = read_header(path)
    return identify_text_encoder(shapes, dtypes=dtypes)


def read_header(path: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]], dict[str, str]]:
    """A safetensors file's header, tensor shapes and dtypes, checked against its size.

    Raises :class:`ModelError` for a pickle file, a truncated or damaged file, or one
    that cannot be read.
    """
    from sdstudio.engine.models.layouts import header_shapes, read_safetensors_layout

    try:
        with path.open("rb") as file:
            start = file.read(4)
        if path.suffix.lower() in PICKLE_SUFFIXES or start.startswith((b"PK\x03\x04", b"\x80")):
            raise ModelError(
                f"{path.name} is a pickle file, which can run code when loaded; sdstudio "
                "loads text encoders only from .safetensors files. Download the .safetensors "
                "version of this text encoder."
            )
        header, data_size = read_safetensors_layout(path)
        shapes = header_shapes(header, data_size)
    except OSError as error:
        raise ModelError(f"{path.name} cannot be read: {error.strerror or error}.") from None
    except ValueError as error:
        if "truncated" in str(error):
            raise ModelError(
                f"{path.name} is truncated: it is shorter than its header says, probably an "
                "unfinished download. Download it again."
            ) from None
        raise ModelError(f"{path.name} is not a text encoder: {error}.") from None
    dtypes = {
        name: str(entry.get("dtype", ""))
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict)
    }
    return header, shapes, dtypes


def load_text_encoder(
    path: Path,
    model_class: str,
    *,
    dtype: Any,
    prefix: str | None = None,
    fp8_storage: bool | None = None,
) -> Any:
    """A transformers text encoder of class ``model_class`` from a safetensors file.

    ``model_class`` is a key of :data:`MODEL_KINDS`. The config comes from the file's
    shapes; the model is in eval mode, on the CPU, computing in ``dtype``. ``prefix``
    picks one encoder of a file that holds several (see :func:`find_text_encoders`).
    fp8 linear weights stay fp8 unless ``fp8_storage`` is False (None means
    :func:`~.fp8_storage.fp8_storage_default`). Raises
    :class:`ModelError` when the file is not that kind of encoder, is truncated, lacks
    weights, holds weights the model does not have, or is a pickle.
    """
    from sdstudio.engine.parts.text_encoder_loading import build_model, read_weights

    kind = MODEL_KINDS.get(model_class)
    if kind is None:
        raise ModelError(
            f"sdstudio cannot build text encoders of class {model_class}; "
            f"it builds {', '.join(MODEL_KINDS)}."
        )
    header, shapes, dtypes = read_header(path)
    layout = choose_layout(path, header, shapes, kind, prefix)
    unsupported = sorted(
        {dtypes[name] for name in layout.names.values() if dtypes.get(name)}
        - FLOAT_DTYPES
        - FP8_DTYPES
    )
    if unsupported:
        raise ModelError(
            f"{path.name} stores weights as {', '.join(unsupported)}, a packed quantized "
            "format sdstudio cannot load. Use the bf16, fp16 or fp8 version of this text encoder."
        )
    model, sources = build_model(path, model_class, layout.shapes(shapes))
    if fp8_storage is None and any(dtypes.get(n) in FP8_DTYPES for n in layout.names.values()):
        from sdstudio.engine.parts.fp8_storage import fp8_storage_default

        fp8_storage = fp8_storage_default()
    read_weights(path, model, sources, layout, shapes, dtypes, dtype, fp8_storage=bool(fp8_storage))
    return model


def choose_layout(
    path: Path, header: Mapping[str, Any], shapes: Shapes, kind: str, prefix: str | None
) -> EncoderLayout:
    """The encoder of ``kind`` (with ``prefix``, when given) in a file, or a
    :class:`ModelError` saying what the file is instead."""
    layouts = find_layouts(shapes)
    matching = [layout for layout in layouts if layout.kind == kind]
    if prefix is not None:
        matching = [layout for layout in matching if layout.prefix == prefix]
    if len(matching) == 1:
        return matching[0]
    wanted = KIND_NAMES[kind]
    if len(matching) > 1:
        prefixes = ", ".join(repr(layout.prefix) for layout in matching)
        raise ModelError(
            f"{path.name} holds several {wanted} text encoders (under {prefixes}); "
            "say which one to load."
        )
    where = f" under {prefix!r}" if prefix is not None else ""
    raise ModelError(
        f"{path.name} is not a {wanted} text encoder{where}: it is {describe_file(header, shapes)}."
    )


def describe_file(header: Mapping[str, Any], shapes: Shapes) -> str:
    """What a file that is not the wanted text encoder looks like, for messages."""
    from sdstudio.engine.models.layouts import kind_from_header

    encoders = []
    for layout in find_layouts(shapes):
        info = describe_layout(layout, shapes) if layout.kind else None
        if info is not None:
            encoders.append(f"a {info.label} text encoder")
        elif not layout.kind:
            width = layout.shapes(shapes).get("model.embed_tokens.weight", (0, 0))[1]
            encoders.append(f"a language model sdstudio does not use (width {width})")
    if encoders:
        return " and ".join(dict.fromkeys(encoders))
    kind = kind_from_header(dict(header), "")
    if kind == "lora":
        return "a LoRA, which is applied to a model rather than loaded as one"
    if kind == "vae":
        return "a VAE"
    if kind == "embedding":
        return "a textual-inversion embedding"
    names = [name for name in shapes if not is_side_tensor(name)]
    if any(name.startswith("model.diffusion_model.") for name in names):
        return "a model checkpoint without a text encoder of this kind"
    if not names:
        return "empty"
    return f"a file of {len(names)} tensors sdstudio does not know, such as {', '.join(names[:3])}"
