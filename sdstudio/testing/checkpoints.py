"""Write a diffusers SD 1.x folder as one original-layout (LDM) checkpoint.

This is the inverse of ``diffusers.loaders.single_file_utils`` (``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint``): the written ``.safetensors``
file uses the key layout of CompVis/AUTOMATIC1111 checkpoints and loads with
``StableDiffusionPipeline.from_single_file(path, config=diffusers_dir)``. Unlike diffusers'
``convert_diffusers_to_original_stable_diffusion.py`` script, the block layout is read from
the folder's configs and keys, so both the real SD 1.5 shapes and the tiny test models work.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."

_UNET_FIXED = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_UNET_RESNET = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "time_emb_proj.": "emb_layers.1.",
    "conv_shortcut.": "skip_connection.",
}
_VAE_FIXED = {"conv_norm_out.": "norm_out."}
_VAE_ATTENTION = {
    "group_norm.": "norm.",
    "to_q.": "q.",
    "to_k.": "k.",
    "to_v.": "v.",
    "to_out.0.": "proj_out.",
    # Older diffusers VAE attention names.
    "query.": "q.",
    "key.": "k.",
    "value.": "v.",
    "proj_attn.": "proj_out.",
}


def save_single_file_checkpoint(
    diffusers_dir: str | Path, out_path: str | Path, *, dtype: torch.dtype | None = None
) -> Path:
    """Write a diffusers SD 1.x folder as one original-layout (LDM) .safetensors checkpoint.

    ``diffusers_dir`` must hold ``unet/``, ``vae/`` and ``text_encoder/`` with safetensors
    weights. ``dtype`` (e.g. ``torch.float16``) casts the floating-point tensors. Returns
    ``out_path``.
    """
    from safetensors.torch import save_file

    source, out_path = Path(diffusers_dir), Path(out_path)
    unet, unet_config = _load_component(source / "unet")
    vae, vae_config = _load_component(source / "vae")
    clip, _ = _load_component(source / "text_encoder")

    checkpoint = {
        **convert_unet_to_original(unet, unet_config),
        **convert_vae_to_original(vae, vae_config),
        **convert_clip_to_original(clip),
    }
    if dtype is not None:
        checkpoint = {k: v.to(dtype) if v.is_floating_point() else v for k, v in checkpoint.items()}
    checkpoint = {k: v.contiguous() for k, v in checkpoint.items()}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(checkpoint, str(out_path), metadata={"format": "pt"})
    return out_path


def _load_component(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read every ``*.safetensors`` file of one component folder, plus its config.json."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {folder}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return state, config


def convert_unet_to_original(
    state: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """Rename a diffusers UNet2DConditionModel state dict to ``model.diffusion_model.*``."""
    layers = int(config["layers_per_block"])
    return {UNET_PREFIX + _unet_key(key, state, layers): value for key, value in state.items()}


def convert_vae_to_original(
    state: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """Rename a diffusers AutoencoderKL state dict to ``first_stage_model.*``.

    Mid-block attention projections become 1x1 convolutions, as in the original layout.
    """
    num_up_blocks = len(config["up_block_types"])
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new_key, is_attention = _vae_key(key, num_up_blocks)
        if is_attention and key.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]
        converted[VAE_PREFIX + new_key] = value
    return converted


def convert_clip_to_original(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a CLIPTextModel state dict to ``cond_stage_model.transformer.text_model.*``."""
    # transformers 5 flattened CLIPTextModel: its keys may lack the "text_model." level.
    return {CLIP_PREFIX + key.removeprefix("text_model."): value for key, value in state.items()}


def _replace_prefix(key: str, table: dict[str, str]) -> str | None:
    """``key`` with the first matching prefix of ``table`` swapped, or None when none matches."""
    for old, new in table.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return None


def _unet_key(key: str, state: Mapping[str, torch.Tensor], layers: int) -> str:
    """Map one diffusers UNet2DConditionModel key to its LDM ``openaimodel`` name."""
    if (fixed := _replace_prefix(key, _UNET_FIXED)) is not None:
        return fixed
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = 1 + block * (layers + 1) + layer
        if kind == "resnets":
            return f"input_blocks.{index}.0.{_replace_prefix(rest, _UNET_RESNET) or rest}"
        return f"input_blocks.{index}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{1 + int(m[1]) * (layers + 1) + layers}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
        kind, index, rest = m[1], int(m[2]), m[3]
        if kind == "resnets":  # resnet, attention, resnet -> middle_block.0, .1, .2
            return f"middle_block.{2 * index}.{_replace_prefix(rest, _UNET_RESNET) or rest}"
        return f"middle_block.{2 * index + 1}.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = block * (layers + 1) + layer
        if kind == "resnets":
            return f"output_blocks.{index}.0.{_replace_prefix(rest, _UNET_RESNET) or rest}"
        return f"output_blocks.{index}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        block = int(m[1])
        # The upsampler follows the block's last layer: after its attention when it has one.
        slot = 2 if any(k.startswith(f"up_blocks.{block}.attentions.") for k in state) else 1
        return f"output_blocks.{block * (layers + 1) + layers}.{slot}.conv.{m[2]}"
    raise KeyError(f"UNet key {key!r} has no SD 1.x original-layout name")


def _vae_key(key: str, num_up_blocks: int) -> tuple[str, bool]:
    """Map one diffusers AutoencoderKL key to its LDM name; also say if it is attention."""
    if key.startswith(("quant_conv.", "post_quant_conv.")):
        return key, False
    part, _, rest = key.partition(".")
    if part not in ("encoder", "decoder"):
        raise KeyError(f"VAE key {key!r} has no original-layout name")
    if (fixed := _replace_prefix(rest, _VAE_FIXED)) is not None:
        return f"{part}.{fixed}", False
    if rest.startswith(("conv_in.", "conv_out.")):
        return key, False
    if m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        block = int(m[2]) if m[1] == "down" else num_up_blocks - 1 - int(m[2])
        tail = m[4].replace("conv_shortcut.", "nin_shortcut.")
        return f"{part}.{m[1]}.{block}.block.{m[3]}.{tail}", False
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.(.+)", rest):
        return f"{part}.down.{m[1]}.downsample.{m[2]}", False
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", rest):
        return f"{part}.up.{num_up_blocks - 1 - int(m[1])}.upsample.{m[2]}", False
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", rest):
        return f"{part}.mid.block_{int(m[1]) + 1}.{m[2]}", False
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest):
        tail = _replace_prefix(m[1], _VAE_ATTENTION)
        if tail is not None:
            return f"{part}.mid.attn_1.{tail}", True
    raise KeyError(f"VAE key {key!r} has no original-layout name")
