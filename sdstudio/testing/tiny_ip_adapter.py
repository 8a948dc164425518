"""Tiny IP-Adapters and a tiny CLIP vision encoder for the tiny SD 1.x model.

The encoder is a ``CLIPVisionModelWithProjection`` (hidden width 64, image embeds 16,
32x32 pixels), saved as one safetensors file with Hugging Face's key names (as ComfyUI
keeps encoders) or as a transformers folder (as h94's ``image_encoder``). The adapters
are in the original IP-Adapter layout (``image_proj.*``, ``ip_adapter.<n>.to_k_ip``)
that A1111, ComfyUI and diffusers read: a plain one (reads the image embeds) and a
"plus" one (a Resampler reading the penultimate hidden states), their keys numbered
as the UNet's attention processors are. Weights are random and large enough to change
the picture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ENCODER_HIDDEN = 64
ENCODER_EMBED = 16
_RESAMPLER_WIDTH = 64
_QUERIES = 4


def build_tiny_encoder(*, seed: int = 3) -> Any:
    """A tiny ``CLIPVisionModelWithProjection`` with random weights."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=ENCODER_HIDDEN,
        intermediate_size=96,
        num_attention_heads=1,
        num_hidden_layers=2,
        image_size=32,
        patch_size=8,
        projection_dim=ENCODER_EMBED,
        hidden_act="gelu",
    )
    return CLIPVisionModelWithProjection(config).eval()


def save_tiny_encoder(path: Path, *, folder: bool = False, seed: int = 3) -> Path:
    """Save the tiny encoder as one ``.safetensors`` file at ``path`` (Hugging Face key
    names), or (``folder``) as a transformers folder at ``path``."""
    from safetensors.torch import save_file

    model = build_tiny_encoder(seed=seed)
    if folder:
        model.save_pretrained(path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def tiny_ip_adapter_tensors(model_folder: Path, *, plus: bool = False, seed: int = 5) -> dict:
    """The tensors of a tiny IP-Adapter (flattened names) for the UNet of the tiny model
    saved in ``model_folder``."""
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(model_folder / "unet", local_files_only=True)
    cross = unet.config.cross_attention_dim
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.3) -> Any:
        return torch.randn(shape, generator=generator) * scale

    tensors: dict[str, Any] = {}
    if plus:
        width = _RESAMPLER_WIDTH
        tensors["image_proj.latents"] = rand(1, _QUERIES, width, scale=1.0)
        tensors["image_proj.proj_in.weight"] = rand(width, ENCODER_HIDDEN)
        tensors["image_proj.proj_in.bias"] = rand(width, scale=0.1)
        tensors["image_proj.proj_out.weight"] = rand(cross, width)
        tensors["image_proj.proj_out.bias"] = rand(cross, scale=0.1)
        tensors["image_proj.norm_out.weight"] = torch.ones(cross)
        tensors["image_proj.norm_out.bias"] = torch.zeros(cross)
        for layer in range(4):
            head = f"image_proj.layers.{layer}."
            for norm in ("0.norm1", "0.norm2", "1.0"):
                tensors[f"{head}{norm}.weight"] = torch.ones(width)
                tensors[f"{head}{norm}.bias"] = torch.zeros(width)
            tensors[f"{head}0.to_q.weight"] = rand(width, width)
            tensors[f"{head}0.to_kv.weight"] = rand(2 * width, width)
            tensors[f"{head}0.to_out.weight"] = rand(width, width)
            tensors[f"{head}1.1.weight"] = rand(4 * width, width)
            tensors[f"{head}1.3.weight"] = rand(width, 4 * width)
    else:
        tensors["image_proj.proj.weight"] = rand(4 * cross, ENCODER_EMBED, scale=1.0)
        tensors["image_proj.proj.bias"] = rand(4 * cross, scale=0.1)
        tensors["image_proj.norm.weight"] = torch.ones(cross)
        tensors["image_proj.norm.bias"] = torch.zeros(cross)
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        hidden = _hidden_size(unet.config, name)
        tensors[f"ip_adapter.{key}.to_k_ip.weight"] = rand(hidden, cross, scale=1.0)
        tensors[f"ip_adapter.{key}.to_v_ip.weight"] = rand(hidden, cross, scale=1.0)
        key += 2
    return tensors


def save_tiny_ip_adapter(
    model_folder: Path, path: Path, *, plus: bool = False, seed: int = 5
) -> Path:
    """Save a tiny IP-Adapter as ``.safetensors`` (flat names) or ``.bin`` (h94's two
    nested dictionaries), by ``path``'s suffix."""
    tensors = tiny_ip_adapter_tensors(model_folder, plus=plus, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
        return path
    import torch

    nested: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
    for name, value in tensors.items():
        head, _, rest = name.partition(".")
        nested[head][rest] = value
    torch.save(nested, path)
    return path


def _hidden_size(config: Any, name: str) -> int:
    channels = list(config.block_out_channels)
    if name.startswith("mid_block"):
        return int(channels[-1])
    index = int(name.split(".")[1])
    if name.startswith("up_blocks"):
        return int(list(reversed(channels))[index])
    return int(channels[index])
