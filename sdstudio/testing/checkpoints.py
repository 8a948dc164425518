"""Write a diffusers SD 1.x folder as one original-layout (LDM) checkpoint.

This is the inverse of ``diffusers.loaders.single_file_utils`` (``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint``): the written ``.safetensors``
file uses the key layout of CompVis/AUTOMATIC1111 checkpoints and loads with
``StableDiffusionPipeline.from_single_file(path, config=diffusers_dir)``. Unlike diffusers'
``convert_diffusers_to_original_stable_diffusion.py`` script, the block layout is read from
the folder's configs and keys, so both the real SD 1.5 shapes and the tiny test models work.
The conversions themselves live in :mod:`sdstudio.engine.training.original_layout`, which
DreamBooth training writes its checkpoints with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from sdstudio.engine.training.original_layout import (
    CLIP_PREFIX,
    OPEN_CLIP_PREFIX,
    SDXL_CLIP_PREFIX,
    SDXL_OPEN_CLIP_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    _unet_key,
    convert_clip_to_original,
    convert_open_clip_to_original,
    convert_unet_to_original,
    convert_vae_to_original,
)

__all__ = [
    "CLIP_PREFIX",
    "OPEN_CLIP_PREFIX",
    "SDXL_CLIP_PREFIX",
    "SDXL_OPEN_CLIP_PREFIX",
    "UNET_PREFIX",
    "VAE_PREFIX",
    "_unet_key",
    "convert_clip_to_original",
    "convert_open_clip_to_original",
    "convert_unet_to_original",
    "convert_vae_to_original",
    "random_original_checkpoint",
    "save_single_file_checkpoint",
]


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
