"""The fast path on CUDA GPUs: the number format by the GPU's capability, PyTorch's
fused attention, channels-last weights and TF32 matrix products.

- **Number format**: Stable Diffusion (UNet) models run in float16 on every CUDA GPU but
  the GeForce GTX 16 series, whose half precision gives black images (float32 there);
  flow-matching families run in bfloat16 where the GPU computes in it natively (compute
  capability 8.0, Ampere, and newer), else in float16 (see
  :func:`sdstudio.engine.precision.family_precision`).
- **Attention**: diffusers' attention processors call PyTorch's
  ``scaled_dot_product_attention`` (SDPA), which picks a fused kernel: FlashAttention on
  capability 8.0+ in half precision, else the memory-efficient kernel. Neither holds the
  whole attention matrix, so attention slicing (which replaces them with a slower loop)
  is not used on CUDA; :func:`use_fused_attention` puts the SDPA processors back where a
  model came with the older ones.
- **Layout**: the UNet and VAE in half precision run channels-last, the layout the
  tensor cores' convolution kernels take without transposing.
- **TF32**: on capability 8.0+, matrix products and convolutions in float32 use the
  tensor cores' TF32 format (as PyTorch's own default for convolutions).
- **VAE**: a half-precision decode that gives NaN is done again in float32
  (:func:`sdstudio.engine.vae.guard_cpu_decode`, untiled here: the memory plan tiles).

The optional compiled denoiser (``torch.compile``) is in :mod:`~sdstudio.engine.compiled`.
Nothing here runs on another device, and nothing here needs a GPU to be imported.
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass
from typing import Any

from sdstudio.engine.devices import DeviceConfig

log = logging.getLogger(__name__)

BLACK_IN_HALF = re.compile(r"\bGTX\s*16\d\d\b", re.IGNORECASE)
"""GPUs whose float16 gives NaN (black images) in Stable Diffusion: the GeForce GTX 16
series (Turing without tensor cores). Stable Diffusion runs in float32 on them."""
FLASH_CAPABILITY = (8, 0)
"""The compute capability from which PyTorch's FlashAttention kernel and TF32 run."""
HALF = ("float16", "bfloat16")


@dataclass(frozen=True, slots=True)
class Gpu:
    """What the fast path needs to know of a CUDA GPU."""

    name: str
    capability: tuple[int, int]

    @property
    def ampere_or_newer(self) -> bool:
        """Compute capability 8.0 or newer: native bfloat16, FlashAttention, TF32."""
        return self.capability >= FLASH_CAPABILITY


def current_gpu() -> Gpu | None:
    """The CUDA GPU torch uses, or None where there is none."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return Gpu(torch.cuda.get_device_name(), (int(major), int(minor)))


def sd_gpu_precision(gpu: Gpu | None) -> tuple[str, str]:
    """The precision ``auto`` gives Stable Diffusion (UNet) models on ``gpu``, and why."""
    if gpu is not None and BLACK_IN_HALF.search(gpu.name):
        return "float32", f"half precision gives black images on the {gpu.name}"
    return "float16", "half precision on the GPU"


def attention_kernel(gpu: Gpu | None, precision: str) -> str:
    """The fused attention kernel SDPA runs on ``gpu`` in ``precision``, in words."""
    import torch

    if gpu is None:
        return "PyTorch's scaled-dot-product attention"
    backends = torch.backends.cuda
    if gpu.ampere_or_newer and precision in HALF and backends.flash_sdp_enabled():
        return "FlashAttention (PyTorch SDPA)"
    if backends.mem_efficient_sdp_enabled():
        return "memory-efficient attention (PyTorch SDPA)"
    return "PyTorch SDPA (math kernel)"


def describe_fast_path(config: DeviceConfig) -> str:
    """What the fast path does on ``config``'s device, for ``sdstudio-cli info`` and the
    About dialog: ``FlashAttention (PyTorch SDPA), channels-last, TF32``; ``""`` off CUDA."""
    if config.device != "cuda":
        return ""
    gpu = current_gpu()
    said = [attention_kernel(gpu, config.precision), "channels-last in half precision"]
    if gpu is not None and gpu.ampere_or_newer:
        said.append("TF32 for float32")
    if config.compile:
        said.append("compiled denoiser")
    return ", ".join(said)


def use_fused_attention(module: Any) -> int:
    """Give every attention of ``module`` (a UNet or transformer) that still has diffusers'
    older, unfused processor the SDPA one; returns how many were changed."""
    processors = getattr(module, "attn_processors", None)
    if not processors:
        return 0
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    old = {name for name, processor in processors.items() if type(processor) is AttnProcessor}
    if not old:
        return 0
    module.set_attn_processor(
        {name: AttnProcessor2_0() if name in old else p for name, p in processors.items()}
    )
    return len(old)


def cuda_layout(pipe: Any, config: DeviceConfig, *, vae: Any = None) -> None:
    """Lay out a pipeline loaded for ``config`` for the CUDA fast path, in place: fused
    attention, channels-last UNet and VAE in half precision, TF32, and a VAE decode
    that falls back to float32 on NaN. ``vae`` is a VAE put in later (an override);
    nothing changes on other devices."""
    if config.device != "cuda":
        return
    import torch

    from sdstudio.engine.vae import guard_cpu_decode

    gpu = current_gpu()
    if gpu is not None and gpu.ampere_or_newer:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    for name in ("unet", "transformer"):
        changed = use_fused_attention(getattr(pipe, name, None))
        if changed:
            log.info("Fused attention (SDPA) for %d attention layers of the %s", changed, name)
    parts = [getattr(pipe, "unet", None), vae or getattr(pipe, "vae", None)]
    for module in parts:
        dtype = getattr(module, "dtype", None)
        if module is None or parts[0] is None or str(dtype).removeprefix("torch.") not in HALF:
            continue  # flow families' VAEs keep their layout
        module.to(memory_format=torch.channels_last)
    if parts[1] is not None:
        guard_cpu_decode(parts[1], large_pixels=sys.maxsize)
