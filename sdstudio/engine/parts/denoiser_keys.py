"""Flux.1's and Chroma's original tensor names mapped to diffusers' names.

diffusers has these converters (``convert_flux_transformer_checkpoint_to_diffusers``,
``convert_chroma_transformer_checkpoint_to_diffusers``) but they split the single
blocks' fused projection at the released width (3072), so a file of another width, such
as a small test model, cannot go through them. These read the width from the tensors and
otherwise give the same result (tests check them against diffusers' at the released
width). They work on plain tensors and on diffusers' ``GGUFParameter`` (quantized rows
split as plain rows do).
"""

from __future__ import annotations

from typing import Any

_RENAMES = {
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "txt_in": "context_embedder",
    "img_in": "x_embedder",
    "final_layer.linear": "proj_out",
}
_DOUBLE = {
    "img_mod.lin": "norm1.linear",
    "txt_mod.lin": "norm1_context.linear",
    "img_attn.proj": "attn.to_out.0",
    "txt_attn.proj": "attn.to_add_out",
    "img_mlp.0": "ff.net.0.proj",
    "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj",
    "txt_mlp.2": "ff_context.net.2",
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight",
    "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
    "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
}
_DOUBLE_QKV = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
_SINGLE = {
    "modulation.lin": "norm.linear",
    "linear2": "proj_out",
    "norm.query_norm.scale": "attn.norm_q.weight",
    "norm.key_norm.scale": "attn.norm_k.weight",
}
_SINGLE_FUSED = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")


def flux1_to_diffusers(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A Flux.1 state dict in the original layout (no prefix) in diffusers' layout.

    Raises ``KeyError`` when a tensor the conversion needs is missing.
    """
    source = dict(checkpoint)
    out: dict[str, Any] = {}
    for kind in ("weight", "bias"):
        shift, scale = source.pop(f"final_layer.adaLN_modulation.1.{kind}").chunk(2, dim=0)
        out[f"norm_out.linear.{kind}"] = _cat([scale, shift])
    return _blocks(source, out, "Flux.1")


def chroma_to_diffusers(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A Chroma state dict in the original layout (no prefix) in diffusers' layout: Flux.1's
    blocks without modulation weights, and the network that makes the modulations.

    Raises ``KeyError`` when a tensor the conversion needs is missing.
    """
    source = dict(checkpoint)
    out: dict[str, Any] = {}
    for key in list(source):
        if key.startswith("distilled_guidance_layer."):
            out[_approximator_name(key)] = source.pop(key)
    return _blocks(source, out, "Chroma")


def _approximator_name(key: str) -> str:
    """diffusers' name of a tensor of Chroma's modulation network: its layers' in and out
    linears are ``linear_1`` and ``linear_2``, its RMS norms' ``scale`` is ``weight``."""
    key = key.replace(".in_layer.", ".linear_1.").replace(".out_layer.", ".linear_2.")
    return key.removesuffix(".scale") + ".weight" if key.endswith(".scale") else key


def _blocks(source: dict[str, Any], out: dict[str, Any], name: str) -> dict[str, Any]:
    """``out`` with the embedders, the final linear and the double and single blocks of
    ``source`` renamed (and split) into it; raises ``KeyError`` for tensors left over."""
    width = source["img_in.weight"].shape[0]
    for key in list(source):
        module, _, kind = key.rpartition(".")
        if module in _RENAMES:
            out[f"{_RENAMES[module]}.{kind}"] = source.pop(key)
    for key in list(source):
        block, _, inner = key.partition(".")
        index, _, rest = inner.partition(".")
        if block == "double_blocks" and rest:
            _double(out, f"transformer_blocks.{index}.", rest, source.pop(key))
        elif block == "single_blocks" and rest:
            _single(out, f"single_transformer_blocks.{index}.", rest, source.pop(key), width)
    if source:
        raise KeyError(f"unexpected {name} tensors such as {next(iter(source))}")
    return out


def _double(out: dict[str, Any], prefix: str, rest: str, tensor: Any) -> None:
    if rest in _DOUBLE:
        out[prefix + _DOUBLE[rest]] = tensor
        return
    module, _, kind = rest.rpartition(".")
    if module in _DOUBLE_QKV:
        for name, part in zip(_DOUBLE_QKV[module], tensor.chunk(3, dim=0), strict=True):
            out[f"{prefix}{name}.{kind}"] = part
    elif module in _DOUBLE:
        out[f"{prefix}{_DOUBLE[module]}.{kind}"] = tensor
    else:
        raise KeyError(f"double_blocks tensor {rest}")


def _single(out: dict[str, Any], prefix: str, rest: str, tensor: Any, width: int) -> None:
    if rest in _SINGLE:
        out[prefix + _SINGLE[rest]] = tensor
        return
    module, _, kind = rest.rpartition(".")
    if module == "linear1":
        sizes = (width, width, width, tensor.shape[0] - 3 * width)
        for name, part in zip(_SINGLE_FUSED, tensor.split(sizes, dim=0), strict=True):
            out[f"{prefix}{name}.{kind}"] = part
    elif module in _SINGLE:
        out[f"{prefix}{_SINGLE[module]}.{kind}"] = tensor
    else:
        raise KeyError(f"single_blocks tensor {rest}")


def _cat(parts: list[Any]) -> Any:
    import torch

    return torch.cat(parts, dim=0)
