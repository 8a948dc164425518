"""How VAE files name their tensors, and what their shapes tell of the architecture.

Original layouts are mapped to diffusers names: the LDM / Black Forest Labs layout of
the KL VAEs (``encoder.down.0.block.0``, ``mid.attn_1`` with 1x1 convolutions,
``decoder.up`` numbered from the bottom, Flux.2's quant convolutions inside the encoder
and decoder) and Wan 2.1's (flat ``downsamples`` / ``upsamples`` lists of ``residual``
sequences, ``middle``, ``head``). The sizes a config needs (block widths, latent
channels, blocks per level) are read from the diffusers-named shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

Shapes = Mapping[str, Sequence[int]]


def diffusers_names(kind: str, layout: str, shapes: Shapes) -> dict[str, tuple[str, bool]]:
    """Each tensor's diffusers name -> (its name in the file, whether a 1x1
    convolution becomes a linear weight)."""
    if layout == "diffusers":
        return {key: (key, False) for key in shapes}
    if kind == "qwen-image":
        blocks = _wan_res_blocks(shapes)
        return {_wan_name(key, blocks): (key, False) for key in shapes}
    ups = 1 + max(
        (int(m[1]) for key in shapes if (m := re.match(r"decoder\.up\.(\d+)\.", key))), default=-1
    )
    names: dict[str, tuple[str, bool]] = {}
    for key in shapes:
        new, squeeze = _kl_name(key, ups)
        names[new] = (key, squeeze and len(shapes[key]) == 4)
    return names


_KL_ATTENTION = {
    "norm": "group_norm",
    "q": "to_q",
    "k": "to_k",
    "v": "to_v",
    "proj_out": "to_out.0",
}


def _kl_name(key: str, ups: int) -> tuple[str, bool]:
    """The diffusers name of an original-layout (LDM / BFL) KL VAE tensor."""
    attention = re.fullmatch(r"(encoder|decoder)\.mid\.attn_1\.(\w+)\.(weight|bias)", key)
    if attention:
        side, layer, kind = attention.groups()
        new = f"{side}.mid_block.attentions.0.{_KL_ATTENTION.get(layer, layer)}.{kind}"
        return new, layer != "norm" and kind == "weight"
    rules: tuple[tuple[str, Any], ...] = (
        (r"^encoder\.down\.(\d+)\.block\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2."),
        (r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0."),
        (
            r"^decoder\.up\.(\d+)\.block\.(\d+)\.",
            lambda m: f"decoder.up_blocks.{ups - 1 - int(m[1])}.resnets.{m[2]}.",
        ),
        (
            r"^decoder\.up\.(\d+)\.upsample\.",
            lambda m: f"decoder.up_blocks.{ups - 1 - int(m[1])}.upsamplers.0.",
        ),
        (
            r"^(encoder|decoder)\.mid\.block_(\d)\.",
            lambda m: f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}.",
        ),
        (r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out."),
        (r"^encoder\.quant_conv\.", "quant_conv."),
        (r"^decoder\.post_quant_conv\.", "post_quant_conv."),
    )
    for pattern, replacement in rules:
        key, count = re.subn(pattern, replacement, key)
        if count:
            break
    return key.replace(".nin_shortcut.", ".conv_shortcut."), False


_WAN_RESIDUAL = {
    "residual.0.gamma": "norm1.gamma",
    "residual.2.weight": "conv1.weight",
    "residual.2.bias": "conv1.bias",
    "residual.3.gamma": "norm2.gamma",
    "residual.6.weight": "conv2.weight",
    "residual.6.bias": "conv2.bias",
    "shortcut.weight": "conv_shortcut.weight",
    "shortcut.bias": "conv_shortcut.bias",
}
_WAN_TOP = {"conv1": "quant_conv", "conv2": "post_quant_conv"}


def _wan_res_blocks(shapes: Shapes) -> int:
    """Residual blocks per level: those before the encoder's first downsampling."""
    indices = sorted(
        {int(m[1]) for key in shapes if (m := re.match(r"encoder\.downsamples\.(\d+)\.", key))}
    )
    count = 0
    for index in indices:
        if f"encoder.downsamples.{index}.resample.1.weight" in shapes:
            break
        count += 1
    return count


def _wan_name(key: str, res_blocks: int) -> str:
    """The diffusers name of a Wan 2.1 (original layout) VAE tensor."""
    side, _, rest = key.partition(".")
    if side in _WAN_TOP:
        return f"{_WAN_TOP[side]}.{rest}"
    for old, new in (("conv1.", "conv_in."), ("head.0.", "norm_out."), ("head.2.", "conv_out.")):
        if rest.startswith(old):
            return f"{side}.{new}{rest[len(old) :]}"
    if m := re.fullmatch(r"middle\.(\d)\.(.+)", rest):
        if m[1] == "1":
            return f"{side}.mid_block.attentions.0.{m[2]}"
        return f"{side}.mid_block.resnets.{int(m[1]) // 2}.{_WAN_RESIDUAL.get(m[2], m[2])}"
    if m := re.fullmatch(r"downsamples\.(\d+)\.(.+)", rest):
        return f"{side}.down_blocks.{m[1]}.{_WAN_RESIDUAL.get(m[2], m[2])}"
    if m := re.fullmatch(r"upsamples\.(\d+)\.(.+)", rest):
        level, index = divmod(int(m[1]), res_blocks + 2)
        if index <= res_blocks:
            return f"{side}.up_blocks.{level}.resnets.{index}.{_WAN_RESIDUAL.get(m[2], m[2])}"
        return f"{side}.up_blocks.{level}.upsamplers.0.{m[2]}"
    return key


def squeezed(shape: Sequence[int], squeeze: bool) -> tuple[int, ...]:
    """A tensor's shape once renamed: a 1x1 convolution's as a linear weight's."""
    return tuple(shape[:2]) if squeeze else tuple(shape)


def config_sizes(kind: str, shapes: Shapes, config: Mapping[str, Any]) -> dict[str, Any]:
    """The config entries the (diffusers-named) shapes tell."""
    if kind == "qwen-image":
        return _wan_sizes(shapes)
    levels = _indices(shapes, "encoder.down_blocks")
    widths = [shapes[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"][0] for i in levels]
    ups = _indices(shapes, "decoder.up_blocks")
    decoder = [shapes[f"decoder.up_blocks.{i}.resnets.0.conv2.weight"][0] for i in reversed(ups)]
    latent = shapes["decoder.conv_in.weight"][1]
    sizes: dict[str, Any] = {
        "in_channels": shapes["encoder.conv_in.weight"][1],
        "out_channels": shapes["decoder.conv_out.weight"][0],
        "latent_channels": latent,
        "block_out_channels": widths,
        "down_block_types": ["DownEncoderBlock2D"] * len(widths),
        "up_block_types": ["UpDecoderBlock2D"] * len(decoder),
        "layers_per_block": len(_indices(shapes, "encoder.down_blocks.0.resnets")),
        "norm_num_groups": _groups(int(config.get("norm_num_groups", 32)), widths + decoder),
        "mid_block_add_attention": "encoder.mid_block.attentions.0.to_q.weight" in shapes,
        "use_quant_conv": "quant_conv.weight" in shapes,
        "use_post_quant_conv": "post_quant_conv.weight" in shapes,
    }
    if kind == "flux2":
        sizes["decoder_block_out_channels"] = decoder if decoder != widths else None
        side = round((shapes["bn.running_mean"][0] // latent) ** 0.5)
        sizes["patch_size"] = [side, side]
    return sizes


def _wan_sizes(shapes: Shapes) -> dict[str, Any]:
    base = shapes["encoder.conv_in.weight"][0]
    levels: list[list[int]] = [[]]
    temporal: list[bool] = []
    for index in _indices(shapes, "encoder.down_blocks"):
        block = f"encoder.down_blocks.{index}"
        if f"{block}.resample.1.weight" in shapes:
            temporal.append(f"{block}.time_conv.weight" in shapes)
            levels.append([])
        elif f"{block}.conv2.weight" in shapes:
            levels[-1].append(shapes[f"{block}.conv2.weight"][0])
    return {
        "base_dim": base,
        "z_dim": shapes["decoder.conv_in.weight"][1],
        "dim_mult": [level[-1] // base for level in levels],
        "num_res_blocks": len(levels[0]),
        "temperal_downsample": temporal,
        "input_channels": shapes["encoder.conv_in.weight"][1],
    }


def _indices(shapes: Shapes, prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    return sorted({int(m[1]) for key in shapes if (m := pattern.match(key))})


def _groups(configured: int, widths: Sequence[int]) -> int:
    """GroupNorm's group count, which weights do not store: the config's, halved while
    the narrowest block would have fewer than two channels a group (test-size models)."""
    narrowest = min(widths)
    groups = configured
    while groups > 1 and (narrowest // groups < 2 or any(width % groups for width in widths)):
        groups //= 2
    return groups
