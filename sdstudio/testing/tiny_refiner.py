"""A tiny SDXL model and a tiny SDXL refiner with random weights, in one latent space.

They are the shipped SDXL and SDXL refiner config folders with every size made small,
so they have the real models' layouts: the SDXL model two CLIP text encoders (the
second with a projection and ``!`` padding), the refiner only that second encoder, a
UNet that embeds five numbers of size and aesthetic score (``requires_aesthetics_score``)
instead of six of size, and a four-level VAE (eight pixels a latent, as in real models).
A refiner is also written as one original-layout checkpoint, as A1111's
``models/Stable-diffusion`` holds ``sd_xl_refiner_1.0.safetensors``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.testing.checkpoints import (
    convert_open_clip_to_original,
    convert_unet_to_original,
    convert_vae_to_original,
)
from sdstudio.testing.vocab import tiny_vocabulary, write_tiny_clip_tokenizer

if TYPE_CHECKING:
    import torch

REFINER_TEXT_PREFIX = "conditioner.embedders.0.model."
"""Where an SDXL refiner checkpoint keeps its one text encoder (OpenCLIP bigG's layout)."""
TEXT_WIDTH = 32
TEXT_2_WIDTH = 48
"""diffusers tells SDXL's two encoders apart by their widths, so they differ."""
TIME_EMBED = 8


def write_tiny_sdxl_configs(folder: str | Path) -> Path:
    """A tiny SDXL diffusers folder without weights: configs and tokenizers."""
    text = _text_config(TEXT_WIDTH)
    unet = _unet_config(TEXT_WIDTH + TEXT_2_WIDTH, 6 * TIME_EMBED + TEXT_2_WIDTH)
    changes = {"unet": unet, "text_encoder": text, "text_encoder_2": _text_config(TEXT_2_WIDTH)}
    return _write_configs(Path(folder), "sdxl", changes, ("tokenizer", "tokenizer_2"))


def write_tiny_refiner_configs(folder: str | Path) -> Path:
    """A tiny SDXL refiner diffusers folder without weights: configs and its tokenizer
    (usable as ``from_single_file``'s ``config`` for :func:`save_tiny_refiner_file`)."""
    unet = _unet_config(TEXT_2_WIDTH, 5 * TIME_EMBED + TEXT_2_WIDTH)
    changes = {"unet": unet, "text_encoder_2": _text_config(TEXT_2_WIDTH)}
    return _write_configs(Path(folder), "sdxl-refiner", changes, ("tokenizer_2",))


def save_tiny_sdxl(folder: str | Path, *, seed: int = 0) -> Path:
    """A tiny SDXL model with random weights, saved as a diffusers folder."""
    folder = write_tiny_sdxl_configs(folder)
    _save_weights(folder, seed)
    return folder


def save_tiny_refiner(folder: str | Path, *, seed: int = 1) -> Path:
    """A tiny SDXL refiner with random weights, saved as a diffusers folder; it loads as a
    ``StableDiffusionXLImg2ImgPipeline`` without a first text encoder."""
    folder = write_tiny_refiner_configs(folder)
    _save_weights(folder, seed)
    return folder


def save_tiny_refiner_file(refiner_folder: str | Path, out_path: str | Path) -> Path:
    """Write a saved refiner folder (see :func:`save_tiny_refiner`) as one original-layout
    ``.safetensors`` checkpoint: ``model.diffusion_model.*``, ``first_stage_model.*`` and
    ``conditioner.embedders.0.model.*``."""
    from safetensors.torch import save_file

    source, out_path = Path(refiner_folder), Path(out_path)
    checkpoint = refiner_original_layout(
        _weights(source / "unet"),
        _config(source / "unet"),
        _weights(source / "vae"),
        _config(source / "vae"),
        _weights(source / "text_encoder_2"),
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in checkpoint.items()}, str(out_path))
    return out_path


def refiner_original_layout(
    unet: Mapping[str, torch.Tensor],
    unet_config: Mapping[str, Any],
    vae: Mapping[str, torch.Tensor],
    vae_config: Mapping[str, Any],
    text_encoder: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """A refiner's diffusers state dicts renamed to the original (sgm) layout."""
    return {
        **convert_unet_to_original(unet, unet_config),
        **convert_vae_to_original(vae, vae_config),
        **convert_open_clip_to_original(text_encoder, REFINER_TEXT_PREFIX),
    }


def refiner_checkpoint_shapes(config_folder: str | Path) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of a refiner checkpoint for a config folder (the
    shipped full-size one too), built on the meta device: no memory, no values."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    source = Path(config_folder)
    with torch.device("meta"):
        unet_config = _config(source / "unet")
        vae_config = _config(source / "vae")
        text_config = CLIPTextConfig.from_pretrained(str(source / "text_encoder_2"))
        checkpoint = refiner_original_layout(
            UNet2DConditionModel.from_config(unet_config).state_dict(),
            unet_config,
            AutoencoderKL.from_config(vae_config).state_dict(),
            vae_config,
            CLIPTextModelWithProjection(text_config).state_dict(),
        )
    return {key: tuple(value.shape) for key, value in checkpoint.items()}


def _text_config(width: int) -> dict[str, Any]:
    return {
        "hidden_size": width,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "vocab_size": len(tiny_vocabulary()[0]),
        "projection_dim": width,
    }


def _unet_config(context: int, added: int) -> dict[str, Any]:
    return {
        "block_out_channels": [32, 64],
        "attention_head_dim": [2, 4],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "transformer_layers_per_block": [1, 2],
        "cross_attention_dim": context,
        "addition_time_embed_dim": TIME_EMBED,
        "projection_class_embeddings_input_dim": added,
        "layers_per_block": 1,
        "sample_size": 16,
    }


_VAE = {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "sample_size": 64}


def _write_configs(
    folder: Path, family: str, changes: dict[str, dict[str, Any]], tokenizers: tuple[str, ...]
) -> Path:
    from sdstudio.engine.models.loading import configs_root

    shipped = configs_root() / family
    changes = {**changes, "vae": _VAE}
    for name in ("model_index.json", "scheduler/scheduler_config.json", *changes):
        source = shipped / name if name.endswith(".json") else shipped / name / "config.json"
        target = folder / source.relative_to(shipped)
        target.parent.mkdir(parents=True, exist_ok=True)
        config = json.loads(source.read_text("utf-8"))
        target.write_text(json.dumps(config | changes.get(name, {}), indent=2), "utf-8")
    for name in tokenizers:
        write_tiny_clip_tokenizer(folder / name)
    if "tokenizer_2" in tokenizers:  # SDXL's second tokenizer pads with "!"
        for file in ("tokenizer_config.json", "special_tokens_map.json"):
            path = folder / "tokenizer_2" / file
            path.write_text(json.dumps(json.loads(path.read_text("utf-8")) | {"pad_token": "!"}))
    return folder


def _save_weights(folder: Path, seed: int) -> None:
    """Random weights for every model component of a config folder, saved beside it."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    UNet2DConditionModel.from_config(_config(folder / "unet")).save_pretrained(folder / "unet")
    AutoencoderKL.from_config(_config(folder / "vae")).save_pretrained(folder / "vae")
    for name, kind in (
        ("text_encoder", CLIPTextModel),
        ("text_encoder_2", CLIPTextModelWithProjection),
    ):
        if (folder / name).is_dir():
            config = CLIPTextConfig.from_pretrained(str(folder / name))
            kind(config).save_pretrained(folder / name)


def _config(component: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((component / "config.json").read_text("utf-8"))
    return data


def _weights(component: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for file in sorted(component.glob("*.safetensors")):
        state.update(load_file(str(file)))
    return state


__all__ = [
    "REFINER_TEXT_PREFIX",
    "refiner_checkpoint_shapes",
    "save_tiny_refiner",
    "save_tiny_refiner_file",
    "save_tiny_sdxl",
    "write_tiny_refiner_configs",
    "write_tiny_sdxl_configs",
]
