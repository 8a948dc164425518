"""Choosing the device and number format a pipeline runs in.

The order is CUDA, then Apple's MPS, then the CPU. Half precision is used
where it is safe and fast (CUDA and MPS); on the CPU float16 is slow and poorly
supported, so a CPU runs in bfloat16 where it computes in it natively (AMX,
AVX512-BF16, Arm's BF16) and in float32 elsewhere. Flow-matching families (Flux.1,
Flux.2, SD 3.x, Qwen-Image, Z-Image) run in bfloat16 wherever the hardware has it: see
:mod:`sdstudio.engine.precision`, which picks the number format per model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sdstudio.engine.errors import DeviceError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """Where and in which number format a pipeline runs."""

    device: str
    precision: str
    attention_slicing: bool = False
    chosen_precision: str = "auto"
    """The precision the user asked for (``auto``: chosen per device and model family)."""
    cpu_bf16_unet: bool = True
    """Whether ``auto`` may pick bfloat16 for a Stable Diffusion (UNet) model on a CPU
    that has it. False re-runs an image whose record names no precision as sdstudio
    made such images before it knew the CPU's bfloat16: in float32."""
    compile: bool = False
    """Whether the denoiser is compiled with ``torch.compile`` (see
    :mod:`sdstudio.engine.compiled`)."""

    @property
    def dtype(self) -> torch.dtype:
        """The torch dtype for :attr:`precision`."""
        import torch

        dtype: torch.dtype = getattr(torch, self.precision)
        return dtype

    def describe(self) -> str:
        """A short human-readable form, such as ``cuda (float16)`` or ``cuda (float16,
        compiled)``: what an image's record names as its device."""
        compiled = ", compiled" if self.compile else ""
        return f"{self.device} ({self.precision}{compiled})"


def default_precision(device: str) -> str:
    """The precision of Stable Diffusion (UNet) models on ``device`` without native
    bfloat16: float32 on the CPU, float16 on GPUs (for the CPU's own choice, see
    :func:`sdstudio.engine.precision.family_precision`)."""
    return "float32" if device == "cpu" else "float16"


def choose_device(
    device: str = "auto", precision: str = "auto", *, compile: bool = False
) -> DeviceConfig:
    """Pick the device and precision, honouring explicit choices.

    Raises :class:`DeviceError` when an explicitly requested device is not
    available here, or the names are unknown.
    """
    import torch

    if device not in DEVICES:
        raise DeviceError(f"Unknown device {device!r}; choose one of: {', '.join(DEVICES)}.")
    if precision not in PRECISIONS:
        raise DeviceError(
            f"Unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}."
        )
    cuda = torch.cuda.is_available()
    mps = _mps_available()
    if device == "auto":
        device = "cuda" if cuda else "mps" if mps else "cpu"
    elif device == "cuda" and not cuda:
        raise DeviceError("CUDA was requested but no CUDA GPU is available to this torch build.")
    elif device == "mps" and not mps:
        raise DeviceError("MPS was requested but Apple's Metal backend is not available here.")
    return DeviceConfig(
        device=device,
        precision=default_precision(device) if precision == "auto" else precision,
        attention_slicing=device == "mps",
        chosen_precision=precision,
        compile=compile,
    )


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
