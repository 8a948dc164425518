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
OPEN_CLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

_UNET_FIXED = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
    # SDXL's size and crop conditioning.
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
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


def convert_clip_to_original(
    state: Mapping[str, torch.Tensor], prefix: str = CLIP_PREFIX
) -> dict[str, torch.Tensor]:
    """Rename a CLIPTextModel state dict to ``cond_stage_model.transformer.text_model.*``."""
    # transformers 5 flattened CLIPTextModel: its keys may lack the "text_model." level.
    return {prefix + key.removeprefix("text_model."): value for key, value in state.items()}


def convert_open_clip_to_original(
    state: Mapping[str, torch.Tensor], prefix: str = OPEN_CLIP_PREFIX
) -> dict[str, torch.Tensor]:
    """Write a CLIPTextModel(WithProjection) state dict in OpenCLIP's layout (SD 2.x, SDXL).

    The inverse of diffusers' ``convert_open_clip_checkpoint``: q/k/v projections are fused
    into ``in_proj_*`` and the text projection is transposed.
    """
    import torch

    flat = {key.removeprefix("text_model."): value for key, value in state.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in flat.items():
        if key in _OPEN_CLIP_FIXED:
            out[prefix + _OPEN_CLIP_FIXED[key]] = (
                value.T if key == "text_projection.weight" else value
            )
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", key):
            block, rest = f"{prefix}transformer.resblocks.{m[1]}.", m[2]
            if m2 := re.fullmatch(r"self_attn\.q_proj\.(weight|bias)", rest):
                parts = [flat[f"encoder.layers.{m[1]}.self_attn.{p}_proj.{m2[1]}"] for p in "qkv"]
                out[f"{block}attn.in_proj_{m2[1]}"] = torch.cat(parts)
            elif not re.fullmatch(r"self_attn\.[kv]_proj\..+", rest):
                out[block + (_replace_prefix(rest, _OPEN_CLIP_LAYER) or rest)] = value
        elif key != "embeddings.position_ids":
            raise KeyError(f"text encoder key {key!r} has no OpenCLIP name")
    return out


_OPEN_CLIP_FIXED = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
    "text_projection.weight": "text_projection",
}
_OPEN_CLIP_LAYER = {
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
    "self_attn.out_proj.": "attn.out_proj.",
}


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


def random_original_checkpoint(
    config_dir: str | Path,
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Random weights for a diffusers config folder's architecture, in original layout.

    Works for SD 1.x (CLIP-L), SD 2.x (OpenCLIP, ``hidden_act`` ``"gelu"``) and SDXL
    (``text_encoder_2``) folders without weights, such as the shipped model configs. With
    ``device="meta"`` no memory is used: the names and shapes are right, the values absent.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    source = Path(config_dir)

    def cast(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if dtype is None:
            return state
        return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}

    def text_encoder(name: str, cls: Any) -> dict[str, torch.Tensor]:
        config = CLIPTextConfig.from_pretrained(str(source / name))
        return dict(cls(config).state_dict())

    torch.manual_seed(seed)
    checkpoint: dict[str, torch.Tensor] = {}
    with torch.device(device):
        unet_config = json.loads((source / "unet" / "config.json").read_text("utf-8"))
        unet_state = UNet2DConditionModel.from_config(unet_config).state_dict()
        checkpoint.update(cast(convert_unet_to_original(unet_state, unet_config)))
        del unet_state
        vae_config = json.loads((source / "vae" / "config.json").read_text("utf-8"))
        vae_state = AutoencoderKL.from_config(vae_config).state_dict()
        checkpoint.update(cast(convert_vae_to_original(vae_state, vae_config)))
        del vae_state
        if (source / "text_encoder_2").is_dir():
            clip = text_encoder("text_encoder", CLIPTextModel)
            checkpoint.update(cast(convert_clip_to_original(clip, SDXL_CLIP_PREFIX)))
            big_g = text_encoder("text_encoder_2", CLIPTextModelWithProjection)
            checkpoint.update(cast(convert_open_clip_to_original(big_g, SDXL_OPEN_CLIP_PREFIX)))
        else:
            clip = text_encoder("text_encoder", CLIPTextModel)
            te_config = json.loads((source / "text_encoder" / "config.json").read_text("utf-8"))
            if te_config.get("hidden_act") == "gelu":
                checkpoint.update(cast(convert_open_clip_to_original(clip)))
            else:
                checkpoint.update(cast(convert_clip_to_original(clip)))
    return {k: v.contiguous() for k, v in checkpoint.items()}
