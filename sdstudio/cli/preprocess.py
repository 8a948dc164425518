"""``sdstudio-cli preprocess IMAGE --preprocessor NAME --out FILE``: the control map a
ControlNet unit would read, written as a PNG, to look at or to use later with
preprocessor ``none``."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import TYPE_CHECKING

from sdstudio.engine.control.units import ControlResize, ControlUnit
from sdstudio.engine.errors import InvalidRequest

if TYPE_CHECKING:
    from sdstudio.cli import Context

MAP_MODEL = "(none)"
"""The model of the unit a map is made for: a map needs none, and it is not read."""


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``preprocess``."""
    from sdstudio.engine.control.preprocessor_modules import AVAILABLE

    parser = commands.add_parser(
        "preprocess", help="make a ControlNet control map from an image (canny, depth...)"
    )
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument(
        "--preprocessor",
        required=True,
        metavar="NAME",
        help=f"A1111's module name: {', '.join(AVAILABLE)}",
    )
    parser.add_argument(
        "--threshold-a",
        type=float,
        default=None,
        metavar="F",
        help="the module's first setting (canny: low threshold; default: A1111's)",
    )
    parser.add_argument(
        "--threshold-b",
        type=float,
        default=None,
        metavar="F",
        help="the module's second setting (canny: high threshold; default: A1111's)",
    )
    parser.add_argument(
        "--resolution",
        type=int,
        default=512,
        metavar="N",
        help="the short side the module works at (A1111's Processor Res; default 512)",
    )
    parser.add_argument(
        "--width", type=int, default=None, help="fit the map to this size (with --height)"
    )
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument(
        "--resize",
        default=ControlResize.CROP.value,
        choices=[mode.value for mode in ControlResize],
        help="how the map is fitted to --width x --height (default crop)",
    )
    parser.add_argument(
        "--pixel-perfect",
        action="store_true",
        help="work at the size the image takes in --width x --height (A1111's Pixel Perfect)",
    )
    parser.add_argument("--mask", default=None, help="white = repaint (the inpaint modules)")
    parser.add_argument("--seed", type=int, default=0, help="the shuffle's seed (default 0)")
    parser.add_argument("--out", required=True, metavar="FILE", help="the PNG to write")
    parser.add_argument("--json", action="store_true", help="print one JSON event per line")


def run_preprocess(args: argparse.Namespace, context: Context) -> int:
    """``preprocess``: the map is written to ``--out``."""
    from PIL import Image

    from sdstudio.engine.control.annotators import Annotators, annotator_folders
    from sdstudio.engine.control.preprocessors import (
        check_preprocessor,
        control_map,
        needs_mask,
        preprocess,
    )
    from sdstudio.engine.fileio import write_atomically
    from sdstudio.engine.images import open_image

    if (args.width is None) != (args.height is None):
        raise InvalidRequest("Give both --width and --height, or neither (the map's own size).")
    if args.pixel_perfect and args.width is None:
        raise InvalidRequest("--pixel-perfect needs --width and --height (the generation's size).")
    for name in ("width", "height"):
        value = getattr(args, name)
        if value is not None and not 8 <= value <= 8192:
            raise InvalidRequest(f"--{name} {value} is out of range: 8 to 8192.")
    if args.seed < 0:
        raise InvalidRequest(f"--seed {args.seed} is negative; use 0 or more.")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise InvalidRequest(f"--out {out} must be a .png file: a control map is kept lossless.")
    image_path = str(Path(args.image).resolve())
    unit = ControlUnit(
        model=MAP_MODEL,
        image=image_path,
        preprocessor=args.preprocessor,
        resize=ControlResize(args.resize),
        resolution=args.resolution,
        threshold_a=args.threshold_a,
        threshold_b=args.threshold_b,
        pixel_perfect=args.pixel_perfect,
    )
    annotators = Annotators(annotator_folders(context.paths, context.settings))
    check_preprocessor(unit, annotators)
    if needs_mask(unit) and not args.mask:
        raise InvalidRequest(
            f"The {args.preprocessor} preprocessor needs --mask (white = repaint)."
        )
    image = open_image(args.image, what="control image")
    mask = open_image(args.mask, what="mask").convert("L") if args.mask else None
    if args.width is not None:
        size = (args.width, args.height)
        result = control_map(image, unit, size, mask=mask, seed=args.seed, annotators=annotators)
    elif mask is not None:
        result = control_map(image, unit, image.size, mask=mask, seed=args.seed)
    else:  # the map at the size the module made it
        result = Image.fromarray(preprocess(image, unit, seed=args.seed, annotators=annotators))
    data = io.BytesIO()
    result.save(data, format="PNG")
    written = write_atomically(out.resolve(), data.getvalue())
    context.reporter.event(
        "image", None, path=str(written), width=result.width, height=result.height
    )
    context.reporter.done(str(written), path=str(written))
    return 0
