"""Tiny T2I-Adapters and Union ControlNets for the tiny SD 1.x and SDXL models.

A T2I-Adapter's features must match the UNet's down blocks in width and scale; the tiny
UNets start with a plain down block (as SDXL's does), so their adapter has the SDXL
adapter's shape (``full_adapter_xl``, unshuffle by 16) at the tiny widths. It is saved
as a diffusers folder or as one file in TencentARC's original layout (``conv_in``,
``body.<level * blocks + n>``). A Union ControlNet is made from the tiny SDXL UNet
(``ControlNetUnionModel.from_unet``) with its zero convolutions randomised so that it
guides the picture.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def build_tiny_adapter(model_folder: Path, *, seed: int = 1, gray: bool = False) -> Any:
    """A ``T2IAdapter`` whose features fit the UNet of the model saved in ``model_folder``."""
    import torch
    from diffusers import T2IAdapter

    from sdstudio.engine.control.t2i_adapters import adapter_slots, unet_slots

    config = json.loads((model_folder / "unet" / "config.json").read_text("utf-8"))
    wanted = unet_slots(config, 8)
    channels = [int(c) for c in config["block_out_channels"]]
    for kind, factor in (("full_adapter", 8), ("full_adapter_xl", 16)):
        settings = {
            "adapter_type": kind,
            "in_channels": 1 if gray else 3,
            "channels": channels,
            "num_res_blocks": 2,
            "downscale_factor": factor,
        }
        if adapter_slots(settings)[: len(wanted)] == wanted:
            break
    else:
        raise ValueError("no adapter shape fits this UNet")
    torch.manual_seed(seed)
    adapter = T2IAdapter(**settings)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in adapter.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return adapter


def save_tiny_adapter(model_folder: Path, directory: Path, *, seed: int = 1) -> Path:
    """Save a tiny T2I-Adapter as a diffusers folder (``config.json`` and weights)."""
    build_tiny_adapter(model_folder, seed=seed).save_pretrained(directory, safe_serialization=True)
    return directory


def save_tiny_adapter_file(folder: Path, path: Path, *, original: bool = True) -> Path:
    """Save the adapter of a diffusers ``folder`` as one file: TencentARC's layout
    (``original``) or diffusers' key names; ``.pth`` files are pickled as torch saves
    them, others are safetensors."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    if original:
        config = json.loads((folder / "config.json").read_text("utf-8"))
        tensors = to_original_adapter_layout(tensors, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    if path.suffix == ".pth":
        torch.save(tensors, path)
    else:
        save_file(tensors, str(path))
    return path


def to_original_adapter_layout(tensors: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Diffusers adapter keys in TencentARC's layout: ``body.<level * blocks + n>`` for the
    full adapters, ``body.<level>.body.<n>`` for the light one."""
    blocks = int(config["num_res_blocks"])
    light = config["adapter_type"] == "light_adapter"
    out = {}
    for key, value in tensors.items():
        parts = key.removeprefix("adapter.").split(".")
        if parts[0] != "body":
            out[".".join(parts)] = value
            continue
        level = int(parts[1])
        if parts[2] == "resnets":
            n, rest = int(parts[3]), ".".join(parts[4:])
            if light:
                out[f"body.{level}.body.{n}.{rest}"] = value
            else:
                out[f"body.{level * blocks + n}.{rest}"] = value
        elif light:
            out[f"body.{level}.{'.'.join(parts[2:])}"] = value
        else:  # a level's channel change belongs to its first block
            out[f"body.{level * blocks}.{'.'.join(parts[2:])}"] = value
    return out


def build_tiny_union(sdxl_folder: Path, *, seed: int = 1) -> Any:
    """A ``ControlNetUnionModel`` made from the tiny SDXL model's UNet (6 control types,
    as xinsir's first Union ControlNet)."""
    import torch
    from diffusers import ControlNetUnionModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(sdxl_folder / "unet", local_files_only=True)
    made = ControlNetUnionModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    width = int(unet.config.block_out_channels[0])  # the control-type transformer's width
    config = {k: v for k, v in made.config.items() if not k.startswith("_")}
    config |= {"num_trans_channel": width, "num_proj_channel": width}
    torch.manual_seed(seed)
    union = ControlNetUnionModel.from_config({**config, "num_trans_head": 4})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in union.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block")) or (
                name.startswith("controlnet_cond_embedding.conv_out")
            ):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
            elif name == "task_embedding":
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 2.0)
    return union


def save_tiny_union(sdxl_folder: Path, directory: Path, *, seed: int = 1) -> Path:
    """Save a tiny Union ControlNet as a diffusers folder."""
    build_tiny_union(sdxl_folder, seed=seed).save_pretrained(directory, safe_serialization=True)
    return directory
