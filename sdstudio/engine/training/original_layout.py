"""Diffusers state dicts written in the original (LDM, A1111) single-file layout, and a
whole pipeline written as one ``.safetensors`` checkpoint.

This is the inverse of ``diffusers.loaders.single_file_utils`` (``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint``,
``convert_open_clip_checkpoint``): the written file uses the key layout of
CompVis/Stability/AUTOMATIC1111 checkpoints, so sdstudio, A1111 and ComfyUI load it like
any downloaded checkpoint. The block layout is read from the models' own configs and
keys, so the real SD 1.x, SD 2.x and SDXL shapes and small custom ones all convert; SDXL's
deeper transformer stacks keep their diffusers names (``transformer_blocks.N``), which
are the original ones too, and its size conditioning becomes ``label_emb``.

A v-prediction model is marked with an empty ``v_pred`` tensor (ComfyUI's marker, which
sdstudio's loader reads too) and ``modelspec.prediction_type`` in the header; A1111 tells
an SD 2.x v-model by running it, as it does for every SD 2.x file without a ``.yaml``.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.engine.errors import InvalidRequest, ModelError, StorageError

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
    raise KeyError(f"UNet key {key!r} has no original-layout name")


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


V_PRED_KEY = "v_pred"
"""An empty tensor whose presence says the model predicts v (ComfyUI's marker)."""

ARCHITECTURES = {
    ("sd1", False): "stable-diffusion-v1",
    ("sd1", True): "stable-diffusion-v1-v",
    ("sd2", False): "stable-diffusion-v2-512",
    ("sd2", True): "stable-diffusion-v2-768-v",
    ("sdxl", False): "stable-diffusion-xl-v1-base",
    ("sdxl", True): "stable-diffusion-xl-v1-base-v",
}
"""(family, v-prediction) -> Stability's ``modelspec.architecture``."""


def pipeline_family(pipe: Any) -> str:
    """``sdxl`` for a pipeline with two text encoders, ``sd2`` for one whose text encoder
    is OpenCLIP's (plain GELU), else ``sd1`` (OpenAI's CLIP, quick GELU)."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        return "sdxl"
    act = getattr(pipe.text_encoder.config, "hidden_act", "quick_gelu")
    return "sd2" if act == "gelu" else "sd1"


def pipeline_to_original(pipe: Any, *, family: str | None = None) -> dict[str, torch.Tensor]:
    """Every weight of an SD 1.x, SD 2.x or SDXL pipeline in the original layout (shared
    storage is kept: nothing is copied)."""
    family = family or pipeline_family(pipe)
    if family not in ("sd1", "sd2", "sdxl"):
        raise InvalidRequest(f"A {family} model cannot be written as an SD checkpoint.")
    try:
        return _pipeline_state(pipe, family)
    except KeyError as error:
        raise ModelError(f"The model cannot be written as a checkpoint: {error.args[0]}") from None


def _pipeline_state(pipe: Any, family: str) -> dict[str, torch.Tensor]:
    state = {
        **convert_unet_to_original(pipe.unet.state_dict(), pipe.unet.config),
        **convert_vae_to_original(pipe.vae.state_dict(), pipe.vae.config),
    }
    text = pipe.text_encoder.state_dict()
    if family == "sdxl":
        state.update(convert_clip_to_original(text, SDXL_CLIP_PREFIX))
        big_g = pipe.text_encoder_2.state_dict()
        state.update(convert_open_clip_to_original(big_g, SDXL_OPEN_CLIP_PREFIX))
    elif family == "sd2":
        state.update(convert_open_clip_to_original(text))
    else:
        state.update(convert_clip_to_original(text))
    return state


def write_checkpoint(
    pipe: Any,
    path: Path,
    *,
    dtype: torch.dtype | None,
    metadata: Mapping[str, str] | None = None,
    family: str | None = None,
) -> Path:
    """Write ``pipe`` (UNet, VAE, text encoders) as one original-layout ``.safetensors``
    file at ``path`` and return it.

    ``dtype`` casts the floating-point weights (``None`` keeps them). The header gets
    Stability's ``modelspec.*`` facts plus ``metadata``. The file is written under a
    temporary name in the same folder and renamed when complete, so a crash never leaves
    half a checkpoint under the real name. Disk and permission errors raise
    :class:`StorageError`.
    """
    import torch
    from safetensors.torch import save_file

    family = family or pipeline_family(pipe)
    v_prediction = pipe.scheduler.config.get("prediction_type") == "v_prediction"
    tensors: dict[str, torch.Tensor] = {}
    for key, value in pipeline_to_original(pipe, family=family).items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous()
    if v_prediction:
        tensors[V_PRED_KEY] = torch.zeros(0)
    header = {
        "format": "pt",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": ARCHITECTURES[(family, v_prediction)],
        "modelspec.title": path.stem,
        "modelspec.prediction_type": "v" if v_prediction else "epsilon",
        **(metadata or {}),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(fd)
    except OSError as error:
        raise StorageError(f"Could not write {path}: {error.strerror or error}") from None
    try:
        save_file(tensors, temporary, metadata=header)
        if hasattr(os, "chmod"):
            from sdstudio.engine.fileio import new_file_mode

            os.chmod(temporary, new_file_mode())
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:
        Path(temporary).unlink(missing_ok=True)
        raise StorageError(f"Could not write {path}: {error}") from None
    return path
