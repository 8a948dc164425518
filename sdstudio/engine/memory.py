"""Fitting a model into the GPU's memory: full speed, slicing and tiling, or CPU offload.

With ``auto`` the choice follows the free VRAM measured when the model loads;
``fast``, ``balanced`` and ``low`` force one (the ``memory`` setting).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MEMORY_MODES = ("auto", "fast", "balanced", "low")
GIB = 1024**3
# Room for activations and the VAE decode beyond the weights, at about 1024 px.
FAST_HEADROOM = 3 * GIB
BALANCED_HEADROOM = 1 * GIB


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """How a pipeline is placed on its device."""

    cpu_offload: bool = False
    attention_slicing: bool = False
    vae_tiling: bool = False
    reason: str = ""


def plan_memory(mode: str, device: str, weights: int, free: int | None) -> MemoryPlan:
    """Choose a plan for ``weights`` bytes of model on ``device`` with ``free`` bytes free."""
    if device == "mps":
        return MemoryPlan(attention_slicing=True, reason="MPS: attention slicing")
    if device != "cuda":
        return MemoryPlan(reason=f"{device}: weights in main memory")
    if mode == "auto":
        if free is None or free >= weights + FAST_HEADROOM:
            mode = "fast"
        elif free >= weights + BALANCED_HEADROOM:
            mode = "balanced"
        else:
            mode = "low"
        reason = f"auto ({_gib(free)} free for {_gib(weights)} of weights): {mode}"
    else:
        reason = f"{mode} (chosen in settings)"
    if mode == "fast":
        return MemoryPlan(reason=reason)
    if mode == "balanced":
        return MemoryPlan(attention_slicing=True, vae_tiling=True, reason=reason)
    return MemoryPlan(cpu_offload=True, attention_slicing=True, vae_tiling=True, reason=reason)


def weights_bytes(pipe: Any) -> int:
    """Bytes of parameters in a pipeline's model components."""
    total = 0
    for component in pipe.components.values():
        parameters = getattr(component, "parameters", None)
        if callable(parameters):
            total += sum(p.numel() * p.element_size() for p in parameters())
    return total


def free_memory(device: str) -> int | None:
    """Free bytes on a CUDA device, or None where it cannot be measured."""
    if device != "cuda":
        return None
    import torch

    free, _total = torch.cuda.mem_get_info()
    return int(free)


def place(pipe: Any, device: str, plan: MemoryPlan) -> None:
    """Move a pipeline to its device following ``plan``."""
    log.info("Memory plan: %s", plan.reason)
    if plan.cpu_offload:
        pipe.enable_model_cpu_offload()
    else:
        pipe.to(device)
    if plan.attention_slicing:
        pipe.enable_attention_slicing()
    if plan.vae_tiling and getattr(pipe, "vae", None) is not None:
        pipe.vae.enable_tiling()


def _gib(value: int | None) -> str:
    return "unknown" if value is None else f"{value / GIB:.1f} GiB"
