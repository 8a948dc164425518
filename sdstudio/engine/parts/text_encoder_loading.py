"""Building a text encoder on the meta device and filling it from a safetensors file.

The model's parameters start on the meta device (no memory); buffers it computes
itself (rotary frequencies, position ids) are built on the CPU. Each weight is read
from the file once, converted to the wanted dtype (fp8 ones scaled back first) and
assigned in place of its meta parameter, so the peak is the loaded model plus one
tensor being converted. fp8 weights of linear layers may instead stay fp8, computed
in the wanted dtype layer by layer (:mod:`.fp8_storage`). Weights a model ties (T5's
``shared`` and ``encoder.embed_tokens``, a language model's ``lm_head`` and token
embedding) share one tensor when the file has only one of them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import ModelError
from sdstudio.engine.parts.text_encoder_configs import (
    EncoderLayout,
    LayoutError,
    Shapes,
    clip_config,
    qwen3_config,
    qwen25_vl_config,
    t5_config,
)

log = logging.getLogger(__name__)

IDENTITY = "<identity>"
"""The source of a CLIP projection the file lacks: an identity matrix, as ComfyUI uses."""

FP8_DTYPES = {"F8_E4M3", "F8_E5M2"}
DEQUANTIZE_CHUNK = 1 << 24
"""Elements of an fp8 tensor scaled at once (64 MB in float32)."""

_DROPPABLE = {"CLIPTextModel": {"text_projection.weight"}, "Qwen3Model": {"lm_head.weight"}}
"""Tensors a file may hold that the class does not use."""

_STAND_INS = {
    "shared.weight": "encoder.embed_tokens.weight",
    "encoder.embed_tokens.weight": "shared.weight",
}


def canonical_name(model_class: str, key: str) -> str:
    """The canonical name (see :mod:`.text_encoder_configs`) of a model's state-dict key.

    Covers both transformers 4 and 5 namings (``CLIPTextModel`` without ``text_model.``,
    Qwen2.5-VL's ``model.language_model.`` and ``model.visual.``).
    """
    if model_class == "CLIPTextModel":
        return key if key.startswith("text_model.") else "text_model." + key
    if model_class == "Qwen3Model":
        return "model." + key
    if model_class == "Qwen2_5_VLForConditionalGeneration":
        if key.startswith(("model.language_model.", "model.visual.", "lm_head.")):
            return key
        if key.startswith("visual."):
            return "model." + key
        if key.startswith("model."):
            return "model.language_model." + key.removeprefix("model.")
    return key


def model_config(model_class: str, shapes: Mapping[str, tuple[int, ...]]) -> Any:
    """The transformers config of ``model_class`` for canonical shapes."""
    if model_class.startswith("CLIP"):
        return clip_config(shapes)
    if model_class == "T5EncoderModel":
        return t5_config(shapes)
    if model_class.startswith("Qwen3"):
        return qwen3_config(shapes)
    return qwen25_vl_config(shapes)


def build_model(
    path: Path, model_class: str, shapes: Mapping[str, tuple[int, ...]]
) -> tuple[Any, dict[str, str]]:
    """An empty ``model_class`` for the canonical ``shapes`` and, for each of its
    parameters, the canonical tensor (or :data:`IDENTITY`) that fills it.

    Raises :class:`ModelError` when the file lacks weights, holds weights the model
    does not have, or holds them in other shapes.
    """
    import transformers
    from accelerate import init_empty_weights

    try:
        config = model_config(model_class, shapes)
    except LayoutError as error:
        raise ModelError(
            f"{path.name} is an incomplete or unusual text encoder: {error}. "
            "Download the file again or use another one."
        ) from None
    with init_empty_weights(include_buffers=False):
        model = getattr(transformers, model_class)(config)
    parameters = dict(model.named_parameters(remove_duplicate=False))
    sources: dict[str, str] = {}
    missing = []
    for key in parameters:
        canonical = canonical_name(model_class, key)
        source = _source(model_class, canonical, shapes)
        if source is None:
            missing.append(canonical)
        else:
            sources[key] = source
    if missing:
        raise ModelError(
            f"{path.name} lacks {len(missing)} of the {len(parameters)} weights its "
            f"text encoder needs, such as {', '.join(missing[:3])}; the file is incomplete "
            "or of another model."
        )
    wanted = {canonical_name(model_class, key) for key in parameters}
    extra = [name for name in shapes if name not in wanted | _DROPPABLE.get(model_class, set())]
    if extra:
        raise ModelError(
            f"{path.name} holds {len(extra)} tensors a {model_class} does not have, such as "
            f"{', '.join(extra[:3])}; it is not a standard text encoder of its kind."
        )
    wrong = [
        f"{source} is {list(shapes[source])}, not {list(parameters[key].shape)}"
        for key, source in sources.items()
        if source != IDENTITY and tuple(shapes[source]) != tuple(parameters[key].shape)
    ]
    if wrong:
        raise ModelError(
            f"{path.name} has weights of unexpected shapes ({'; '.join(wrong[:3])}); "
            "it is damaged or of a model sdstudio does not know."
        )
    return model, sources


def _source(model_class: str, canonical: str, shapes: Mapping[str, Any]) -> str | None:
    if canonical in shapes:
        if canonical == "encoder.embed_tokens.weight" and "shared.weight" in shapes:
            return "shared.weight"  # tied in T5: read once
        return canonical
    stand_in = _STAND_INS.get(canonical)
    if stand_in is None and canonical == "lm_head.weight":
        stand_in = next((n for n in shapes if n.endswith("embed_tokens.weight")), None)
        if stand_in is not None and model_class.startswith("Qwen2_5"):
            log.info("The file has no lm_head; it shares the token embedding instead.")
    if stand_in is None and canonical == "text_projection.weight":
        log.info("The CLIP file has no text projection; using an identity projection.")
        return IDENTITY
    return stand_in if stand_in in shapes else None


def read_weights(
    path: Path,
    model: Any,
    sources: Mapping[str, str],
    layout: EncoderLayout,
    shapes: Shapes,
    dtypes: Mapping[str, str],
    dtype: Any,
    *,
    fp8_storage: bool = False,
) -> None:
    """Fill ``model``'s meta parameters from the file, in ``dtype``, and set eval mode.

    With ``fp8_storage``, fp8 weights that fill only linear layers stay fp8 and are
    computed in ``dtype`` (times their scale, when scaled); other fp8 weights are
    dequantized to ``dtype``.
    """
    import torch
    from safetensors import SafetensorError, safe_open

    from sdstudio.engine.parts.fp8_storage import keep_fp8

    loaded: dict[str, Any] = {}
    state: dict[str, Any] = {}
    parameters = dict(model.named_parameters(remove_duplicate=False))
    kept = _linear_sources(model, sources, layout, dtypes) if fp8_storage else set()
    scales: dict[str, Any] = {}
    found: dict[str, Any] = {}
    fp8 = any(
        dtypes.get(name) in FP8_DTYPES and source not in kept
        for source, name in layout.names.items()
    )
    # One float32 buffer for scaling every fp8 tensor: temporaries of many sizes would
    # leave the allocator holding up to twice the model's memory after the load.
    scratch = torch.empty(DEQUANTIZE_CHUNK if fp8 else 0, dtype=torch.float32)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            for key, source in sources.items():
                if source not in loaded:
                    if source == IDENTITY:
                        loaded[source] = torch.eye(parameters[key].shape[0], dtype=dtype)
                    else:
                        name = layout.names[source]
                        loaded[source], found[source] = _read(
                            file, name, shapes, dtypes, dtype, scratch, keep=source in kept
                        )
                state[key] = loaded[source]
                if found.get(source) is not None:
                    scales[key] = found[source]
    except (SafetensorError, RuntimeError) as error:
        raise ModelError(f"{path.name} is damaged: {error}. Download it again.") from None
    result = model.load_state_dict(state, strict=False, assign=True)
    left = [key for key in result.missing_keys if key in parameters]
    if left or any(parameter.is_meta for parameter in model.parameters()):
        raise ModelError(f"{path.name} did not fill every weight of its text encoder: {left[:3]}.")
    if kept:
        count = keep_fp8(model, dtype, scales)
        log.info(
            "%s: %d linear layers kept in fp8%s, computed in %s.",
            path.name,
            count,
            " with their scales" if scales else "",
            str(dtype).removeprefix("torch."),
        )
    model.eval()


def _linear_sources(
    model: Any, sources: Mapping[str, str], layout: EncoderLayout, dtypes: Mapping[str, str]
) -> set[str]:
    """The fp8 tensors of the file that fill linear layers' weights only (a tensor also
    filling an embedding, as a tied output layer's does, is not among them)."""
    import torch

    linear: dict[str, bool] = {}
    for key, source in sources.items():
        if source == IDENTITY or dtypes.get(layout.names[source]) not in FP8_DTYPES:
            continue
        module_name, _, kind = key.rpartition(".")
        owner = model.get_submodule(module_name)
        fits = kind == "weight" and isinstance(owner, torch.nn.Linear)
        linear[source] = linear.get(source, True) and fits
    return {source for source, fits in linear.items() if fits}


def _read(
    file: Any,
    name: str,
    shapes: Shapes,
    dtypes: Mapping[str, str],
    dtype: Any,
    scratch: Any,
    *,
    keep: bool,
) -> tuple[Any, Any]:
    """One tensor in ``dtype``, or as stored when ``keep``, with the scale (float32) of
    a kept scaled one. An fp8 tensor not kept is scaled by its ``scale_weight`` or
    ``weight_scale`` (per tensor or per output row) when the file has one."""
    import torch

    from sdstudio.engine.parts.fp8_storage import row_scale

    tensor = file.get_tensor(name)
    if dtypes.get(name) not in FP8_DTYPES:
        return tensor.to(dtype), None
    scale = torch.ones((), dtype=torch.float32)
    base = name.removesuffix(".weight")
    for suffix in (".scale_weight", ".weight_scale"):
        if base + suffix in shapes:
            scale = file.get_tensor(base + suffix).to(torch.float32)
            break
    else:
        if keep:
            return tensor, None
    fitted = row_scale(scale, tuple(tensor.shape))
    if fitted is None:
        raise ModelError(
            f"the fp8 scale of {name} has {scale.numel()} values, which sdstudio "
            "cannot apply; use the bf16 or fp16 version of this text encoder."
        )
    if keep:
        return tensor, fitted.reshape(-1)
    rows = fitted.reshape(-1, 1) if fitted.dim() else fitted
    return _dequantize(tensor, rows, dtype, scratch), None


def _dequantize(tensor: Any, scale: Any, dtype: Any, scratch: Any) -> Any:
    """``tensor * scale`` in ``dtype``, computed in float32 a slice of rows at a time
    in ``scratch``."""
    import torch

    result = torch.empty(tensor.shape, dtype=dtype)
    rows = tensor.reshape(tensor.shape[0], -1) if tensor.dim() > 1 else tensor.reshape(-1, 1)
    out = result.view(rows.shape)
    step = max(1, scratch.numel() // rows.shape[1])
    if step * rows.shape[1] > scratch.numel():
        scratch = torch.empty(step * rows.shape[1], dtype=torch.float32)
    for start in range(0, rows.shape[0], step):
        part = rows[start : start + step]
        buffer = scratch[: part.numel()].view(part.shape)
        buffer.copy_(part)
        buffer.mul_(scale[start : start + step] if scale.dim() else scale)
        out[start : start + step].copy_(buffer)
    return result
