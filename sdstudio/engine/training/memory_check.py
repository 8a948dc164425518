"""Will a DreamBooth run fit in memory? An estimate before any weight is loaded.

Fine-tuning a whole UNet needs several times the model's size: a LoRA run does not, so
only DreamBooth is checked. The estimate, in bytes, from the parameter counts P read
from the model's headers (no tensor is read, torch is not imported for it):

* trained weights (the UNet, and the text encoders with ``train_text_encoder``), kept
  in float32 whatever the mixed precision: 4·P, their gradients 4·P, and AdamW's two
  moments 8·P (bitsandbytes' AdamW8bit: 2·P), so 16·P (10·P with 8-bit AdamW);
* frozen weights: the VAE in float32 (4·P, as training encodes with it), the text
  encoders that are not trained at the weight precision (2·P with fp16/bf16, else 4·P);
* activations kept for the backward pass: :data:`ACTIVATIONS_512` per image of 512×512
  pixels, scaled by the batch size and the pixel count; a fifth of that with gradient
  checkpointing, half of it with fp16/bf16 mixed precision;
* :data:`OVERHEAD` for the runtime (CUDA context, allocator slack, the batch itself).

The activation figure was measured by summing the tensors autograd saves in one
forward pass of the real UNets built on the meta device from the shipped configs
(SD 1.5 at 512²: 10.4 GiB; SD 2.x at 768²: 25.5 GiB; SDXL at 1024²: 44.8 GiB, all
about 11 GiB per 512² image), with gradient checkpointing 0.7 GiB outside the
checkpointed blocks plus one block recomputed at a time. For SD 1.5 at 512×512, batch 1,
float32 and AdamW that gives about 26 GiB; with gradient checkpointing, 8-bit AdamW
and bf16 about 11 GiB. Attention grows faster than the pixel count, so large
resolutions are underestimated somewhat; it is a guide, which ``--skip-memory-check``
overrides.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sdstudio.engine.errors import ModelError

if TYPE_CHECKING:
    from sdstudio.engine.training.dreambooth_options import DreamboothOptions

log = logging.getLogger(__name__)

GIB = 1024**3
ACTIVATIONS_512 = 11 * GIB
"""Activation bytes kept for backward per 512×512 image (float32, no checkpointing)."""
CHECKPOINTING_SHARE = 0.2
MIXED_PRECISION_SHARE = 0.5
OVERHEAD = 1 * GIB
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIXES = ("cond_stage_model.", "conditioner.embedders.")
UNSAFE_SHARES = {"unet": 0.81, "vae": 0.08, "text": 0.11}
"""SD 1.5's split of its parameters, used for a pickle checkpoint whose header cannot be
read without unpickling it: its size (assumed half precision) is split this way."""


@dataclass(frozen=True, slots=True)
class ParameterCounts:
    """Parameters of a model's parts."""

    unet: int
    vae: int
    text: int


@dataclass(frozen=True, slots=True)
class MemoryVerdict:
    """Whether a run fits: the estimate, what the device has, and a sentence for people."""

    needed: int
    available: int | None
    """``None`` when the device's free memory cannot be read (then the run is allowed)."""
    enough: bool
    message: str


def parameter_counts(model_path: Path) -> ParameterCounts:
    """The parameters of a single-file checkpoint (from its safetensors header) or a
    diffusers folder (from its parts' headers, or their file sizes for ``.bin`` files)."""
    from sdstudio.engine.models.families import read_safetensors_shapes

    path = Path(model_path)
    if path.is_dir():
        text = sum(_folder_count(path / name) for name in ("text_encoder", "text_encoder_2"))
        return ParameterCounts(_folder_count(path / "unet"), _folder_count(path / "vae"), text)
    if path.suffix.lower() != ".safetensors":
        try:
            elements = path.stat().st_size // 2
        except OSError as error:
            raise ModelError(f"{path.name} cannot be read: {error.strerror or error}.") from None
        return ParameterCounts(
            *(int(elements * UNSAFE_SHARES[part]) for part in ("unet", "vae", "text"))
        )
    counts = {"unet": 0, "vae": 0, "text": 0}
    for key, shape in read_safetensors_shapes(path).items():
        part = (
            "unet"
            if key.startswith(UNET_PREFIX)
            else "vae"
            if key.startswith(VAE_PREFIX)
            else "text"
            if key.startswith(TEXT_PREFIXES)
            else None
        )
        if part is not None:
            counts[part] += _numel(shape)
    return ParameterCounts(counts["unet"], counts["vae"], counts["text"])


def estimate_dreambooth_bytes(
    model_path: Path,
    *,
    train_text_encoder: bool,
    mixed_precision: str,
    batch_size: int,
    resolution: tuple[int, int] | int,
    gradient_checkpointing: bool,
    optimizer: str = "AdamW",
) -> int:
    """The memory a DreamBooth run of the model at ``model_path`` needs, in bytes (the
    module docstring gives the formula)."""
    counts = parameter_counts(model_path)
    width, height = (resolution, resolution) if isinstance(resolution, int) else resolution
    mixed = mixed_precision in ("fp16", "bf16")
    trained = counts.unet + (counts.text if train_text_encoder else 0)
    per_trained = 10 if optimizer == "AdamW8bit" else 16
    frozen = 4 * counts.vae + (0 if train_text_encoder else (2 if mixed else 4) * counts.text)
    activations = ACTIVATIONS_512 * batch_size * (width * height) / (512 * 512)
    if gradient_checkpointing:
        activations *= CHECKPOINTING_SHARE
    if mixed:
        activations *= MIXED_PRECISION_SHARE
    return int(per_trained * trained + frozen + activations + OVERHEAD)


def available_bytes(device: str) -> int | None:
    """Free memory on ``device`` (``cuda``, ``cuda:N``, ``mps``, ``cpu``), or ``None``
    when it cannot be told. Apple's GPU shares the system's memory, so ``mps`` is the
    system's."""
    if device.startswith("cuda"):
        try:
            import torch

            free, _total = torch.cuda.mem_get_info(torch.device(device))
        except (ImportError, RuntimeError, AssertionError, ValueError):
            return None
        return int(free)
    return _system_available()


def resolve_device(device: str) -> str:
    """``auto`` made concrete as training would choose it (CUDA, then MPS, then CPU)."""
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def check_dreambooth_memory(
    options: DreamboothOptions, *, device: str | None = None
) -> MemoryVerdict:
    """Whether the run ``options`` asks for fits on ``device`` (default: the options'
    device, ``auto`` resolved), with a sentence that names both figures and, when it
    does not fit, what to change."""
    base = options.base
    needed = estimate_dreambooth_bytes(
        base.model,
        train_text_encoder=options.train_text_encoder,
        mixed_precision=base.mixed_precision,
        batch_size=base.train_batch_size,
        resolution=base.buckets.resolution,
        gradient_checkpointing=base.gradient_checkpointing,
        optimizer=base.optimizer,
    )
    where = resolve_device(device or base.device)
    available = available_bytes(where)
    if available is None:
        return MemoryVerdict(
            needed,
            None,
            True,
            f"DreamBooth needs about {_gib(needed)} of memory; the free memory on {where} "
            "cannot be read, so it is not checked.",
        )
    if needed <= available:
        return MemoryVerdict(
            needed,
            available,
            True,
            f"DreamBooth needs about {_gib(needed)} of memory; {where} has {_gib(available)} free.",
        )
    advice = list(_advice(options))
    change = f" To need less: {'; '.join(advice)}." if advice else ""
    return MemoryVerdict(
        needed,
        available,
        False,
        f"DreamBooth needs about {_gib(needed)} of memory but {where} has {_gib(available)} "
        f"free.{change} --skip-memory-check trains anyway.",
    )


def _advice(options: DreamboothOptions) -> Iterable[str]:
    base = options.base
    if not base.gradient_checkpointing:
        yield "--gradient-checkpointing"
    if base.optimizer != "AdamW8bit":
        yield "--optimizer AdamW8bit (with bitsandbytes)"
    if base.mixed_precision == "no":
        yield "--mixed-precision bf16 (or fp16 on a GPU without bfloat16)"
    if options.train_text_encoder:
        yield "leave out --train-text-encoder"
    if base.train_batch_size > 1:
        yield "a smaller --train-batch-size"
    if max(base.buckets.resolution) > 512:
        yield "a smaller --resolution"


def _gib(value: int) -> str:
    return f"{value / GIB:.1f} GiB"


def _numel(shape: Iterable[int]) -> int:
    count = 1
    for side in shape:
        count *= side
    return count


def _folder_count(folder: Path) -> int:
    """The parameters of a diffusers part folder: from safetensors headers, else from the
    size of ``.bin`` weights (two bytes per parameter for an ``fp16`` variant, else four)."""
    from sdstudio.engine.models.families import read_safetensors_shapes

    if not folder.is_dir():
        return 0
    files = sorted(folder.glob("*.safetensors"))
    plain = [f for f in files if ".fp16." not in f.name] or files
    if plain:
        return sum(_numel(s) for f in plain for s in read_safetensors_shapes(f).values())
    count = 0
    for file in folder.glob("*.bin"):
        count += file.stat().st_size // (2 if ".fp16." in file.name else 4)
    return count


def _system_available() -> int | None:
    """The system's available memory: Linux's MemAvailable, macOS's free and inactive
    pages, else the free physical pages."""
    try:
        text = Path("/proc/meminfo").read_text("ascii")
    except OSError:
        text = ""
    if match := re.search(r"^MemAvailable:\s+(\d+)\s+kB", text, re.MULTILINE):
        return int(match.group(1)) * 1024
    if sys.platform == "darwin":
        return _macos_available()
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def _macos_available() -> int | None:
    try:
        out = subprocess.run(["vm_stat"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    size = re.search(r"page size of (\d+) bytes", out)
    pages = sum(
        int(m.group(2))
        for m in re.finditer(r"^Pages (free|inactive|speculative|purgeable):\s+(\d+)", out, re.M)
    )
    return pages * int(size.group(1)) if size and pages else None
