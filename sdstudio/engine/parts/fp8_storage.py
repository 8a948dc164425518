"""fp8 weights kept in fp8 in memory and computed in the compute dtype, layer by layer.

A transformer or text encoder file whose linear weights are stored as float8
(``float8_e4m3fn`` or ``float8_e5m2``, plain, or with ComfyUI's ``scale_weight`` per
matrix or per row) is loaded with those weights exactly as the file has them. Each such
``nn.Linear`` gets a hook, in diffusers' hook registry, that casts its weight to the
compute dtype for the length of its forward pass, times its scale computed in float32
and rounded once: the very weight a load that dequantizes the whole file would hold. So
the output is bit-identical to the upcast model's, and those weights take half the
memory (bfloat16, float16) or a quarter (float32). Norms, biases, embeddings,
convolutions and every other tensor are loaded in the compute dtype.

diffusers' own layerwise casting (``apply_layerwise_casting``) is not used: it casts
whole modules to the storage dtype, biases included, which would round the file's
bf16 biases to fp8, and it leaves out layers by name (``norm``, ``proj_out``: Flux.1's
modulation linears, 3.2 of its 11.9 billion linear weights) where the file's values
are fp8 anyway. The hooks carry diffusers' hook name for it, so ``ModelMixin.dtype`` reports the
compute dtype, and each such layer has a ``compute_dtype`` attribute, which PEFT reads
to make LoRA weights in the compute dtype rather than in fp8. Two modules read a
linear's weight dtype to cast their input (T5's feed-forward reads ``wo``, Z-Image's
timestep embedder its first linear): while they run, that linear is seen through a
stand-in whose ``weight`` reports the compute dtype, so their input is not rounded to
fp8.

When it is used: by default wherever float8 tensors can be placed, that is everywhere
but a Mac whose GPU (MPS) cannot hold them (:func:`fp8_storage_default`); loaders take
``fp8_storage=False`` to upcast instead. Measured on a 2-core AVX512-BF16 CPU (torch
2.13), the cast costs 2.5 to 5 ns per weight and forward pass. Time per pass of the
linear layers of one block at the released widths, batch 1:

=====================================  =========  ========  =========
linear layers of                       dtype      upcast    fp8 kept
=====================================  =========  ========  =========
a Flux.1 single block, 512 px          bfloat16   0.44 s    0.77 s
a Flux.1 single block, 512 px          float32    1.91 s    2.27 s
a Flux.1 single block, 1024 px         bfloat16   1.31 s    1.79 s
a Flux.1 single block, 1024 px         float32    5.51 s    6.09 s
a T5-XXL layer, 512 tokens             bfloat16   0.24 s    0.69 s
a T5-XXL layer, 512 tokens             float32    1.15 s    1.66 s
=====================================  =========  ========  =========

So on this CPU a Flux.1 step takes 1.1 to 1.8 times as long and a T5-XXL prompt
encoding (once per image) about 3 times, while Flux.1 dev's transformer needs 12 GB
instead of 24 GB (bfloat16) or 48 GB (float32), and T5-XXL 5 GB instead of 9.5 or 19.
float32 is no reason to upcast: it is where fp8 storage costs least time (its matrix
products are slower) and saves most memory. On a CPU, memory decides whether a model
runs at all. On a GPU the cast is an element-wise kernel run at memory speed (not
measured here).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from diffusers.hooks import HookRegistry, ModelHook

log = logging.getLogger(__name__)

FP8_DTYPES = frozenset({torch.float8_e4m3fn, torch.float8_e5m2})
SCALE = "fp8_scale"
"""The buffer holding a kept linear's scale (float32, one value or one per row)."""
HOOK = "layerwise_casting"
"""diffusers' hook name for weights stored in one dtype and computed in another."""
DTYPE_READERS = {"T5DenseActDense": "wo", "T5DenseGatedActDense": "wo", "TimestepEmbedder": "mlp.0"}
"""Modules (by class name) whose forward casts its input to the dtype of a linear's
weight, and the path of that linear."""


@functools.cache
def fp8_storage_default() -> bool:
    """Whether fp8 weights stay fp8 when the caller does not say: everywhere float8
    tensors can be placed, so not on a Mac whose GPU (MPS) cannot hold them."""
    backend = getattr(torch.backends, "mps", None)
    if backend is None or not backend.is_available():
        return True
    try:
        torch.empty(1, dtype=torch.float8_e4m3fn, device="mps")
    except (TypeError, RuntimeError):
        return False
    return True


def is_fp8(tensor: Any) -> bool:
    """Whether ``tensor`` is a float8 tensor."""
    return isinstance(tensor, torch.Tensor) and tensor.dtype in FP8_DTYPES


def upcast(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``weight`` in ``dtype``; with a ``scale`` (float32, shape ``()`` or ``(rows, 1)``)
    the product is taken in float32 and rounded once, as a dequantizing load does."""
    if scale is None:
        return weight.to(dtype)
    return (weight.to(torch.float32) * scale).to(dtype)


def row_scale(scale: torch.Tensor, weight_shape: tuple[int, ...]) -> torch.Tensor | None:
    """A file's scale for a weight of ``weight_shape`` as :func:`upcast` takes it (float32,
    ``()`` for one value, ``(rows, 1, ...)`` for one per row); None when it fits neither."""
    scale = scale.to(torch.float32)
    if scale.numel() == 1:
        return scale.reshape(())
    if len(weight_shape) >= 2 and scale.numel() == weight_shape[0]:
        return scale.reshape((-1,) + (1,) * (len(weight_shape) - 1))
    return None


def keep_fp8(
    model: torch.nn.Module,
    compute_dtype: torch.dtype,
    scales: Mapping[str, torch.Tensor] | None = None,
) -> int:
    """Compute every ``nn.Linear`` of ``model`` whose weight is fp8 in ``compute_dtype``,
    its weight staying fp8; returns how many there are.

    ``scales`` holds, by weight name (``blocks.0.attn.to_q.weight``), the scales of
    scaled fp8 weights as :func:`row_scale` gives them. Raises ``ValueError`` for a
    scale of a weight that is not a kept linear's or that fits its rows in no way.
    """
    scales = dict(scales or {})
    kept: dict[str, torch.nn.Linear] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and is_fp8(module.weight):
            kept[name] = module
    for name, module in kept.items():
        scale = scales.pop(f"{name}.weight" if name else "weight", None)
        if scale is not None:
            if scale.numel() not in (1, module.out_features):
                raise ValueError(f"the scale of {name} has {scale.numel()} values")
            module.register_buffer(SCALE, row_scale(scale, tuple(module.weight.shape)), False)
        module.compute_dtype = compute_dtype  # type: ignore[assignment]  # read by PEFT
        hook = _Fp8Linear(module.weight.dtype, compute_dtype)
        HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, HOOK)
    if scales:
        stray = next(iter(scales))
        raise ValueError(f"{len(scales)} scales belong to no fp8 linear layer, such as {stray}")
    for module in model.modules():
        path = DTYPE_READERS.get(type(module).__name__)
        if path is None:
            continue
        try:
            target = module.get_submodule(path)
        except AttributeError:
            continue
        if any(target is linear for linear in kept.values()):
            view = _ComputeDtypeView(path, compute_dtype)
            HookRegistry.check_if_exists_or_initialize(module).register_hook(view, "fp8_dtype_view")
    return len(kept)


def follow_rows(
    convert: Callable[[dict[str, Any]], dict[str, Any]],
    tensors: Mapping[str, torch.Tensor],
    scales: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor] | None:
    """The ``scales`` of some of ``tensors`` (by name; one value, or one per row) under
    the names a layout conversion ``convert`` gives the tensors, following their rows
    through the splits and joins it makes: one value (shape ``()``) where all rows of a
    converted tensor share it, else one per row (shape ``(rows,)``). None when some
    scaled rows cannot be followed (the conversion mixed them with unscaled rows or
    moved values across rows).

    The conversion runs on one float32 column per tensor (each row's scale, NaN where
    there is none), so it takes a few bytes per row.
    """
    columns: dict[str, Any] = {}
    for name, tensor in tensors.items():
        rows = tensor.shape[0] if tensor.dim() else 1
        column = torch.full((rows,), float("nan"))
        scale = scales.get(name)
        if scale is not None:
            column[:] = scale.reshape(-1).to(torch.float32)
        shape = (rows, 1) if tensor.dim() >= 2 else tuple(tensor.shape)
        columns[name] = column.reshape(shape)
    followed: dict[str, torch.Tensor] = {}
    for name, column in convert(columns).items():
        if column.dim() >= 2 and column.shape[1:].numel() != 1:
            return None
        values = column.reshape(-1)
        found = ~torch.isnan(values)
        if not bool(found.any()):
            continue
        if not bool(found.all()) or column.dim() < 2:
            return None
        same = bool((values == values[0]).all())
        followed[name] = values[0].clone() if same else values.clone()
    return followed


class _Fp8Linear(ModelHook):
    """Computes an ``nn.Linear`` with its fp8 weight cast to the compute dtype (times its
    scale) for this pass only."""

    def __init__(self, storage_dtype: torch.dtype, compute_dtype: torch.dtype) -> None:
        super().__init__()
        self.storage_dtype = storage_dtype
        self.compute_dtype = compute_dtype

    def new_forward(self, module: torch.nn.Linear, input: torch.Tensor, *_: Any) -> torch.Tensor:
        weight = upcast(module.weight, getattr(module, SCALE, None), self.compute_dtype)
        return torch.nn.functional.linear(input, weight, module.bias)


class _ComputeDtypeView(ModelHook):
    """While its module runs, the linear at ``path`` is seen through a
    :class:`_DtypeStandIn` that reports the compute dtype."""

    def __init__(self, path: str, compute_dtype: torch.dtype) -> None:
        super().__init__()
        self.path = path
        self.compute_dtype = compute_dtype

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        parent_path, _, name = self.path.rpartition(".")
        parent = module.get_submodule(parent_path) if parent_path else module
        real = parent._modules[name]
        assert real is not None
        parent._modules[name] = _DtypeStandIn(real, self.compute_dtype)
        try:
            forward = cast(Callable[..., Any], self.fn_ref.original_forward)
            return forward(*args, **kwargs)
        finally:
            parent._modules[name] = real


class _DtypeStandIn(torch.nn.Module):
    """Calls ``target``; its ``weight`` is an empty tensor of the compute dtype."""

    target: torch.nn.Module

    def __init__(self, target: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        object.__setattr__(self, "target", target)
        self.weight = torch.empty(0, dtype=dtype, device="meta")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.target(*args, **kwargs)
