"""The layout of a lone transformer file of the flow families and the diffusers config
its tensor shapes imply, from names and shapes alone (a safetensors header or a GGUF
tensor table); :mod:`.denoiser_recognition` names the model from them.

Files come in two layouts. The *original* one is what Black Forest Labs, Stability AI
and Tongyi publish and what ComfyUI keeps in ``models/diffusion_models``
(``double_blocks.N.img_attn.qkv``, ``joint_blocks.N.x_block``, ``layers.N.attention.qkv``),
sometimes under ``model.diffusion_model.``; city96's GGUF files use it too. The
*diffusers* one is diffusers' own (``transformer_blocks.N.attn.to_q``). Qwen-Image's
original names are diffusers' names.

Most of a config is read from shapes: block counts, widths, the text encoder's width,
the head size (from the query norm's weight), in and out channels, whether there is
a guidance embedding. What shapes cannot tell follows these rules:

- patch sizes are the released models' (1 for Flux and Chroma, 2 for SD 3, Z-Image,
  Qwen-Image);
- SD 3 files without query norms (SD 3 Medium) have as many heads as joint blocks
  (MMDiT's rule: 64-value heads, width 64 x depth), and ``sample_size`` is 128;
- rotary axes are the released models' for 128-value heads (every released model):
  Flux.1, Chroma and Qwen-Image (16, 56, 56), Z-Image (32, 48, 48), Flux.2 (32, 32, 32,
  32); other head sizes (small test models) split a head as 1/4, 3/8, 3/8 (Flux.1, Chroma),
  1/2, 1/4, 1/4 (Z-Image, Qwen-Image) or four quarters (Flux.2);
- rope bases, epsilons, Z-Image's ``axes_lens`` and ``t_scale`` are the released models'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from sdstudio.engine.errors import ModelError

Shapes = Mapping[str, Sequence[int]]

PREFIXES = ("model.diffusion_model.", "diffusion_model.")
"""Prefixes under which full checkpoints and ComfyUI keep the transformer's tensors."""

CLASSES = {
    "flux1": "FluxTransformer2DModel",
    "chroma": "ChromaTransformer2DModel",
    "sd3": "SD3Transformer2DModel",
    "zimage": "ZImageTransformer2DModel",
    "qwen-image": "QwenImageTransformer2DModel",
    "flux2-klein": "Flux2Transformer2DModel",
}
"""The diffusers transformer class of each family sdstudio runs."""

_ROPE: dict[str, tuple[tuple[int, ...], tuple[Fraction, ...]]] = {
    "flux1": ((16, 56, 56), (Fraction(1, 4), Fraction(3, 8), Fraction(3, 8))),
    "chroma": ((16, 56, 56), (Fraction(1, 4), Fraction(3, 8), Fraction(3, 8))),
    "qwen-image": ((16, 56, 56), (Fraction(1, 2), Fraction(1, 4), Fraction(1, 4))),
    "zimage": ((32, 48, 48), (Fraction(1, 2), Fraction(1, 4), Fraction(1, 4))),
    "flux2-klein": ((32, 32, 32, 32), (Fraction(1, 4),) * 4),
}
REAL_HEAD_DIM = 128


def transformer_shapes(shapes: Shapes) -> dict[str, tuple[int, ...]]:
    """The transformer's tensors, without the prefix a full checkpoint puts on them
    (other parts of such a checkpoint, its VAE and text encoders, are left out)."""
    for prefix in PREFIXES:
        inner = {k[len(prefix) :]: tuple(v) for k, v in shapes.items() if k.startswith(prefix)}
        if inner:
            return inner
    return {key: tuple(value) for key, value in shapes.items()}


def family_and_layout(shapes: Shapes) -> tuple[str, str] | None:
    """The architecture (a family id, or ``"flux2-dev"``, ``"chroma-radiance"``) and
    layout of a transformer's tensors (already out of their prefix), or None."""
    s = shapes
    if "double_stream_modulation_img.lin.weight" in s:
        return _flux2_kind(s, "guidance_in.in_layer.weight"), "original"
    if "double_stream_modulation_img.linear.weight" in s:
        return _flux2_kind(s, "time_guidance_embed.guidance_embedder.linear_1.weight"), "diffusers"
    if "distilled_guidance_layer.in_proj.weight" in s:
        if "img_in_patch.weight" in s:  # pixel space, with a NeRF-style decoder head
            return "chroma-radiance", "original"
        return "chroma", "original" if "img_in.weight" in s else "diffusers"
    if "double_blocks.0.img_attn.norm.key_norm.scale" in s and "vector_in.in_layer.weight" in s:
        return "flux1", "original"
    if "single_transformer_blocks.0.proj_mlp.weight" in s and "x_embedder.weight" in s:
        return "flux1", "diffusers"
    if "joint_blocks.0.x_block.attn.qkv.weight" in s:
        return "sd3", "original"
    if "pos_embed.proj.weight" in s and "transformer_blocks.0.norm1_context.linear.weight" in s:
        return "sd3", "diffusers"
    if "cap_embedder.1.weight" in s and "layers.0.adaLN_modulation.0.weight" in s:
        return "zimage", "diffusers" if "all_x_embedder.2-1.weight" in s else "original"
    if "txt_norm.weight" in s and "transformer_blocks.0.img_mod.1.weight" in s:
        return "qwen-image", "diffusers"
    return None


def _flux2_kind(shapes: Shapes, guidance: str) -> str:
    return "flux2-dev" if guidance in shapes else "flux2-klein"


def denoiser_config(shapes: Shapes, family: str) -> dict[str, Any]:
    """The diffusers config (``_class_name`` and the model's arguments) that a
    transformer file's shapes imply; the module's docstring lists what shapes cannot
    tell and the rules used then. Raises :class:`ModelError` when a tensor the config is
    read from is missing (a partial or damaged file)."""
    s = transformer_shapes(shapes)
    found = family_and_layout(s)
    layout = found[1] if found is not None and found[0] == family else "original"
    builders = {
        "flux1": _flux1,
        "chroma": _chroma,
        "sd3": _sd3,
        "zimage": _zimage,
        "qwen-image": _qwen_image,
        "flux2-klein": _flux2,
    }
    if family not in builders:
        raise ModelError(f"sdstudio has no transformer config for the family {family!r}.")
    return {"_class_name": CLASSES[family], **builders[family](s, layout == "original")}


def _flux1(s: Shapes, original: bool) -> dict[str, Any]:
    if original:
        vector, guidance = "vector_in.in_layer.weight", "guidance_in.in_layer.weight"
    else:
        vector = "time_text_embed.text_embedder.linear_1.weight"
        guidance = "time_text_embed.guidance_embedder.linear_1.weight"
    return {
        **_flux_blocks(s, original, "flux1"),
        "pooled_projection_dim": _shape(s, vector)[1],
        "guidance_embeds": guidance in s,
    }


def _chroma(s: Shapes, original: bool) -> dict[str, Any]:
    """Flux.1's blocks without their modulation weights, and the network that makes
    the modulations (its in and out projections keep their names in both layouts)."""
    hidden, channels = _shape(s, "distilled_guidance_layer.in_proj.weight")
    return {
        **_flux_blocks(s, original, "chroma"),
        "approximator_num_channels": channels,
        "approximator_hidden_dim": hidden,
        "approximator_layers": _count(s, "distilled_guidance_layer.layers."),
    }


def _flux_blocks(s: Shapes, original: bool, family: str) -> dict[str, Any]:
    """The config values Flux.1, Chroma and Flux.2 read alike from their double and single
    blocks."""
    if original:
        img_in, txt_in = "img_in.weight", "txt_in.weight"
        norm, final = "double_blocks.0.img_attn.norm.query_norm.scale", "final_layer.linear.weight"
        double, single = "double_blocks.", "single_blocks."
    else:
        img_in, txt_in = "x_embedder.weight", "context_embedder.weight"
        norm, final = "transformer_blocks.0.attn.norm_q.weight", "proj_out.weight"
        double, single = "transformer_blocks.", "single_transformer_blocks."
    width, in_channels = _shape(s, img_in)
    head_dim = _shape(s, norm)[0]
    out_channels = _shape(s, final)[0]
    return {
        "patch_size": 1,
        "in_channels": in_channels,
        "out_channels": None if out_channels == in_channels else out_channels,
        "num_layers": _count(s, double),
        "num_single_layers": _count(s, single),
        "attention_head_dim": head_dim,
        "num_attention_heads": _heads(width, head_dim),
        "joint_attention_dim": _shape(s, txt_in)[1],
        "axes_dims_rope": _axes(family, head_dim),
    }


def _flux2(s: Shapes, original: bool) -> dict[str, Any]:
    """Flux.2: Flux.1's blocks, with its own timestep/guidance embedding and MLP width."""
    if original:
        img_in, time_in = "img_in.weight", "time_in.in_layer.weight"
        mlp, guidance = "double_blocks.0.img_mlp.0.weight", "guidance_in.in_layer.weight"
    else:
        img_in = "x_embedder.weight"
        time_in = "time_guidance_embed.timestep_embedder.linear_1.weight"
        mlp = "transformer_blocks.0.ff.linear_in.weight"
        guidance = "time_guidance_embed.guidance_embedder.linear_1.weight"
    width = _shape(s, img_in)[0]
    return {
        **_flux_blocks(s, original, "flux2-klein"),
        "timestep_guidance_channels": _shape(s, time_in)[1],
        "mlp_ratio": _shape(s, mlp)[0] / (2 * width),
        "rope_theta": 2000,
        "eps": 1e-6,
        "guidance_embeds": guidance in s,
    }


def _sd3(s: Shapes, original: bool) -> dict[str, Any]:
    if original:
        patch, pos, context = "x_embedder.proj.weight", "pos_embed", "context_embedder.weight"
        pooled, final, blocks = (
            "y_embedder.mlp.0.weight",
            "final_layer.linear.weight",
            "joint_blocks.",
        )
        norm, dual = "joint_blocks.0.x_block.attn.ln_q.weight", ".x_block.attn2.qkv.weight"
    else:
        patch, pos, context = (
            "pos_embed.proj.weight",
            "pos_embed.pos_embed",
            "context_embedder.weight",
        )
        pooled = "time_text_embed.text_embedder.linear_1.weight"
        final, blocks = "proj_out.weight", "transformer_blocks."
        norm, dual = "transformer_blocks.0.attn.norm_q.weight", ".attn2.to_q.weight"
    width, in_channels, patch_size = _shape(s, patch)[:3]
    layers = _count(s, blocks)
    head_dim = s[norm][0] if norm in s else width // max(layers, 1)
    dual_layers = sorted(_index(k, blocks) for k in s if k.startswith(blocks) and k.endswith(dual))
    return {
        "sample_size": 128,
        "patch_size": patch_size,
        "in_channels": in_channels,
        "num_layers": layers,
        "attention_head_dim": head_dim,
        "num_attention_heads": _heads(width, head_dim),
        "joint_attention_dim": _shape(s, context)[1],
        "caption_projection_dim": _shape(s, context)[0],
        "pooled_projection_dim": _shape(s, pooled)[1],
        "out_channels": _shape(s, final)[0] // (patch_size * patch_size),
        "pos_embed_max_size": round(_shape(s, pos)[1] ** 0.5),
        "dual_attention_layers": dual_layers,
        "qk_norm": "rms_norm" if norm in s else None,
    }


def _zimage(s: Shapes, original: bool) -> dict[str, Any]:
    embedder = "x_embedder.weight" if original else "all_x_embedder.2-1.weight"
    kv = "layers.0.attention.qkv.weight" if original else "layers.0.attention.to_k.weight"
    norm = "layers.0.attention.q_norm.weight" if original else "layers.0.attention.norm_q.weight"
    width, patch_values = _shape(s, embedder)
    head_dim = _shape(s, norm)[0]
    heads = _heads(width, head_dim)
    kv_rows = _shape(s, kv)[0]
    kv_heads = (kv_rows // head_dim - heads) // 2 if original else kv_rows // head_dim
    config: dict[str, Any] = {
        "all_patch_size": [2],
        "all_f_patch_size": [1],
        "in_channels": patch_values // 4,
        "dim": width,
        "n_layers": _count(s, "layers."),
        "n_refiner_layers": _count(s, "noise_refiner."),
        "n_heads": heads,
        "n_kv_heads": kv_heads,
        "norm_eps": 1e-5,
        "qk_norm": True,
        "cap_feat_dim": _shape(s, "cap_embedder.1.weight")[1],
        "rope_theta": 256.0,
        "t_scale": 1000.0,
        "axes_dims": list(_axes("zimage", head_dim)),
        "axes_lens": [1536, 512, 512],
    }
    if "siglip_embedder.1.weight" in s:
        config["siglip_feat_dim"] = s["siglip_embedder.1.weight"][1]
    return config


def _qwen_image(s: Shapes, original: bool) -> dict[str, Any]:
    width, in_channels = _shape(s, "img_in.weight")
    head_dim = _shape(s, "transformer_blocks.0.attn.norm_q.weight")[0]
    return {
        "patch_size": 2,
        "in_channels": in_channels,
        "out_channels": _shape(s, "proj_out.weight")[0] // 4,
        "num_layers": _count(s, "transformer_blocks."),
        "attention_head_dim": head_dim,
        "num_attention_heads": _heads(width, head_dim),
        "joint_attention_dim": _shape(s, "txt_in.weight")[1],
        "guidance_embeds": "time_text_embed.guidance_embedder.linear_1.weight" in s,
        "axes_dims_rope": _axes("qwen-image", head_dim),
        "use_additional_t_cond": "time_text_embed.addition_t_embedding.weight" in s,
    }


def _shape(s: Shapes, key: str) -> tuple[int, ...]:
    if key not in s:
        raise ModelError(f"The transformer file has no {key} tensor: it is incomplete or damaged.")
    return tuple(s[key])


def _index(key: str, prefix: str) -> int:
    part = key[len(prefix) :].split(".", 1)[0]
    return int(part) if part.isdigit() else -1


def _count(s: Shapes, prefix: str) -> int:
    """The number of numbered blocks under ``prefix`` (the highest index plus one)."""
    return max((_index(k, prefix) for k in s if k.startswith(prefix)), default=-1) + 1


def _heads(width: int, head_dim: int) -> int:
    if head_dim <= 0 or width % head_dim:
        raise ModelError(
            f"The transformer's width ({width}) is not a whole number of {head_dim}-value "
            "attention heads: the file is damaged or of an unknown model."
        )
    return width // head_dim


def _axes(family: str, head_dim: int) -> tuple[int, ...]:
    real, split = _ROPE[family]
    if head_dim == REAL_HEAD_DIM:
        return real
    axes = tuple(int(head_dim * part) for part in split)
    if sum(axes) != head_dim or any(axis % 2 or not axis for axis in axes):
        raise ModelError(
            f"The transformer has {head_dim}-value attention heads, which no released "
            "model of its family has; sdstudio cannot tell how to place its positions."
        )
    return axes
