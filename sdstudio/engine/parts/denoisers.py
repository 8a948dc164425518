"""Loading a lone transformer file of the flow families (Flux.1, Chroma, SD 3.x, Z-Image,
Qwen-Image, Flux.2 Klein) as a diffusers model, offline.

A ``.safetensors`` file may be in the original or diffusers layout, in bf16, fp16,
fp32 or fp8 (plain float8 weights, or ComfyUI's scaled fp8 with a ``scale_weight``
per matrix or row), and may be a full checkpoint whose transformer sits under
``model.diffusion_model.``. fp8 linear weights stay fp8 and are computed in the
requested dtype layer by layer (:mod:`.fp8_storage`), scales following their rows
through the layout conversion; other fp8 tensors, or all with ``fp8_storage=False``,
are upcast. A ``.gguf`` file (city96's) stays quantized and is computed in the
requested dtype by diffusers' GGUF support. The config comes from the
file's shapes (:mod:`.denoiser_configs`) and is handed to diffusers' ``from_single_file``
from a temporary folder, so nothing is fetched from the Hugging Face Hub.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sdstudio.engine.errors import ModelError
from sdstudio.engine.parts.denoiser_configs import (
    CLASSES,
    PREFIXES,
    Shapes,
    denoiser_config,
    family_and_layout,
    transformer_shapes,
)
from sdstudio.engine.parts.denoiser_keys import chroma_to_diffusers, flux1_to_diffusers
from sdstudio.engine.parts.denoiser_recognition import (
    DenoiserFile,
    foreign_denoiser,
    identify_denoiser,
    runnable,
)

__all__ = [
    "DenoiserFile",
    "denoiser_config",
    "foreign_denoiser",
    "identify_denoiser",
    "load_denoiser",
    "read_denoiser_file",
]

log = logging.getLogger(__name__)

_FP8 = ("F8_E4M3", "F8_E5M2")
_SCALES = (".scale_weight", ".weight_scale")
_DROPPED = (".scale_input", ".input_scale", ".comfy_quant", ".weight_scale_2")


def read_denoiser_file(path: Path) -> DenoiserFile | None:
    """What transformer a ``.safetensors`` or ``.gguf`` file holds, with its
    quantization (``"fp8"`` from a safetensors header's dtypes, ``"GGUF Q4_K"``);
    None when it holds none sdstudio runs. Raises :class:`ModelError` when the file
    cannot be read."""
    shapes, quantization, _ = _read_table(path)
    return identify_denoiser(shapes, quantization=quantization)


def load_denoiser(path: Path, *, dtype: torch.dtype, fp8_storage: bool | None = None) -> Any:
    """The diffusers transformer in ``path``: a ``.safetensors`` file in either layout or
    a ``.gguf`` file (kept quantized, computed in ``dtype``).

    fp8 linear weights stay fp8 and are computed in ``dtype`` (scaled ones times their
    scale), unless ``fp8_storage`` is False, when they are upcast to ``dtype``; None
    means :func:`~.fp8_storage.fp8_storage_default`.

    Raises :class:`ModelError` saying what is wrong and what to do: the file is no
    transformer (and what it looks like), a model sdstudio does not run, truncated or
    damaged, or missing weights.
    """
    from sdstudio.engine.parts.fp8_storage import follow_rows, fp8_storage_default

    shapes, _, kinds = _read_table(path)
    inner = transformer_shapes(shapes)
    found = family_and_layout(inner)
    if found is None or found[0] not in CLASSES:
        raise _not_runnable(path, shapes)
    family, layout = found
    config = denoiser_config(inner, family)
    if not runnable(family, config):
        raise _not_runnable(path, shapes)
    gguf = path.suffix.lower() == ".gguf"
    scales: dict[str, torch.Tensor] = {}
    if gguf:
        _check_gguf_types(path, kinds)
        tensors = _read_gguf(path)
    else:
        keep = fp8_storage_default() if fp8_storage is None else fp8_storage
        tensors, scales = _read_safetensors(path, dtype, keep=keep)
    if layout == "original":
        if scales:
            followed = follow_rows(lambda rows: _to_diffusers(path, family, rows), tensors, scales)
            if followed is None:
                log.info("%s: its fp8 scales do not follow the layout's rows; upcast.", path.name)
                tensors = {k: _scaled(path, k, v, scales.get(k), dtype) for k, v in tensors.items()}
            scales = followed or {}
        tensors = _to_diffusers(path, family, tensors)
    return _build(path, config, tensors, dtype=dtype, gguf=gguf, scales=scales)


def _read_table(path: Path) -> tuple[dict[str, tuple[int, ...]], str, set[str]]:
    """A transformer file's tensor shapes, quantization and (GGUF) tensor types, from
    its header."""
    if path.suffix.lower() == ".gguf":
        from sdstudio.engine.parts.gguf_files import layout_quantization, read_gguf_layout

        layout = read_gguf_layout(path)
        shapes = {name: tensor.shape for name, tensor in layout.tensors.items()}
        kinds = {tensor.kind for tensor in layout.tensors.values()}
        return shapes, f"GGUF {layout_quantization(layout)}", kinds
    from sdstudio.engine.models.families import read_safetensors_shapes
    from sdstudio.engine.models.layouts import read_safetensors_header

    shapes = read_safetensors_shapes(path)
    header = read_safetensors_header(path)
    prefix = _strip(list(shapes))
    matrices = [k for k, shape in shapes.items() if k.startswith(prefix) and len(shape) >= 2]
    fp8 = sum(header[key].get("dtype") in _FP8 for key in matrices)
    return shapes, "fp8" if matrices and fp8 * 2 >= len(matrices) else "", set()


def _check_gguf_types(path: Path, kinds: set[str]) -> None:
    from diffusers.quantizers.gguf.utils import SUPPORTED_GGUF_QUANT_TYPES

    readable = {kind.name for kind in SUPPORTED_GGUF_QUANT_TYPES} | {"F32", "F16"}
    unreadable = sorted(kinds - readable)
    if unreadable:
        raise ModelError(
            f"{path.name} holds tensors quantized as {', '.join(unreadable)}, which diffusers "
            "cannot compute; use a Q8_0, Q6_K, Q5_K, Q4_K or Q4_0 file of the model."
        )


def _not_runnable(path: Path, shapes: Shapes) -> ModelError:
    if not shapes:
        return ModelError(f"{path.name} holds no tensors: it is not a model.")
    looks = foreign_denoiser(shapes)
    if looks is None:
        return ModelError(
            f"{path.name} is not a transformer of a model sdstudio runs as a separate file "
            "(Flux.1, Chroma, SD 3.x, Z-Image, Qwen-Image, Flux.2 Klein)."
        )
    if looks.startswith("a "):
        return ModelError(
            f"{path.name} looks like {looks}, not a transformer: put it where that kind "
            "of file goes, and choose the model's transformer file here."
        )
    return ModelError(f"{path.name} looks like a {looks} transformer, which sdstudio cannot run.")


def _strip(keys: list[str]) -> str:
    """The prefix the transformer's tensors sit under, or ``""``."""
    return next((p for p in PREFIXES if any(k.startswith(p) for k in keys)), "")


def _read_safetensors(
    path: Path, dtype: torch.dtype, *, keep: bool
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The transformer's tensors and the scales of its scaled fp8 ones (float32, by
    tensor name). Floats other than fp8 are in ``dtype``; fp8 tensors are as stored when
    ``keep``, else upcast one at a time (times their scale), so memory peaks near the
    model's size."""
    from safetensors import SafetensorError, safe_open

    from sdstudio.engine.parts.fp8_storage import is_fp8

    tensors: dict[str, torch.Tensor] = {}
    scales: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as file:
            keys = list(file.keys())
            prefix = _strip(keys)
            names = {k[len(prefix) :]: k for k in keys if k.startswith(prefix)}
            found = {
                name.removesuffix(suffix) + ".weight": file.get_tensor(key).float()
                for name, key in names.items()
                for suffix in _SCALES
                if name.endswith(suffix)
            }
            for name, key in names.items():
                if name == "scaled_fp8" or name.endswith(_SCALES + _DROPPED):
                    continue
                tensor = _checked(path, file.get_tensor(key))
                scale = found.get(name)
                if keep and is_fp8(tensor):
                    tensors[name] = tensor
                    if scale is not None:
                        scales[name] = _fitted(path, name, scale, tensor).reshape(-1)
                else:
                    tensors[name] = _scaled(path, name, tensor, scale, dtype)
    except (SafetensorError, OSError, RuntimeError) as error:
        raise ModelError(f"{path.name} cannot be read ({error}); it may be truncated.") from None
    return tensors, scales


def _checked(path: Path, tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dtype in (torch.uint8, torch.int8) and tensor.dim() >= 2:
        raise ModelError(
            f"{path.name} stores its weights packed in 8-bit integers (such as NVFP4 or "
            "int8 quantization), which sdstudio cannot load; use its bf16, fp8 or GGUF file."
        )
    return tensor


def _fitted(path: Path, name: str, scale: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    from sdstudio.engine.parts.fp8_storage import row_scale

    fitted = row_scale(scale, tuple(tensor.shape))
    if fitted is None:
        raise ModelError(f"{path.name} has a scale for {name} that fits no known fp8 layout.")
    return fitted


def _scaled(
    path: Path, name: str, tensor: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """A tensor in ``dtype`` (integers as they are), times its fp8 scale if it has one."""
    from sdstudio.engine.parts.fp8_storage import upcast

    if not tensor.is_floating_point():
        return tensor
    return upcast(tensor, None if scale is None else _fitted(path, name, scale, tensor), dtype)


def _read_gguf(path: Path) -> dict[str, Any]:
    from diffusers.models.model_loading_utils import load_gguf_checkpoint

    try:
        tensors = load_gguf_checkpoint(str(path))
    except (ValueError, OSError, IndexError) as error:
        raise ModelError(f"{path.name} cannot be read as GGUF ({error}).") from None
    prefix = _strip(list(tensors))
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}


def _to_diffusers(path: Path, family: str, tensors: dict[str, Any]) -> dict[str, Any]:
    """An original-layout state dict in diffusers' names (diffusers' converters; Flux.1's
    and Chroma's own, as diffusers' assume the released width)."""
    from diffusers.loaders import single_file_utils as convert

    converters = {
        "flux1": flux1_to_diffusers,
        "chroma": chroma_to_diffusers,
        "sd3": convert.convert_sd3_transformer_checkpoint_to_diffusers,
        "zimage": convert.convert_z_image_transformer_checkpoint_to_diffusers,
        "flux2-klein": convert.convert_flux2_transformer_checkpoint_to_diffusers,
    }
    try:
        converted: dict[str, Any] = converters[family](checkpoint=tensors)
    except (KeyError, IndexError) as error:
        raise ModelError(
            f"{path.name} lacks some of the transformer's weights ({error}): it is "
            "incomplete or damaged; download it again."
        ) from None
    return converted


def _build(
    path: Path,
    config: dict[str, Any],
    tensors: dict[str, Any],
    *,
    dtype: torch.dtype,
    gguf: bool,
    scales: Mapping[str, torch.Tensor],
) -> Any:
    import diffusers

    from sdstudio.engine.parts.fp8_storage import is_fp8

    cls = getattr(diffusers, config["_class_name"])
    with torch.device("meta"):
        skeleton = cls.from_config(config)
    expected = skeleton.state_dict()
    missing = [key for key in expected if key not in tensors]
    if missing:
        raise ModelError(
            f"{path.name} lacks {len(missing)} of the transformer's {len(expected)} weights "
            f"(such as {missing[0]}): it is incomplete or damaged; download it again."
        )
    extra = sorted(set(tensors) - set(expected))
    if extra:
        log.debug("%s: %d tensors not used, such as %s", path.name, len(extra), extra[0])
    tensors = {key: tensors[key] for key in expected}
    _check_shapes(path, tensors, expected)
    if any(is_fp8(value) for value in tensors.values()):
        return _build_fp8(path, cls, config, skeleton, tensors, scales, dtype)
    options: dict[str, Any] = {}
    if gguf:
        tensors = _dequantize_outside_linears(skeleton, tensors, dtype)
        options["quantization_config"] = diffusers.GGUFQuantizationConfig(compute_dtype=dtype)
    with tempfile.TemporaryDirectory(prefix="sdstudio-config-") as folder:
        (Path(folder) / "transformer").mkdir()
        (Path(folder) / "transformer" / "config.json").write_text(json.dumps(config), "utf-8")
        # diffusers warns on every such load that no module is kept in float32 ("[]").
        modeling = logging.getLogger("diffusers.models.modeling_utils")
        level = modeling.level
        modeling.setLevel(logging.ERROR)
        try:
            return cls.from_single_file(
                tensors,
                config=folder,
                subfolder="transformer",
                local_files_only=True,
                torch_dtype=dtype,
                **options,
            )
        finally:
            modeling.setLevel(level)


def _build_fp8(
    path: Path,
    cls: Any,
    config: dict[str, Any],
    skeleton: Any,
    tensors: dict[str, Any],
    scales: Mapping[str, torch.Tensor],
    dtype: torch.dtype,
) -> Any:
    """The model with the fp8 weights of its linears kept fp8 (computed in ``dtype``);
    every other tensor in ``dtype``. Built as ``from_single_file`` builds it (weights
    assigned to an empty model, buffers in ``dtype``), which would upcast them all."""
    from accelerate import init_empty_weights

    from sdstudio.engine.parts.fp8_storage import is_fp8, keep_fp8

    state: dict[str, Any] = {}
    kept: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        scale = scales.get(key)
        owner = skeleton.get_submodule(key.rpartition(".")[0])
        if is_fp8(value) and key.endswith(".weight") and isinstance(owner, torch.nn.Linear):
            state[key] = value
            if scale is not None:
                kept[key] = scale
        elif is_fp8(value):
            state[key] = _scaled(path, key, value, scale, dtype)
        else:
            state[key] = value
    with init_empty_weights(include_buffers=False):
        model = cls.from_config(config)
    model.load_state_dict(state, strict=True, assign=True)
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.is_floating_point():
                module._buffers[name] = buffer.to(dtype)
    try:
        count = keep_fp8(model, dtype, kept)
    except ValueError as error:
        raise ModelError(f"{path.name} has fp8 scales sdstudio cannot apply: {error}.") from None
    stored = sum(value.numel() for value in state.values() if is_fp8(value))
    log.info(
        "%s: %d linear layers (%.2f GB) kept in fp8%s, computed in %s.",
        path.name,
        count,
        stored / 1e9,
        " with their scales" if kept else "",
        str(dtype).removeprefix("torch."),
    )
    return model.eval()


def _check_shapes(path: Path, tensors: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    for key, value in tensors.items():
        shape = tuple(getattr(value, "quant_shape", value.shape))
        if shape != tuple(expected[key].shape):
            raise ModelError(
                f"{path.name} has {key} of shape {shape} where the model its other tensors "
                f"describe has {tuple(expected[key].shape)}: the file is damaged or of an "
                "unknown variant."
            )


def _dequantize_outside_linears(
    skeleton: Any, tensors: dict[str, Any], dtype: torch.dtype
) -> dict[str, Any]:
    """GGUF tensors of modules other than linear layers (convolutions, position tables,
    pad tokens) as plain tensors: diffusers computes quantized weights in linears only."""
    from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor

    plain = dict(tensors)
    for key, value in tensors.items():
        owner = skeleton.get_submodule(key.rsplit(".", 1)[0]) if "." in key else skeleton
        if isinstance(value, GGUFParameter) and not isinstance(owner, torch.nn.Linear):
            plain[key] = dequantize_gguf_tensor(value).to(dtype)
    return plain
