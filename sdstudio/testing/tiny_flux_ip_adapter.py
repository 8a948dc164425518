"""A tiny Flux.1 IP-Adapter in XLabs' layout, for the tiny Flux.1 models of
:mod:`sdstudio.testing.tiny_flow`.

XLabs' ``flux-ip-adapter`` keeps an image projection (``ip_adapter_proj_model.proj`` and
``.norm``: a CLIP image embedding to four tokens of the T5 width) and, for each double
block, the keys and values of those tokens
(``double_blocks.<n>.processor.ip_adapter_double_stream_k_proj`` and ``_v_proj``, with
biases). The tiny one has the same names with the tiny transformer's widths, and reads
the image embeds of the tiny CLIP vision encoder of
:mod:`sdstudio.testing.tiny_ip_adapter` (its projection width stands for ViT-L's 768).
Weights are random and large enough to change the picture.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdstudio.testing.tiny_ip_adapter import ENCODER_EMBED

TOKENS = 4


def tiny_flux_ip_adapter_tensors(model_folder: Path, *, seed: int = 5) -> dict[str, Any]:
    """The tensors of a tiny XLabs-layout IP-Adapter for the transformer of the tiny
    Flux.1 model saved in ``model_folder``."""
    import torch

    config = json.loads((model_folder / "transformer" / "config.json").read_text("utf-8"))
    context = int(config["joint_attention_dim"])
    inner = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.3) -> Any:
        return torch.randn(shape, generator=generator) * scale

    tensors: dict[str, Any] = {
        "ip_adapter_proj_model.proj.weight": rand(TOKENS * context, ENCODER_EMBED, scale=1.0),
        "ip_adapter_proj_model.proj.bias": rand(TOKENS * context, scale=0.1),
        "ip_adapter_proj_model.norm.weight": torch.ones(context),
        "ip_adapter_proj_model.norm.bias": torch.zeros(context),
    }
    for block in range(int(config["num_layers"])):
        head = f"double_blocks.{block}.processor.ip_adapter_double_stream_"
        for part in ("k", "v"):
            tensors[f"{head}{part}_proj.weight"] = rand(inner, context, scale=1.0)
            tensors[f"{head}{part}_proj.bias"] = rand(inner, scale=0.1)
    return tensors


def save_tiny_flux_ip_adapter(model_folder: Path, path: Path, *, seed: int = 5) -> Path:
    """Save a tiny Flux.1 IP-Adapter at ``path``: ``.safetensors`` as XLabs publish it, or
    a pickle (``.bin``) of the same flat names."""
    tensors = {
        k: v.contiguous() for k, v in tiny_flux_ip_adapter_tensors(model_folder, seed=seed).items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path))
        return path
    import torch

    torch.save(tensors, path)
    return path
