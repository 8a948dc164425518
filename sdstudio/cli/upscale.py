"""``sdstudio-cli upscale IMAGE --upscaler NAME --scale F``: an image made larger with an
upscaler file (ESRGAN and the like, found in the upscaler folders) or a built-in resize,
in tiles, saved as a new image in the history whose record names its source."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from sdstudio.engine.refine.upscale_settings import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    MAX_UPSCALE,
    Upscale,
)
from sdstudio.engine.request import GenerationRequest, Mode

if TYPE_CHECKING:
    from sdstudio.cli import Context


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``upscale``."""
    upscale = commands.add_parser(
        "upscale", help="make an image larger with an upscaler (ESRGAN files or Lanczos)"
    )
    upscale.add_argument("image", metavar="IMAGE")
    upscale.add_argument(
        "--upscaler",
        default="Lanczos",
        help="an upscaler file's name or path (for example 4x-UltraSharp, 'R-ESRGAN 4x+'), "
        "or Lanczos or Nearest (default: Lanczos); 'models list --kind upscaler' lists them",
    )
    upscale.add_argument(
        "--scale", type=float, default=4.0, help=f"1 to {MAX_UPSCALE:g} (default 4)"
    )
    upscale.add_argument(
        "--tile",
        type=int,
        default=DEFAULT_TILE,
        help=f"source pixels per tile side for an upscaler file (default {DEFAULT_TILE}; "
        "smaller uses less memory; 0: the whole image at once)",
    )
    upscale.add_argument("--device", default=None, choices=["auto", "cpu", "cuda", "mps"])
    upscale.add_argument("--out", default=None, help="folder for the image (default: outputs)")
    upscale.add_argument("--json", action="store_true", help="print one JSON event per line")


def upscale_request(args: argparse.Namespace) -> GenerationRequest:
    """The request of ``upscale``: the source, the upscaler and the result's size."""
    from sdstudio.engine.images import open_checked
    from sdstudio.engine.refine.upscale_job import check_upscaled_size

    settings = Upscale(upscaler=args.upscaler, scale=args.scale, tile=args.tile)
    with open_checked(args.image, what="image to upscale") as image:
        width, height = check_upscaled_size(image.width, image.height, settings.scale)
    return GenerationRequest(
        model="",
        prompt="",
        mode=Mode.UPSCALE,
        init_image=str(Path(args.image).resolve()),
        width=width,
        height=height,
        upscale=settings,
    )


def run_upscale(args: argparse.Namespace, context: Context) -> int:
    """``upscale``: the image is written and recorded like a generated one."""
    from sdstudio.cli.generate import run_request

    args.precision, args.config = "auto", None  # the run options generate has
    return run_request(upscale_request(args), args, context)


def add_sd_upscale_options(parser: argparse.ArgumentParser) -> None:
    """``generate``'s SD upscale: the init image upscaled, then repainted in tiles of
    ``--width`` x ``--height`` (default: the model's size) with ``--strength``."""
    parser.add_argument(
        "--sd-upscale",
        type=float,
        default=None,
        metavar="SCALE",
        help="upscale the init image by SCALE, then repaint it tile by tile (A1111's SD "
        "upscale; tiles of --width x --height, repainted with --strength)",
    )
    parser.add_argument(
        "--sd-upscale-upscaler",
        default="Lanczos",
        metavar="NAME",
        help="the upscaler before repainting: a file's name or path, or Lanczos (default)",
    )
    parser.add_argument(
        "--sd-upscale-overlap",
        type=int,
        default=DEFAULT_OVERLAP,
        help=f"pixels the tiles overlap, blended (default {DEFAULT_OVERLAP})",
    )


def sd_upscale_option(args: argparse.Namespace) -> Upscale | None:
    """The SD upscale ``generate`` asks for; options that have nothing to act on are
    refused rather than ignored."""
    from sdstudio.engine.errors import InvalidRequest

    scale = getattr(args, "sd_upscale", None)
    if scale is None:
        if args.sd_upscale_upscaler != "Lanczos" or args.sd_upscale_overlap != DEFAULT_OVERLAP:
            raise InvalidRequest(
                "--sd-upscale-upscaler and --sd-upscale-overlap need --sd-upscale."
            )
        return None
    if not args.init_image or args.mask:
        raise InvalidRequest("--sd-upscale repaints an --init-image (without --mask).")
    return Upscale(args.sd_upscale_upscaler, scale, overlap=args.sd_upscale_overlap)
