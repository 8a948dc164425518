"""Tiny random upscaler files that spandrel recognises, in the layouts users have them.

Each model is built with spandrel's own architecture class, so its tensor names and
shapes are those of the real files, only with a few filters:

- ``esrgan``: ESRGAN's RRDBNet. ``layout="old"`` is the original ESRGAN layout
  (``model.0.weight``, ``model.1.sub.0.RDB1.conv1.0.weight``: ``ESRGAN_4x.pth``,
  ``4x-UltraSharp.pth``); ``layout="new"`` is BasicSR's (``conv_first``,
  ``body.0.rdb1.conv1``: Real-ESRGAN's ``RealESRGAN_x4plus.pth``), whose 2x models
  unshuffle the input into 12 channels first (``RealESRGAN_x2plus.pth``).
- ``compact``: Real-ESRGAN's SRVGGNetCompact (``realesr-general-x4v3.pth``), which adds
  the input, resized, to its output: its images look like the input.
- ``swinir`` and ``dat``: transformer upscalers (a minimum input size of 16 pixels).

The last convolution of the ESRGAN models is scaled and shifted to mid-grey, so that
random weights give images with detail rather than pixels clipped to black or white.
Files are ``.safetensors`` (safetensors) or ``.pth``/``.pt``/``.ckpt`` (``torch.save`` of
the plain state dict, or of ``{"params_ema": state dict}`` as Real-ESRGAN saves them).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ARCHITECTURES = ("esrgan", "compact", "swinir", "dat")


def build_tiny_upscaler(
    architecture: str = "esrgan", scale: int = 4, seed: int = 0, *, unshuffle: bool = False
) -> Any:
    """A tiny random upscaler module of spandrel's ``architecture`` class; ``unshuffle``
    makes a 2x ESRGAN as Real-ESRGAN does (a 4x network on 2x2-unshuffled input)."""
    import torch

    torch.manual_seed(seed)
    if architecture == "esrgan":
        from spandrel.architectures.ESRGAN import ESRGAN

        unshuffle = unshuffle and scale == 2
        model: Any = ESRGAN(
            in_nc=12 if unshuffle else 3,
            out_nc=3,
            num_filters=8,
            num_blocks=1,
            scale=4 if unshuffle else scale,
            shuffle_factor=2 if unshuffle else None,
        )
        last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        with torch.no_grad():
            last.weight.mul_(2.0)
            last.bias.add_(0.45)
    elif architecture == "compact":
        from spandrel.architectures.Compact import Compact

        model = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale)
    elif architecture == "swinir":
        from spandrel.architectures.SwinIR import SwinIR

        model = SwinIR(
            img_size=16,
            embed_dim=12,
            depths=[1],
            num_heads=[2],
            window_size=4,
            mlp_ratio=2.0,
            upscale=scale,
            upsampler="pixelshuffle",
        )
    elif architecture == "dat":
        from spandrel.architectures.DAT import DAT

        model = DAT(img_size=16, embed_dim=16, depth=[2], num_heads=[2], upscale=scale)
    else:
        raise ValueError(f"no tiny upscaler {architecture!r}; one of {ARCHITECTURES}")
    return model.eval()


def tiny_upscaler_state_dict(
    architecture: str = "esrgan", scale: int = 4, *, layout: str = "old", seed: int = 0
) -> dict[str, Any]:
    """The state dict of :func:`build_tiny_upscaler`, in ESRGAN's ``old`` or BasicSR's
    ``new`` layout (ESRGAN only; ``new`` takes scales 2 and 4)."""
    if layout == "new" and (architecture != "esrgan" or scale not in (2, 4)):
        raise ValueError("the new (BasicSR) layout is of 2x and 4x ESRGAN models")
    unshuffle = layout == "new" and scale == 2
    model = build_tiny_upscaler(architecture, scale, seed, unshuffle=unshuffle)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return _basicsr_names(state) if layout == "new" else state


def write_tiny_upscaler(
    path: Path,
    architecture: str = "esrgan",
    scale: int = 4,
    *,
    layout: str = "old",
    wrap: str | None = None,
    seed: int = 0,
) -> Path:
    """Save a tiny upscaler to ``path`` (its suffix gives the format); ``wrap`` puts the
    state dict of a pickle under that key (``params_ema``)."""
    import torch
    from safetensors.torch import save_file

    state = tiny_upscaler_state_dict(architecture, scale, layout=layout, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({wrap: state} if wrap else state, path)
    return path


def _basicsr_names(state: dict[str, Any]) -> dict[str, Any]:
    """Old ESRGAN names to BasicSR's RRDBNet names (the inverse of spandrel's reading)."""
    blocks = 1 + max(int(m[1]) for k in state if (m := re.match(r"model\.1\.sub\.(\d+)\.RDB", k)))
    renamed: dict[str, Any] = {}
    for key, value in state.items():
        kind = key.rsplit(".", 1)[1]
        rdb = re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", key)
        if rdb:
            renamed[f"body.{rdb[1]}.rdb{rdb[2]}.conv{rdb[3]}.{kind}"] = value
            continue
        names = {
            "model.0": "conv_first",
            f"model.1.sub.{blocks}": "conv_body",
            "model.3": "conv_up1",
            "model.6": "conv_up2",
            "model.8": "conv_hr",
            "model.10": "conv_last",
        }
        renamed[f"{names[key.rsplit('.', 1)[0]]}.{kind}"] = value
    return renamed
