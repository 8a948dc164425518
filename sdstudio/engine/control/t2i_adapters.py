"""T2I-Adapters: recognising their files, loading them offline, and guiding a UNet with
their features.

An adapter is a small network that reads the control map once per image and gives one
feature map per UNet down block, added inside the UNet (diffusers'
``down_intrablock_additional_residuals``). Two layouts exist:

- diffusers' (folders with a ``T2IAdapter`` config, and SDXL adapters kept as one file):
  ``adapter.conv_in``, ``adapter.body.<level>.resnets.<n>``;
- TencentARC's originals (``t2iadapter_*_sd14v1.pth``, ``*_sd15v2.pth``, CoAdapters):
  ``conv_in``, ``body.<level * blocks + n>`` for the full adapter, and
  ``body.<level>.body.<n>`` with ``in_conv``/``out_conv`` for the light (colour) one.

The config is read from the shapes: the first convolution takes ``channels x f**2``
inputs after a pixel unshuffle by ``f`` (8 for SD 1.x adapters, 16 for SDXL's; 1 channel
for the sketch adapters, which read a grayscale map). Originals that diffusers' adapter
classes cannot hold (3x3 skip convolutions, learned downsampling, the style adapter and
the CoAdapter fuser) are refused with the reason.

diffusers' own adapter pipelines cannot run here: the SD 1.x one has no per-step callback
(progress, previews, cancelling) and neither runs image-to-image or inpainting. So the
features are added by a forward pre-hook on the UNet of whichever pipeline runs (the
plain one or a ControlNet pipeline, so adapters and ControlNets mix), only for the steps
between the unit's start and end, by the same rule as diffusers' ControlNet pipelines.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sdstudio.engine.errors import InvalidRequest, ModelError

_FACTORS = {64: 8, 256: 16}
"""Input channels per colour channel after the pixel unshuffle -> the unshuffle factor."""


def looks_like_adapter(keys: Iterable[str]) -> bool:
    """Whether tensor names are a T2I-Adapter's (either layout)."""
    keys = list(keys)
    if any(key.startswith("adapter.body.") for key in keys):
        return True
    body = [key for key in keys if key.startswith("body.")]
    return bool(body) and all(key.startswith(("body.", "conv_in.")) for key in keys)


def adapter_config(shapes: Mapping[str, Any], name: str = "The file") -> dict[str, Any]:
    """The ``T2IAdapter`` config of a file's tensors (names to shapes, or header entries
    with a ``shape``); :class:`ModelError` for a layout diffusers cannot hold."""
    plain = {
        key.removeprefix("adapter."): _shape(value)
        for key, value in shapes.items()
        if key != "__metadata__"
    }
    diffusers = any(key.startswith("adapter.") for key in shapes)
    odd = [key for key in plain if ".skep." in key or ".down_opt." in key]
    if odd:
        raise ModelError(
            f"{name} is a T2I-Adapter of a layout that cannot run ({odd[0]}: skip or "
            "downsampling convolutions); use TencentARC's released adapters or a diffusers one."
        )
    if any(".out_conv." in key for key in plain):
        return _light_config(plain, name, diffusers)
    conv_in = plain.get("conv_in.weight", ())
    if len(conv_in) != 4:
        raise ModelError(f"{name} is an incomplete T2I-Adapter (it has no conv_in).")
    in_channels, factor = _input(conv_in[1], name)
    if diffusers:
        levels = _indices(plain, "body.")
        blocks = len(_indices(plain, "body.0.resnets."))
        channels = [plain[f"body.{i}.resnets.0.block1.weight"][0] for i in levels]
    else:
        outs = [plain[f"body.{n}.block1.weight"][0] for n in _indices(plain, "body.")]
        blocks = _blocks_per_level(outs)
        channels = outs[::blocks]
    for key, shape in plain.items():
        if key.endswith("block2.weight") and shape[2:] != (1, 1):
            raise ModelError(
                f"{name} is a T2I-Adapter with {shape[2]}x{shape[3]} convolutions where "
                "diffusers' adapter has 1x1 ones; it cannot run."
            )
    kind = "full_adapter_xl" if factor == 16 else "full_adapter"
    return _config(kind, in_channels, channels, blocks, factor)


def to_diffusers_keys(state: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """An adapter's tensors under diffusers' names (TencentARC's layout converted; a
    diffusers layout as it is)."""
    if any(key.startswith("adapter.") for key in state):
        return dict(state)
    blocks = int(config["num_res_blocks"])
    light = config["adapter_type"] == "light_adapter"
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] != "body":
            out[f"adapter.{key}"] = value
        elif light and parts[2] == "body":  # body.<level>.body.<n>.<conv>
            out[f"adapter.body.{parts[1]}.resnets.{'.'.join(parts[3:])}"] = value
        elif light:
            out[f"adapter.{key}"] = value
        else:  # body.<level * blocks + n>.<conv>
            level, n = divmod(int(parts[1]), blocks)
            rest = ".".join(parts[2:])
            if parts[2] == "in_conv":
                out[f"adapter.body.{level}.{rest}"] = value
            else:
                out[f"adapter.body.{level}.resnets.{n}.{rest}"] = value
    return out


def adapter_family(config: Mapping[str, Any]) -> tuple[str, str]:
    """``(family, label)`` of an adapter: SDXL's unshuffle by 16, SD 1.x's by 8 at SD's
    320 channels; ``unknown`` otherwise (checked against the UNet once loaded)."""
    channels = list(config.get("channels", ()))
    if config.get("adapter_type") == "full_adapter_xl" and channels[:1] == [320]:
        return "sdxl", "SDXL"
    if channels[:1] == [320]:
        return "sd1", "SD 1.x"
    return "unknown", "Unknown"


def load_adapter(path: Any, *, folder: bool, dtype: Any) -> Any:
    """The ``T2IAdapter`` at ``path`` (a diffusers folder or one file, either layout)."""
    from diffusers import T2IAdapter

    if folder:
        return T2IAdapter.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
    from sdstudio.engine.control.controlnets import _state_dict

    state = _state_dict(path)
    config = adapter_config({k: tuple(v.shape) for k, v in state.items()}, path.name)
    adapter: Any = T2IAdapter(**config)
    missing, unexpected = adapter.load_state_dict(to_diffusers_keys(state, config), strict=False)
    if missing or unexpected:
        names = ", ".join([*missing, *unexpected][:3])
        raise ModelError(f"The T2I-Adapter {path.name} does not load ({names}).")
    return adapter.to(dtype)


def check_fits(adapter: Any, unet: Any, vae_factor: int, name: str) -> None:
    """Refuse an adapter whose features do not match the UNet's blocks."""
    wanted = unet_slots(unet.config, vae_factor)
    given = adapter_slots(adapter.config)
    if given[: len(wanted)] != wanted:
        raise InvalidRequest(
            f"The T2I-Adapter {name} does not fit the model (another family or size); "
            "choose an adapter made for this model's family."
        )


def adapter_slots(config: Mapping[str, Any]) -> list[tuple[int, int]]:
    """Each feature's channels and scale (image pixels per feature pixel)."""
    channels = list(config["channels"])
    factor = int(config["downscale_factor"])
    kind = config["adapter_type"]
    if kind == "light_adapter":
        channels.append(channels[-1])
    if kind == "full_adapter_xl":
        return [(c, factor * (2 if i >= 2 else 1)) for i, c in enumerate(channels)]
    return [(c, factor * 2**i) for i, c in enumerate(channels)]


def unet_slots(config: Mapping[str, Any], vae_factor: int) -> list[tuple[int, int]]:
    """The channels and scale of what each UNet down block adds an adapter feature to:
    inside a cross-attention block before its downsampler, after a plain one."""
    kinds = list(config["down_block_types"])
    slots, scale = [], vae_factor
    for index, (kind, channels) in enumerate(zip(kinds, config["block_out_channels"], strict=True)):
        last = index == len(kinds) - 1
        if "CrossAttn" in kind:
            slots.append((int(channels), scale))
        if not last:
            scale *= 2
        if "CrossAttn" not in kind:
            slots.append((int(channels), scale))
    return slots


@dataclass(frozen=True, slots=True)
class AdapterUnit:
    """One adapter of a generation with its control map and its part of the steps."""

    model: Any
    image: Any
    """The control map (a PIL image at the generation's size)."""
    weight: float
    start: float
    end: float


class AdapterGuided:
    """A pipeline that adds the features of T2I-Adapters in its UNet: called with
    ``t2i_adapters`` (a list of :class:`AdapterUnit`) beside its own arguments; every
    other attribute is the pipeline's."""

    def __init__(self, pipe: Any) -> None:
        object.__setattr__(self, "pipe", pipe)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.pipe, name, value)

    def __call__(self, *, t2i_adapters: list[AdapterUnit], **kwargs: Any) -> Any:
        features = [(unit, _features(unit)) for unit in t2i_adapters if unit.weight > 0]
        step = [0]
        inner = kwargs.pop("callback_on_step_end", None)

        def counting(pipe: Any, index: int, timestep: Any, values: dict[str, Any]) -> Any:
            step[0] = index + 1
            return inner(pipe, index, timestep, values) if inner is not None else values

        def add(_module: Any, args: tuple[Any, ...], values: dict[str, Any]) -> Any:
            total = getattr(self.pipe, "_num_timesteps", 0) or 1
            index = step[0]
            added: list[Any] | None = None
            for unit, feats in features:
                if index / total < unit.start or (index + 1) / total > unit.end:
                    continue
                if added is not None:
                    feats = [a + f for a, f in zip(added, feats, strict=True)]
                added = feats
            if added is None:
                return None
            sample = args[0] if args else values["sample"]
            repeat = sample.shape[0] // added[0].shape[0]
            residuals = [f.to(sample.dtype).repeat(repeat, 1, 1, 1) for f in added]
            return args, {**values, "down_intrablock_additional_residuals": residuals}

        handle = self.pipe.unet.register_forward_pre_hook(add, with_kwargs=True)
        try:
            return self.pipe(callback_on_step_end=counting, **kwargs)
        finally:
            handle.remove()


def _features(unit: AdapterUnit) -> list[Any]:
    """The adapter's features of the unit's map, times its weight."""
    import numpy as np
    import torch

    adapter = unit.model
    factor = int(adapter.config.downscale_factor)
    width, height = unit.image.size
    if width % factor or height % factor:
        raise InvalidRequest(
            f"A T2I-Adapter needs a width and height that are multiples of {factor}; "
            f"{width}x{height} is not."
        )
    gray = int(adapter.config.in_channels) == 1
    pixels = np.asarray(unit.image.convert("L" if gray else "RGB"), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(pixels[..., None] if gray else pixels).permute(2, 0, 1)[None]
    parameter = next(adapter.parameters())
    with torch.no_grad():
        feats = adapter(tensor.to(parameter.device, parameter.dtype))
    return [f * unit.weight for f in feats]


def _light_config(plain: dict[str, tuple[int, ...]], name: str, diffusers: bool) -> dict[str, Any]:
    levels = _indices(plain, "body.")
    inner = "resnets" if diffusers else "body"
    blocks = len(_indices(plain, f"body.0.{inner}."))
    outs = [plain[f"body.{i}.out_conv.weight"][0] for i in levels]
    mids = [plain[f"body.{i}.in_conv.weight"][0] for i in levels]
    first = plain["body.0.in_conv.weight"][1]
    in_channels, factor = _input(first, name)
    if len(outs) < 2 or outs[-1] != outs[-2] or mids != [c // 4 for c in outs]:
        raise ModelError(
            f"{name} is a light T2I-Adapter of a shape diffusers' light adapter cannot hold."
        )
    return _config("light_adapter", in_channels, outs[:-1], blocks, factor)


def _config(kind: str, in_channels: int, channels: list[int], blocks: int, factor: int) -> dict:
    if not channels or blocks < 1:
        raise ModelError("The T2I-Adapter has no blocks.")
    return {
        "adapter_type": kind,
        "in_channels": in_channels,
        "channels": [int(c) for c in channels],
        "num_res_blocks": blocks,
        "downscale_factor": factor,
    }


def _input(channels: int, name: str) -> tuple[int, int]:
    """``(image channels, unshuffle factor)`` of the first convolution's input width."""
    for per, factor in _FACTORS.items():
        if channels in (per, 3 * per):
            return channels // per, factor
    raise ModelError(
        f"{name} is a T2I-Adapter whose input ({channels} channels) is no pixel unshuffle "
        "by 8 or 16 of a colour or grayscale map; it cannot run."
    )


def _indices(plain: Mapping[str, Any], prefix: str) -> list[int]:
    found = {key[len(prefix) :].split(".")[0] for key in plain if key.startswith(prefix)}
    numbers = sorted(int(n) for n in found if n.isdigit())
    if numbers != list(range(len(numbers))):
        raise ModelError("The T2I-Adapter's blocks are not numbered in order.")
    return numbers


def _blocks_per_level(outs: list[int]) -> int:
    """The resnet blocks per level of an original full adapter, from the run lengths of
    equal output widths (levels of equal width share a run)."""
    if not outs:
        raise ModelError("The T2I-Adapter has no blocks.")
    runs, count = [], 1
    for before, after in itertools.pairwise(outs):
        if after == before:
            count += 1
        else:
            runs.append(count)
            count = 1
    runs.append(count)
    return math.gcd(*runs)


def _shape(entry: Any) -> tuple[int, ...]:
    if isinstance(entry, dict):
        entry = entry.get("shape", ())
    return tuple(int(n) for n in entry) if isinstance(entry, (list, tuple)) else ()
