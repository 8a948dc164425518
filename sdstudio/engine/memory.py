"""Fitting a model into memory: full speed, VAE tiling, or offloading to main memory.

The plan is chosen before the model loads, from the memory its files say it needs
(:mod:`sdstudio.engine.memory_estimate`) and the memory free here, so a model larger
than the GPU loads straight into offloading instead of running out of memory. With
``auto`` the plan follows the free memory; ``fast``, ``balanced``, ``low``, ``group``
and ``sequential`` force one (the ``memory`` setting). A model that cannot fit even
with offloading is refused with what it needs and what this computer has.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.engine.devices import DeviceConfig
from sdstudio.engine.errors import ModelError, OutOfMemory
from sdstudio.engine.families import family
from sdstudio.engine.memory_estimate import GB, MemoryEstimate, estimate_model
from sdstudio.engine.settings import MEMORY_MODES as SETTINGS_MEMORY_MODES

if TYPE_CHECKING:
    from sdstudio.engine.models.split_layout import SplitModel

log = logging.getLogger(__name__)

MEMORY_MODES = SETTINGS_MEMORY_MODES
"""``low``: whole components move to the GPU when used (model offload); ``group``:
layers stream to the GPU ahead of use (diffusers' group offload); ``sequential``:
each layer moves when used, the least GPU memory and the slowest."""
OFFLOADS = {"low": "model", "group": "group", "sequential": "sequential"}
GIB = 1024**3
# Room for activations and the VAE decode beyond the weights, at about 1024 px.
FAST_HEADROOM = 3 * GIB
BALANCED_HEADROOM = 1 * GIB
STREAMED_LAYERS = 1 * GIB
"""GPU memory for the layers group offload keeps on the GPU at once (one and the next)."""
MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """How a pipeline is placed on its device."""

    offload: str = ""
    """``""`` (all on the device), ``model``, ``group`` or ``sequential``."""
    attention_slicing: bool = False
    vae_tiling: bool = False
    reason: str = ""

    @property
    def cpu_offload(self) -> bool:
        """Whether weights wait in main memory and move to the GPU when used."""
        return bool(self.offload)


def plan_memory(
    mode: str,
    device: str,
    weights: int,
    free: int | None,
    *,
    largest: int | None = None,
    headroom: int = FAST_HEADROOM,
    tiled_headroom: int | None = None,
) -> MemoryPlan:
    """Choose a plan for ``weights`` bytes of model on ``device`` with ``free`` bytes free.

    ``largest`` is the largest component (what model offload puts on the GPU at once;
    unknown: assumed to fit); ``headroom`` is the room the activations take at the
    image size, ``tiled_headroom`` the same with slicing and tiling (default: a third).
    """
    if device == "mps":
        return MemoryPlan(attention_slicing=True, reason="MPS: attention slicing")
    if device != "cuda":
        return MemoryPlan(reason=f"{device}: weights in main memory")
    tiled = max(BALANCED_HEADROOM, headroom // 3) if tiled_headroom is None else tiled_headroom
    if mode not in MEMORY_MODES:
        log.warning("Unknown memory mode %r; choosing automatically", mode)
        mode = "auto"
    if mode == "auto":
        if free is None or free >= weights + headroom:
            mode = "fast"
        elif free >= weights + tiled:
            mode = "balanced"
        elif largest is None or free >= largest + tiled:
            mode = "low"
        elif free >= STREAMED_LAYERS + tiled:
            mode = "group"
        else:
            mode = "sequential"
        reason = f"auto ({_gib(free)} free for {_gib(weights)} of weights): {mode}"
    else:
        reason = f"{mode} (chosen in settings)"
    if mode == "fast":
        return MemoryPlan(reason=reason)
    # No attention slicing on CUDA: PyTorch's fused attention (SDPA) never holds the whole
    # attention matrix, and slicing would replace it with a slower loop.
    if mode == "balanced":
        return MemoryPlan(vae_tiling=True, reason=reason)
    return MemoryPlan(OFFLOADS[mode], vae_tiling=True, reason=reason)


class Fit(enum.StrEnum):
    """Whether a model fits this computer."""

    FITS = "fits"
    OFFLOAD = "fits with offload"
    """Too large for the GPU; runs with its weights in main memory."""
    NO = "will not fit"


@dataclass(frozen=True, slots=True)
class Machine:
    """The memory free for a model on a device."""

    device: str
    vram: int | None = None
    """Free GPU memory (CUDA); None elsewhere or where it cannot be measured."""
    ram: int | None = None
    """Main memory available (what Linux calls MemAvailable); None where unknown."""


def fit(estimate: MemoryEstimate, machine: Machine) -> Fit:
    """Whether the estimated model fits ``machine``: all on the GPU, with its weights in
    main memory (offloaded), or not at all. Unknown free memory counts as enough."""
    if machine.device == "cuda":
        if machine.vram is None or estimate.weights + estimate.tiled_activations <= machine.vram:
            return Fit.FITS
        room = machine.ram
        return Fit.OFFLOAD if room is None or estimate.weights <= room else Fit.NO
    if machine.ram is None or estimate.weights + estimate.tiled_activations <= machine.ram:
        return Fit.FITS
    return Fit.NO


def refusal(name: str, estimate: MemoryEstimate, machine: Machine, *, verb: str = "needs") -> str:
    """Why a model that does not fit is not loaded, and what to do instead."""
    have = f"{format_gb(machine.ram)} of memory available"
    if machine.device == "cuda":
        ram, vram = format_gb(machine.ram), format_gb(machine.vram)
        have = f"{ram} of main memory and {vram} of GPU memory free"
    flow = family(estimate.family_id).flow
    advice = "use a GGUF (quantized) version of its transformer" if flow else "use a smaller model"
    if estimate.precision == "float32":
        advice += ", run it in bfloat16 (--precision bfloat16 on the command line)"
    return (
        f"{name} {verb} about {format_gb(estimate.total)} in {estimate.precision}; this "
        f"computer has {have}: {advice}, or close other programs."
    )


def describe(name: str, estimate: MemoryEstimate, machine: Machine, plan: MemoryPlan) -> str:
    """A status line: the model loading, what it needs, what is free, and the plan."""
    free = machine.vram if machine.device == "cuda" else machine.ram
    have = f"{format_gb(free)} free" if free is not None else "free memory unknown"
    how = {
        "": "all on the device" if machine.device != "cuda" else "all on the GPU",
        "model": "parts move to the GPU when used",
        "group": "layers stream to the GPU",
        "sequential": "each layer moves to the GPU when used (slow)",
    }[plan.offload]
    if plan.vae_tiling and not plan.offload:
        how += ", with VAE tiling"
    return f"Loading {name}: needs about {format_gb(estimate.total)}, {have}; {how}."


def plan_before_loading(
    mode: str,
    config: DeviceConfig,
    path: Path,
    name: str,
    *,
    split: SplitModel | None = None,
    on_status: Callable[[str], None] | None = None,
) -> MemoryPlan | None:
    """The plan for a model about to load, from its files; None where they cannot tell
    (then plan from the loaded weights). Raises :class:`OutOfMemory` when the model
    cannot fit here even with offloading.

    The plan is logged; ``on_status`` hears of it where it slows the model down
    (slicing and tiling, or offloading), so users know why.
    """
    try:
        estimate = estimate_model(path, config.precision, split=split)
    except (OSError, ValueError, ModelError) as error:
        log.info("Memory of %s unknown (%s); planning after loading", name, error)
        return None
    if not estimate.certain:
        log.info("Memory of %s unknown (%s); planning after loading", name, estimate.unknown)
        return None
    machine = machine_memory(config.device)
    if fit(estimate, machine) is Fit.NO:
        raise OutOfMemory(refusal(name, estimate, machine))
    plan = plan_memory(
        mode,
        config.device,
        estimate.weights,
        machine.vram,
        largest=estimate.largest,
        headroom=estimate.activations,
        tiled_headroom=estimate.tiled_activations,
    )
    message = describe(name, estimate, machine, plan)
    log.info("%s (%s)", message, plan.reason)
    if on_status and (plan.offload or plan.vae_tiling):
        on_status(message)
    return plan


@dataclass(frozen=True, slots=True)
class ModelNeeds:
    """What a model needs and whether it fits this computer, for a list of models."""

    estimate: MemoryEstimate
    fit: Fit
    note: str
    """A sentence or two for users: the figures and the verdict."""


def model_needs(
    path: Path,
    config: DeviceConfig,
    machine: Machine,
    *,
    family_id: str = "",
    text_dirs: Iterable[Path] = (),
    vae_dirs: Iterable[Path] = (),
) -> ModelNeeds:
    """The memory the model at ``path`` needs on ``config``'s device, in the precision its
    family runs in, and whether it fits ``machine``. Raises :class:`ModelError` only
    where no file of the model can be read at all."""
    from sdstudio.engine.precision import family_precision, model_family_id

    precision = family_precision(config, family_id or model_family_id(path)).precision
    estimate = estimate_model(path, precision, text_dirs=text_dirs, vae_dirs=vae_dirs)
    if not estimate.components:
        raise ModelError(f"{path.name} holds no weights sdstudio can read.")
    verdict = fit(estimate, machine)
    note = (
        f"About {format_gb(estimate.weights)} of weights in {precision} and "
        f"{format_gb(estimate.activations)} more for a {estimate.size} px image."
    )
    if verdict is Fit.NO:
        note += " " + refusal(path.stem, estimate, machine, verb="will not fit: it needs")
    elif verdict is Fit.OFFLOAD:
        note += (
            f" More than the {format_gb(machine.vram)} free on the GPU: it runs with parts of "
            "it waiting in main memory, more slowly."
        )
    else:
        note += " It fits this computer."
    if not estimate.certain:
        note += f" Not known exactly: {'; '.join(estimate.unknown)}."
    return ModelNeeds(estimate, verdict, note)


def machine_memory(device: str) -> Machine:
    """The memory free now for a model on ``device``."""
    return Machine(device, free_memory(device), ram_available())


def ram_available(meminfo: str | None = None) -> int | None:
    """Main memory available, from ``/proc/meminfo``'s MemAvailable (read when not
    given), else psutil where installed; None where neither tells."""
    if meminfo is None and MEMINFO.is_file():
        try:
            meminfo = MEMINFO.read_text("ascii", errors="replace")
        except OSError:
            meminfo = None
    if meminfo is not None:
        for line in meminfo.splitlines():
            key, _, value = line.partition(":")
            fields = value.split()
            if key == "MemAvailable" and fields and fields[0].isdigit():
                unit = 1024 if len(fields) > 1 and fields[1].lower() == "kb" else 1
                return int(fields[0]) * unit
        return None
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def weights_bytes(pipe: Any) -> int:
    """Bytes of parameters in a pipeline's model components; tied weights (a text
    encoder's embedding shared with its output layer) count once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for component in pipe.components.values():
        parameters = getattr(component, "parameters", None)
        if not callable(parameters):
            continue
        for parameter in parameters():
            key = (parameter.data_ptr(), parameter.numel())
            if key[0] and key in seen:
                continue
            seen.add(key)
            total += parameter.numel() * parameter.element_size()
    return total


def free_memory(device: str) -> int | None:
    """Free bytes on a CUDA device, or None where it cannot be measured."""
    if device != "cuda":
        return None
    import torch

    free, _total = torch.cuda.mem_get_info()
    return int(free)


def place(pipe: Any, device: str, plan: MemoryPlan) -> None:
    """Move a pipeline to its device following ``plan``.

    Called again after a component was replaced (a VAE chosen), it offloads the new
    component too.
    """
    log.info("Memory plan: %s", plan.reason)
    if plan.offload == "group" and hasattr(pipe, "enable_group_offload"):
        _group_offload(pipe, device)
    elif plan.offload in ("group", "sequential"):
        pipe.enable_sequential_cpu_offload()
    elif plan.offload == "model":
        pipe.enable_model_cpu_offload()
    else:
        pipe.to(device)
    if plan.attention_slicing:
        pipe.enable_attention_slicing()
    if plan.vae_tiling and getattr(pipe, "vae", None) is not None:
        pipe.vae.enable_tiling()


def _group_offload(pipe: Any, device: str) -> None:
    """diffusers' group offload at the level of layers, streamed ahead of use on CUDA,
    for each model component not offloaded yet."""
    import torch
    from diffusers.hooks import apply_group_offloading

    options: dict[str, Any] = {
        "onload_device": torch.device(device),
        "offload_type": "leaf_level",
        "use_stream": device == "cuda",
        "low_cpu_mem_usage": True,
    }
    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module) or _group_offloaded(component):
            continue
        enable = getattr(component, "enable_group_offload", None)
        if callable(enable):
            enable(**options)
        else:
            apply_group_offloading(component, **options)


def _group_offloaded(module: Any) -> bool:
    for submodule in module.modules():
        registry = getattr(submodule, "_diffusers_hook", None)
        if registry is not None and registry.get_hook("group_offloading") is not None:
            return True
    return False


def format_gb(value: int | None) -> str:
    """Bytes as ``33.4 GB`` (decimal gigabytes, as file sizes are shown)."""
    return "unknown" if value is None else f"{value / GB:.1f} GB"


def _gib(value: int | None) -> str:
    return "unknown" if value is None else f"{value / GIB:.1f} GiB"
