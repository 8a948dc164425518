"""Tiny ControlNets for the tiny SD 1.x model, and ControlNet headers of other kinds.

A ControlNet made from the tiny UNet (``ControlNetModel.from_unet``) starts with its
zero convolutions at zero, so it would change nothing; they are randomised here so that
it guides the picture. It is saved as a diffusers folder, as one ``.safetensors`` file
with diffusers' key names, or in lllyasviel's original layout (``control_model.`` keys,
as A1111 keeps ControlNets). Header-only files (shapes, no real weights) stand for the
ControlNets of other families and kinds.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any


def build_tiny_controlnet(model_folder: Path, *, seed: int = 1) -> Any:
    """A ``ControlNetModel`` made from the UNet of the tiny model saved in ``model_folder``."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(model_folder / "unet", local_files_only=True)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in controlnet.named_parameters():
            zero = name.startswith(("controlnet_down_blocks", "controlnet_mid_block"))
            if zero or name.startswith("controlnet_cond_embedding.conv_out"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return controlnet


def save_tiny_controlnet(model_folder: Path, directory: Path, *, seed: int = 1) -> Path:
    """Save a tiny ControlNet as a diffusers folder (``config.json`` and weights)."""
    controlnet = build_tiny_controlnet(model_folder, seed=seed)
    controlnet.save_pretrained(directory, safe_serialization=True)
    return directory


def save_tiny_controlnet_file(folder: Path, path: Path, *, original: bool = False) -> Path:
    """Save the ControlNet of a diffusers ``folder`` as one ``.safetensors`` file, with
    diffusers' key names or (``original``) lllyasviel's ``control_model.`` layout."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    if original:
        config = json.loads((folder / "config.json").read_text("utf-8"))
        tensors = to_original_layout(tensors, config["layers_per_block"])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def to_original_layout(tensors: dict[str, Any], layers: int) -> dict[str, Any]:
    """Diffusers ControlNet keys in lllyasviel's layout (the UNet part as in an LDM
    checkpoint's ``input_blocks``/``middle_block``, under ``control_model.``)."""
    from sdstudio.testing.checkpoints import UNET_PREFIX, convert_unet_to_original

    unet_part = {k: v for k, v in tensors.items() if not k.startswith("controlnet_")}
    converted = convert_unet_to_original(unet_part, {"layers_per_block": layers})
    out = {f"control_model.{k.removeprefix(UNET_PREFIX)}": v for k, v in converted.items()}
    hint = "controlnet_cond_embedding."
    blocks = {int(k.split(".")[2]) for k in tensors if k.startswith(hint + "blocks.")}
    places = {"conv_in": 0, "conv_out": 14}  # lllyasviel's places, whatever the block count
    places |= {f"blocks.{index}": 2 * (index + 1) for index in blocks}
    for name, index in places.items():
        for kind in ("weight", "bias"):
            out[f"control_model.input_hint_block.{index}.{kind}"] = tensors[f"{hint}{name}.{kind}"]
    zero = sorted(
        {int(k.split(".")[1]) for k in tensors if k.startswith("controlnet_down_blocks.")}
    )
    for index in zero:
        for kind in ("weight", "bias"):
            out[f"control_model.zero_convs.{index}.0.{kind}"] = tensors[
                f"controlnet_down_blocks.{index}.{kind}"
            ]
    for kind in ("weight", "bias"):
        out[f"control_model.middle_block_out.0.{kind}"] = tensors[f"controlnet_mid_block.{kind}"]
    return out


def write_header_file(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    """A safetensors file with these tensors (zeros, float16, written sparse so a full-size
    checkpoint's header takes no room): enough for header reads."""
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in shapes.items():
        size = 2
        for n in shape:
            size *= n
        header[name] = {
            "dtype": "F16",
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        file.write(struct.pack("<Q", len(raw)) + raw)
        file.truncate(8 + len(raw) + offset)
    return path


SDXL_CONTROLNET_SHAPES = {
    "controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
    "add_embedding.linear_1.weight": (8, 16),
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (8, 2048),
    "controlnet_down_blocks.0.weight": (8, 8, 1, 1),
}
"""The header of an SDXL ControlNet (diffusers' key names), at toy sizes."""

T2I_ADAPTER_SHAPES = {"adapter.body.0.resnets.0.block1.weight": (8, 8, 3, 3)}
UNION_SHAPES = {
    "controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
    "task_embedding": (8, 16),
    "control_type_proj.linear_1.weight": (8, 16),
}
FLUX_CONTROLNET_SHAPES = {
    "controlnet_x_embedder.weight": (8, 64),
    "controlnet_blocks.0.weight": (8, 8),
}
