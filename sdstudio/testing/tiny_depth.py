"""Tiny random Depth Anything models for tests: a transformers folder (as the Hub's
``depth-anything/Depth-Anything-V2-Small-hf``) and the same weights as an original
checkpoint (as ``depth_anything_v2_vitl.safetensors`` or ``depth_anything_vitl14.pth``),
so both layouts can be checked to give the same map.

The backbone is 16 wide with one attention head (DINOv2's heads are 64 wide, so a
checkpoint's configuration read from its shapes has ``hidden // 64`` heads, at least
one); V1 has 4 layers (its head reads the last four), V2 12 (it reads 3, 6, 9 and 12, as
V2 Small does).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

HIDDEN = 16
LAYERS = {1: 4, 2: 12}
OUT_INDICES = {1: [1, 2, 3, 4], 2: [3, 6, 9, 12]}


def tiny_depth_model(version: int = 2, seed: int = 0) -> Any:
    """A random ``DepthAnythingForDepthEstimation`` of ``version`` (every weight drawn
    from a normal distribution, so its depth map is not flat)."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS[version],
        num_attention_heads=1,
        mlp_ratio=2,
        patch_size=14,
        image_size=28,
        layer_norm_eps=1e-6,
        out_indices=OUT_INDICES[version],
        apply_layernorm=True,
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=HIDDEN,
        patch_size=14,
        fusion_hidden_size=8,
        neck_hidden_sizes=[4, 8, 16, 16],
        head_hidden_size=4,
        depth_estimation_type="relative",
    )
    model = DepthAnythingForDepthEstimation(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
            if parameter.ndim == 1:
                parameter.abs_()  # norms and layer scales positive, biases too: a live head
    return model.eval()


def save_hf_folder(folder: Path, version: int = 2, seed: int = 0) -> Path:
    """The tiny model saved as a transformers folder (``config.json`` and
    ``model.safetensors``) at ``folder``."""
    tiny_depth_model(version, seed).save_pretrained(folder, safe_serialization=True)
    return folder


def save_original(path: Path, version: int = 2, seed: int = 0) -> Path:
    """The tiny model's weights in the original repositories' layout at ``path``:
    safetensors for a ``.safetensors`` name, else a ``torch.save`` pickle of tensors."""
    state = original_state_dict(tiny_depth_model(version, seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        import torch

        torch.save(state, path)
    return path


_BACK = (
    (r"backbone\.embeddings\.cls_token", "pretrained.cls_token"),
    (r"backbone\.embeddings\.mask_token", "pretrained.mask_token"),
    (r"backbone\.embeddings\.position_embeddings", "pretrained.pos_embed"),
    (r"backbone\.embeddings\.patch_embeddings\.projection\.", "pretrained.patch_embed.proj."),
    (r"backbone\.encoder\.layer\.(\d+)\.attention\.o_proj\.", r"pretrained.blocks.\1.attn.proj."),
    (
        r"backbone\.encoder\.layer\.(\d+)\.layer_scale(\d)\.lambda1",
        r"pretrained.blocks.\1.ls\2.gamma",
    ),
    (r"backbone\.encoder\.layer\.(\d+)\.(norm\d|mlp\.fc\d)\.", r"pretrained.blocks.\1.\2."),
    (r"backbone\.layernorm\.", "pretrained.norm."),
    (r"neck\.reassemble_stage\.layers\.(\d)\.projection\.", r"depth_head.projects.\1."),
    (r"neck\.reassemble_stage\.layers\.(\d)\.resize\.", r"depth_head.resize_layers.\1."),
    (r"head\.conv1\.", "depth_head.scratch.output_conv1."),
    (r"head\.conv2\.", "depth_head.scratch.output_conv2.0."),
    (r"head\.conv3\.", "depth_head.scratch.output_conv2.2."),
)


def original_state_dict(model: Any) -> dict[str, Any]:
    """The model's weights under the original repositories' names (the attention's
    query, key and value in one ``qkv`` matrix; fusion blocks numbered from the deepest,
    ``refinenet4``; the head's convolutions in ``output_conv1`` and ``output_conv2``)."""
    import torch

    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    out: dict[str, Any] = {}
    for layer in range(model.config.backbone_config.num_hidden_layers):
        prefix = f"backbone.encoder.layer.{layer}.attention."
        for kind in ("weight", "bias"):
            parts = [state.pop(f"{prefix}{p}_proj.{kind}") for p in ("q", "k", "v")]
            out[f"pretrained.blocks.{layer}.attn.qkv.{kind}"] = torch.cat(parts)
    for key, value in state.items():
        out[_original_name(key)] = value
    return out


def _original_name(key: str) -> str:
    convs = re.fullmatch(r"neck\.convs\.(\d)\.(\w+)", key)
    if convs:
        return f"depth_head.scratch.layer{int(convs.group(1)) + 1}_rn.{convs.group(2)}"
    fusion = re.fullmatch(r"neck\.fusion_stage\.layers\.(\d)\.(.+)", key)
    if fusion:
        block = f"depth_head.scratch.refinenet{4 - int(fusion.group(1))}."
        rest = fusion.group(2).replace("projection.", "out_conv.")
        rest = re.sub(r"residual_layer(\d)\.convolution(\d)", r"resConfUnit\1.conv\2", rest)
        return block + rest
    for pattern, target in _BACK:
        match = re.match(pattern, key)
        if match:
            return match.expand(target) + key[match.end() :]
    raise KeyError(key)
