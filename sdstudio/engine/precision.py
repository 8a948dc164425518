"""The number format a model runs in: bfloat16 for flow-matching families where the
hardware has it, the device's default for Stable Diffusion (UNet) models.

Flow transformers (Flux, SD 3.x, Qwen-Image, Z-Image, Flux.2 Klein) and their T5 and
Qwen text encoders were trained in bfloat16; float16 overflows in some of their layers
and float32 doubles their memory. bfloat16 is used on CUDA GPUs that compute in it
natively (Ampere and newer), on Apple GPUs from macOS 14, and on CPUs with AVX512-BF16
or AMX (or Arm's BF16 extension), told on Linux by ``/proc/cpuinfo``; elsewhere the
device's default stays. A precision the user chose (``--precision``) always wins.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from sdstudio.engine.devices import DeviceConfig, default_precision
from sdstudio.engine.errors import ModelError
from sdstudio.engine.families import family

if TYPE_CHECKING:
    from sdstudio.engine.models.split_layout import SplitModel

log = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
"""x86 flags (AVX512-BF16, AMX-BF16) and the Arm feature (BF16) of native bfloat16."""


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes in bfloat16 natively, from the text of ``/proc/cpuinfo``
    (read when not given; False where there is none, as on macOS and Windows)."""
    if cpuinfo is None:
        return _linux_cpu_has_bf16()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("flags", "features") and BF16_CPU_FLAGS & set(value.split()):
            return True
    return False


@functools.cache
def _linux_cpu_has_bf16() -> bool:
    try:
        text = CPUINFO.read_text("utf-8", errors="replace")
    except OSError:
        return False
    return cpu_has_bf16(text)


def bf16_native(device: str) -> bool:
    """Whether ``device`` (``cuda``, ``mps`` or ``cpu``) computes in bfloat16 natively."""
    if device == "cpu":
        return cpu_has_bf16()
    import torch

    if device == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(False))
    if device == "mps":
        backend = getattr(torch.backends, "mps", None)
        newer = getattr(backend, "is_macos_or_newer", None)
        return bool(backend is not None and backend.is_available() and newer and newer(14, 0))
    return False


def family_precision(config: DeviceConfig, family_id: str) -> DeviceConfig:
    """``config`` with the precision a model of ``family_id`` runs in: the user's
    choice, else bfloat16 for a flow family where the device has it natively, else the
    device's default."""
    if config.chosen_precision != "auto":
        precision = config.chosen_precision
    elif family(family_id).flow and bf16_native(config.device):
        precision = "bfloat16"
    else:
        precision = default_precision(config.device)
    return config if precision == config.precision else replace(config, precision=precision)


def model_family_id(path: Path, split: SplitModel | None = None) -> str:
    """The family id of a model before it is loaded: a split model's transformer, a
    diffusers folder's ``model_index.json``; ``""`` for a checkpoint file (the
    Stable Diffusion families) or a folder that cannot be read."""
    if split is not None:
        return split.family.id
    if not path.is_dir():
        return ""
    from sdstudio.engine.models.families import detect_folder_family

    with contextlib.suppress(ModelError):
        return detect_folder_family(path).family.value
    return ""


def model_precision(
    config: DeviceConfig, path: Path, split: SplitModel | None = None
) -> DeviceConfig:
    """:func:`family_precision` for the model at ``path`` (or assembled from ``split``)."""
    return family_precision(config, model_family_id(path, split))
