"""``generate``'s hires fix options: a second pass at a larger size, as A1111's
"Hires. fix" runs it. Any of them turns it on; the others take A1111's defaults
(upscale 2 with the ``Latent`` upscaler, denoising 0.7, the first pass's steps,
sampler, schedule, prompts and CFG scale)."""

from __future__ import annotations

import argparse
import re

from sdstudio.engine import samplers
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.refine.hires_settings import (
    DEFAULT_UPSCALER,
    IMAGE_UPSCALERS,
    LATENT_UPSCALERS,
    HiresFix,
    builtin_upscaler,
)

_OPTIONS = (
    "hires_scale",
    "hires_size",
    "hires_upscaler",
    "hires_steps",
    "hires_denoise",
    "hires_sampler",
    "hires_schedule",
    "hires_prompt",
    "hires_negative",
    "hires_cfg",
)


def add_hires_options(parser: argparse.ArgumentParser) -> None:
    """Add the ``--hires-...`` options."""
    group = parser.add_argument_group(
        "hires fix", "a second pass that upscales the image and repaints it (A1111's Hires. fix)"
    )
    group.add_argument(
        "--hires-scale", type=float, default=None, metavar="F", help="upscale by F (default 2)"
    )
    group.add_argument(
        "--hires-size", default=None, metavar="WxH", help="upscale to this size instead"
    )
    group.add_argument(
        "--hires-upscaler",
        default=None,
        metavar="NAME",
        help=f"{', '.join((*LATENT_UPSCALERS, *IMAGE_UPSCALERS))} (default {DEFAULT_UPSCALER}), "
        "or an upscaler file's name (4x-UltraSharp, R-ESRGAN 4x+) or path",
    )
    group.add_argument(
        "--hires-steps", type=int, default=None, help="steps of the second pass (default: --steps)"
    )
    group.add_argument(
        "--hires-denoise", type=float, default=None, metavar="F", help="denoising (default 0.7)"
    )
    group.add_argument(
        "--hires-sampler", default=None, help="sampler of the second pass (default: --sampler)"
    )
    group.add_argument(
        "--hires-schedule",
        default=None,
        help="schedule type of the second pass (default: --schedule)",
    )
    group.add_argument("--hires-prompt", default=None, help="prompt of the second pass")
    group.add_argument("--hires-negative", default=None, help="negative prompt of the second pass")
    group.add_argument(
        "--hires-cfg",
        type=float,
        default=None,
        help="CFG scale of the second pass (default: --cfg)",
    )


def hires_options(args: argparse.Namespace) -> HiresFix | None:
    """The hires fix the options ask for (``None``: none given).

    Raises :class:`InvalidRequest` with an init image, for both a scale and a size, a
    size that is not ``WxH``, an upscaler that is not built in, and an unknown sampler or
    schedule type.
    """
    given = {name for name in _OPTIONS if getattr(args, name, None) is not None}
    if not given:
        return None
    if getattr(args, "init_image", None):
        raise InvalidRequest(
            "The --hires-... options are for text-to-image (as A1111's hires fix); they do not "
            "go with --init-image."
        )
    if "hires_scale" in given and "hires_size" in given:
        raise InvalidRequest("--hires-scale and --hires-size both set the hires size; give one.")
    values: dict[str, object] = {}
    if args.hires_scale is not None:
        values["scale"] = args.hires_scale
    if args.hires_size is not None:
        values["width"], values["height"] = _size(args.hires_size)
    if args.hires_upscaler is not None:
        values["upscaler"] = _upscaler(args.hires_upscaler)
    if args.hires_steps is not None:
        values["steps"] = args.hires_steps
    if args.hires_denoise is not None:
        values["denoise"] = args.hires_denoise
    if args.hires_sampler is not None:
        values["sampler"], implied = samplers.split_sampler_name(args.hires_sampler)
        if implied != samplers.AUTOMATIC:
            values["schedule"] = implied
    if args.hires_schedule is not None:
        values["schedule"] = samplers.get_schedule(args.hires_schedule)
    for option, name in (("hires_prompt", "prompt"), ("hires_negative", "negative_prompt")):
        if getattr(args, option) is not None:
            values[name] = getattr(args, option)
    if args.hires_cfg is not None:
        values["guidance_scale"] = args.hires_cfg
    return HiresFix(**values)  # type: ignore[arg-type]


def _size(value: str) -> tuple[int, int]:
    found = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", value)
    if found is None or not int(found[1]) or not int(found[2]):
        raise InvalidRequest(f"--hires-size takes WIDTHxHEIGHT (such as 1024x1536), not {value!r}.")
    width, height = int(found[1]), int(found[2])
    if width % 8 or height % 8:
        raise InvalidRequest(f"--hires-size must be in multiples of 8, not {width}x{height}.")
    return width, height


def _upscaler(value: str) -> str:
    """A built-in upscaler as A1111 spells it; any other name or path is an upscaler
    file's, which the engine looks for before anything loads."""
    return builtin_upscaler(value) or value.strip()
