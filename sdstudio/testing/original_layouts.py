"""Diffusers state dicts of the flow families' transformers written in their original
layouts (Black Forest Labs', Stability AI's, Tongyi's): the inverse of diffusers'
converters, with q, k and v fused back and the final norm's shift and scale swapped
back. Written independently of the loader, so a loader that reads these back into the
same model proves both directions."""

from __future__ import annotations

import torch


def to_original_layout(family: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers state dict of ``family`` in the family's original layout."""
    if family == "qwen-image":
        return dict(tensors)
    convert = {
        "flux1": _flux1,
        "chroma": _chroma,
        "sd3": _sd3,
        "zimage": _zimage,
        "flux2-klein": _flux2,
    }[family]
    return convert(dict(tensors))


def _swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first])


def _fuse(
    t: dict[str, torch.Tensor], out: dict[str, torch.Tensor], keys: list[str], to: str
) -> None:
    for kind in ("weight", "bias"):
        parts = [t.pop(f"{key}.{kind}") for key in keys if f"{key}.{kind}" in t]
        if parts:
            out[f"{to}.{kind}"] = torch.cat(parts)


def _move(t: dict[str, torch.Tensor], out: dict[str, torch.Tensor], old: str, new: str) -> None:
    for kind in ("weight", "bias"):
        if f"{old}.{kind}" in t:
            out[f"{new}.{kind}"] = t.pop(f"{old}.{kind}")


def _blocks(t: dict[str, torch.Tensor], prefix: str) -> int:
    return len({key.split(".")[1] for key in t if key.startswith(prefix)})


def _flux1(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for old, new in (
        ("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer"),
        ("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer"),
        ("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
        ("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer"),
        ("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
        ("time_text_embed.text_embedder.linear_2", "vector_in.out_layer"),
        ("context_embedder", "txt_in"),
        ("x_embedder", "img_in"),
        ("proj_out", "final_layer.linear"),
    ):
        _move(t, out, old, new)
    for i in range(_blocks(t, "transformer_blocks.")):
        _double_block(
            t, out, f"transformer_blocks.{i}.", f"double_blocks.{i}.", "net.0.proj", "net.2"
        )
        _move(t, out, f"transformer_blocks.{i}.norm1.linear", f"double_blocks.{i}.img_mod.lin")
        _move(
            t, out, f"transformer_blocks.{i}.norm1_context.linear", f"double_blocks.{i}.txt_mod.lin"
        )
    for i in range(_blocks(t, "single_transformer_blocks.")):
        old, new = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        parts = [f"{old}attn.to_q", f"{old}attn.to_k", f"{old}attn.to_v", f"{old}proj_mlp"]
        _fuse(t, out, parts, f"{new}linear1")
        _move(t, out, f"{old}proj_out", f"{new}linear2")
        _move(t, out, f"{old}norm.linear", f"{new}modulation.lin")
        out[f"{new}norm.query_norm.scale"] = t.pop(f"{old}attn.norm_q.weight")
        out[f"{new}norm.key_norm.scale"] = t.pop(f"{old}attn.norm_k.weight")
    for kind in ("weight", "bias"):
        if f"norm_out.linear.{kind}" in t:  # Chroma's final norm has no weights
            out[f"final_layer.adaLN_modulation.1.{kind}"] = _swap_halves(
                t.pop(f"norm_out.linear.{kind}")
            )
    assert not t, f"unconverted keys: {sorted(t)}"
    return out


def _chroma(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Flux.1's layout without modulation weights, plus the modulation network under
    ``distilled_guidance_layer.`` (``in_layer``/``out_layer`` linears, ``scale`` norms)."""
    network: dict[str, torch.Tensor] = {}
    for key in [k for k in t if k.startswith("distilled_guidance_layer.")]:
        name = key.replace(".linear_1.", ".in_layer.").replace(".linear_2.", ".out_layer.")
        if ".norms." in name:
            name = name.removesuffix(".weight") + ".scale"
        network[name] = t.pop(key)
    return {**network, **_flux1(t)}


def _double_block(
    t: dict[str, torch.Tensor],
    out: dict[str, torch.Tensor],
    old: str,
    new: str,
    mlp_in: str,
    mlp_out: str,
) -> None:
    """The attention and MLP parts of a Flux.1 or Flux.2 double block."""
    _fuse(t, out, [f"{old}attn.to_q", f"{old}attn.to_k", f"{old}attn.to_v"], f"{new}img_attn.qkv")
    _fuse(
        t,
        out,
        [f"{old}attn.add_q_proj", f"{old}attn.add_k_proj", f"{old}attn.add_v_proj"],
        f"{new}txt_attn.qkv",
    )
    for norm, name in (
        ("norm_q", "img_attn.norm.query_norm"),
        ("norm_k", "img_attn.norm.key_norm"),
    ):
        out[f"{new}{name}.scale"] = t.pop(f"{old}attn.{norm}.weight")
    for norm, name in (
        ("norm_added_q", "txt_attn.norm.query_norm"),
        ("norm_added_k", "txt_attn.norm.key_norm"),
    ):
        out[f"{new}{name}.scale"] = t.pop(f"{old}attn.{norm}.weight")
    _move(t, out, f"{old}attn.to_out.0", f"{new}img_attn.proj")
    _move(t, out, f"{old}attn.to_add_out", f"{new}txt_attn.proj")
    for stream, ff in (("img", "ff"), ("txt", "ff_context")):
        _move(t, out, f"{old}{ff}.{mlp_in}", f"{new}{stream}_mlp.0")
        _move(t, out, f"{old}{ff}.{mlp_out}", f"{new}{stream}_mlp.2")


def _flux2(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for old, new in (
        ("x_embedder", "img_in"),
        ("context_embedder", "txt_in"),
        ("time_guidance_embed.timestep_embedder.linear_1", "time_in.in_layer"),
        ("time_guidance_embed.timestep_embedder.linear_2", "time_in.out_layer"),
        ("time_guidance_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
        ("time_guidance_embed.guidance_embedder.linear_2", "guidance_in.out_layer"),
        ("double_stream_modulation_img.linear", "double_stream_modulation_img.lin"),
        ("double_stream_modulation_txt.linear", "double_stream_modulation_txt.lin"),
        ("single_stream_modulation.linear", "single_stream_modulation.lin"),
        ("proj_out", "final_layer.linear"),
    ):
        _move(t, out, old, new)
    for i in range(_blocks(t, "transformer_blocks.")):
        _double_block(
            t, out, f"transformer_blocks.{i}.", f"double_blocks.{i}.", "linear_in", "linear_out"
        )
    for i in range(_blocks(t, "single_transformer_blocks.")):
        old, new = f"single_transformer_blocks.{i}.attn.", f"single_blocks.{i}."
        _move(t, out, f"{old}to_qkv_mlp_proj", f"{new}linear1")
        _move(t, out, f"{old}to_out", f"{new}linear2")
        out[f"{new}norm.query_norm.scale"] = t.pop(f"{old}norm_q.weight")
        out[f"{new}norm.key_norm.scale"] = t.pop(f"{old}norm_k.weight")
    out["final_layer.adaLN_modulation.1.weight"] = _swap_halves(t.pop("norm_out.linear.weight"))
    assert not t, f"unconverted keys: {sorted(t)}"
    return out


def _sd3(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {"pos_embed": t.pop("pos_embed.pos_embed")}
    for old, new in (
        ("pos_embed.proj", "x_embedder.proj"),
        ("time_text_embed.timestep_embedder.linear_1", "t_embedder.mlp.0"),
        ("time_text_embed.timestep_embedder.linear_2", "t_embedder.mlp.2"),
        ("time_text_embed.text_embedder.linear_1", "y_embedder.mlp.0"),
        ("time_text_embed.text_embedder.linear_2", "y_embedder.mlp.2"),
        ("context_embedder", "context_embedder"),
        ("proj_out", "final_layer.linear"),
    ):
        _move(t, out, old, new)
    layers = _blocks(t, "transformer_blocks.")
    for i in range(layers):
        old, x, c = (
            f"transformer_blocks.{i}.",
            f"joint_blocks.{i}.x_block.",
            f"joint_blocks.{i}.context_block.",
        )
        _fuse(t, out, [f"{old}attn.to_q", f"{old}attn.to_k", f"{old}attn.to_v"], f"{x}attn.qkv")
        _fuse(
            t,
            out,
            [f"{old}attn.add_q_proj", f"{old}attn.add_k_proj", f"{old}attn.add_v_proj"],
            f"{c}attn.qkv",
        )
        _fuse(t, out, [f"{old}attn2.to_q", f"{old}attn2.to_k", f"{old}attn2.to_v"], f"{x}attn2.qkv")
        for attn, block in (("attn", x), ("attn2", x)):
            for norm in ("q", "k"):
                if f"{old}{attn}.norm_{norm}.weight" in t:
                    out[f"{block}{attn}.ln_{norm}.weight"] = t.pop(
                        f"{old}{attn}.norm_{norm}.weight"
                    )
        for norm in ("q", "k"):
            if f"{old}attn.norm_added_{norm}.weight" in t:
                out[f"{c}attn.ln_{norm}.weight"] = t.pop(f"{old}attn.norm_added_{norm}.weight")
        _move(t, out, f"{old}attn.to_out.0", f"{x}attn.proj")
        _move(t, out, f"{old}attn2.to_out.0", f"{x}attn2.proj")
        _move(t, out, f"{old}attn.to_add_out", f"{c}attn.proj")
        _move(t, out, f"{old}norm1.linear", f"{x}adaLN_modulation.1")
        for kind in ("weight", "bias"):
            value = t.pop(f"{old}norm1_context.linear.{kind}")
            out[f"{c}adaLN_modulation.1.{kind}"] = _swap_halves(value) if i == layers - 1 else value
        for ff, block in (("ff", x), ("ff_context", c)):
            _move(t, out, f"{old}{ff}.net.0.proj", f"{block}mlp.fc1")
            _move(t, out, f"{old}{ff}.net.2", f"{block}mlp.fc2")
    for kind in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{kind}"] = _swap_halves(
            t.pop(f"norm_out.linear.{kind}")
        )
    assert not t, f"unconverted keys: {sorted(t)}"
    return out


def _zimage(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key in list(t):
        if not key.endswith(".attention.to_q.weight"):
            continue
        block = key.removesuffix("to_q.weight")
        parts = [t.pop(f"{block}to_{name}.weight") for name in ("q", "k", "v")]
        out[f"{block}qkv.weight"] = torch.cat(parts)
    renames = (
        ("all_x_embedder.2-1.", "x_embedder."),
        ("all_final_layer.2-1.", "final_layer."),
        (".attention.to_out.0.", ".attention.out."),
        (".attention.norm_q.", ".attention.q_norm."),
        (".attention.norm_k.", ".attention.k_norm."),
    )
    for key, value in t.items():
        for old, new in renames:
            key = key.replace(old, new)
        out[key] = value
    return out
