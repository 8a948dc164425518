"""The number format a model runs in: bfloat16 where the hardware computes in it
natively, else the device's default.

Flow transformers (Flux, SD 3.x, Qwen-Image, Z-Image, Flux.2 Klein) and their T5 and
Qwen text encoders were trained in bfloat16; float16 overflows in some of their layers
and float32 doubles their memory. bfloat16 is used on CUDA GPUs that compute in it
natively (Ampere and newer), on Apple GPUs from macOS 14, and on CPUs with AVX512-BF16
or AMX (or Arm's BF16 extension), told on Linux by ``/proc/cpuinfo``; elsewhere the
device's default stays.

Stable Diffusion (UNet) models run in bfloat16 on such CPUs too, text encoder and VAE
included: measured on SD 1.5's architecture at 512x512 on a CPU with AMX
(``benchmarks/cpu_speed.py``), a CFG step is about 2x faster than in float32 and the
VAE decode about 3.5x (both channels-last), at a relative error of about 0.012 (UNet)
and 0.02 (VAE: 0.8 levels in 255 on average, no NaN; random weights); a CLIP text
encoder's output moves by about 0.01. On GPUs they keep float16. A VAE decode that gives NaN or
infinity in bfloat16 is done again in float32 (see
:func:`sdstudio.engine.vae.guard_cpu_decode`). ``SDSTUDIO_SD_CPU_PRECISION``
(``float32`` or ``bfloat16``) overrides the CPU's choice for these models. A precision
the user chose (``--precision``) always wins, and a re-run uses the recorded one
(:func:`rerun_device`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.engine.devices import PRECISIONS, DeviceConfig, default_precision
from sdstudio.engine.errors import DeviceError, ModelError
from sdstudio.engine.families import family

if TYPE_CHECKING:
    from sdstudio.engine.models.split_layout import SplitModel

log = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")
BF16_CPU_FLAGS = {"amx_bf16": "AMX", "avx512_bf16": "AVX512-BF16", "bf16": "Arm BF16"}
"""x86 flags (AMX-BF16, AVX512-BF16) and the Arm feature (BF16) of native bfloat16, with
their names, the fastest first."""
SD_CPU_PRECISION = "SDSTUDIO_SD_CPU_PRECISION"
"""Environment variable: the precision ``auto`` gives Stable Diffusion (UNet) models on
the CPU (``float32`` or ``bfloat16``; unset: bfloat16 where the CPU has it)."""
_RECORDED = re.compile(r"^\s*(\w+)\s*\((\w+)")


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes in bfloat16 natively, from the text of ``/proc/cpuinfo``
    (read when not given; False where there is none, as on macOS and Windows)."""
    return bool(cpu_bf16_feature(cpuinfo))


def cpu_bf16_feature(cpuinfo: str | None = None) -> str:
    """The CPU's fastest native bfloat16 feature by name (``AMX``, ``AVX512-BF16``,
    ``Arm BF16``), or ``""``: from ``cpuinfo`` as :func:`cpu_has_bf16` reads it."""
    if cpuinfo is None:
        return _linux_cpu_bf16_feature()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return next((label for flag, label in BF16_CPU_FLAGS.items() if flag in flags), "")


@functools.cache
def _linux_cpu_bf16_feature() -> str:
    try:
        text = CPUINFO.read_text("utf-8", errors="replace")
    except OSError:
        return ""
    return cpu_bf16_feature(text)


def sd_cpu_precision() -> tuple[str, str]:
    """The precision ``auto`` gives Stable Diffusion (UNet) models on the CPU, and why:
    ``("bfloat16", "the CPU has AMX")``, ``("float32", "the CPU has no native
    bfloat16")``. Raises :class:`DeviceError` for a bad ``SDSTUDIO_SD_CPU_PRECISION``."""
    forced = os.environ.get(SD_CPU_PRECISION, "").strip()
    if forced:
        if forced not in ("float32", "bfloat16"):
            raise DeviceError(
                f"{SD_CPU_PRECISION}={forced!r} is not a precision; "
                "set it to float32 or bfloat16, or unset it."
            )
        return forced, f"set by {SD_CPU_PRECISION}"
    if cpu_has_bf16():
        return "bfloat16", f"the CPU has {cpu_bf16_feature() or 'native bfloat16'}"
    return "float32", "the CPU has no native bfloat16"


def auto_precision(device: str) -> str:
    """What ``auto`` picks on ``device`` and why, in words for the About dialog and
    ``sdstudio-cli info``: ``bfloat16: the CPU has AMX``."""
    if device == "cpu":
        precision, why = sd_cpu_precision()
        if precision == "float32" and cpu_has_bf16():  # flow families still use it
            return f"float32: {why}; flow-matching models in bfloat16"
        return f"{precision}: {why}"
    flow = "bfloat16" if bf16_native(device) else default_precision(device)
    if device == "cuda":
        from sdstudio.engine.cuda_path import current_gpu, sd_gpu_precision

        sd, why = sd_gpu_precision(current_gpu())
        return f"{sd}: {why} (flow-matching models: {flow})"
    return f"{default_precision(device)} (flow-matching models: {flow})"


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
    choice, else bfloat16 for a flow family where the device has it natively, else
    on the CPU :func:`sd_cpu_precision`'s, else the device's default."""
    flow = family(family_id).flow
    if config.chosen_precision != "auto":
        precision = config.chosen_precision
    elif flow and bf16_native(config.device):
        precision = "bfloat16"
    elif not flow and config.device == "cpu" and config.cpu_bf16_unet:
        precision = sd_cpu_precision()[0]
    elif not flow and config.device == "cuda":
        from sdstudio.engine.cuda_path import current_gpu, sd_gpu_precision

        precision = sd_gpu_precision(current_gpu())[0]
    else:
        precision = default_precision(config.device)
    return config if precision == config.precision else replace(config, precision=precision)


def recorded_precision(device: str) -> tuple[str, str] | None:
    """The device and precision an image's record names (its ``device``,
    ``cpu (bfloat16)``), or None where it names none."""
    found = _RECORDED.match(device)
    if found is None or found[2] not in PRECISIONS or found[2] == "auto":
        return None
    return found[1], found[2]


def rerun_device(config: DeviceConfig, recorded: str) -> DeviceConfig:
    """``config`` for re-running an image whose record names ``recorded`` as its device,
    so that it comes out the same on the same machine: a precision the user chose wins;
    else the recorded precision, compiled or not as recorded, where it ran on this kind
    of device; a record without a
    precision (another tool's image) keeps Stable Diffusion models in float32 on the CPU,
    as before the CPU's bfloat16 was used."""
    if config.chosen_precision != "auto":
        return config
    found = recorded_precision(recorded)
    if found is None:
        return replace(config, cpu_bf16_unet=False)
    device, precision = found
    if device != config.device:
        return config
    compiled = ", compiled)" in recorded  # compiled kernels round differently
    return replace(config, precision=precision, chosen_precision=precision, compile=compiled)


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


CHANNELS_LAST = {"unet": ("bfloat16",), "vae": ("bfloat16",)}
"""The components and precisions that run channels-last on the CPU: where it measured
faster. On SD 1.5's architecture at 512x512 (AMX, alternating rounds) channels-last
made the bfloat16 UNet step 1.2-1.3x faster and the bfloat16 VAE decode about 2x; in
float32 it gained nothing for the UNet and made the decode slower. Float32 keeps its
layout, so the images made in it before come out the same on a re-run."""


def cpu_layout(pipe: Any, config: DeviceConfig, *, vae: Any = None) -> None:
    """Lay out a pipeline loaded for ``config`` as the CPU runs it fastest, in place:
    channels-last weights for the components and precisions of :data:`CHANNELS_LAST`
    (Stable Diffusion's UNet and VAE), and a VAE decode guarded against NaN in half
    precision and tiled for large images (:func:`sdstudio.engine.vae.guard_cpu_decode`).
    ``vae`` is a VAE put in later (an override); nothing changes on other devices."""
    if config.device != "cpu":
        return
    import torch

    from sdstudio.engine.vae import guard_cpu_decode

    parts = {"unet": getattr(pipe, "unet", None), "vae": vae or getattr(pipe, "vae", None)}
    for name, module in parts.items():
        dtype = getattr(module, "dtype", None)
        if module is None or parts["unet"] is None or not isinstance(dtype, torch.dtype):
            continue  # a flow family's VAE keeps the layout its images were made in
        if str(dtype).removeprefix("torch.") in CHANNELS_LAST[name]:
            module.to(memory_format=torch.channels_last)
    if parts["vae"] is not None:
        guard_cpu_decode(parts["vae"])
