"""``generate``'s ``--fast`` option: an opt-in fast mode, recorded with the images so
``rerun`` computes the same pixels (see :mod:`sdstudio.engine.speed`)."""

from __future__ import annotations

import argparse
from typing import Any

from sdstudio.engine.speed.fast_mode import parse_fast_mode


def add_fast_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--fast`` to ``generate``."""
    parser.add_argument(
        "--fast",
        default=None,
        metavar="MODE[,NAME=VALUE]",
        help="skip part of the work on some steps, moving the image a little: "
        "'deep-cache,interval=3[,branch=0][,layer=block|0]' (layer=block, the default: "
        "whole blocks; layer=0: cache inside the branch's blocks, faster, further from the "
        "full image) or "
        "'token-merging,ratio=0.5' (SD 1.x, 2.x, XL), "
        "'first-block-cache,threshold=0.05' (Flux.1, Qwen-Image), "
        "'taylorseer-cache,interval=3[,warmup=3][,order=1]' (Flux.1, Flux.2 Klein, SD 3.x, "
        "Qwen-Image, Z-Image, Chroma: after warmup full steps, one step in interval runs "
        "the whole transformer and the others forecast its output); default: off",
    )


def fast_options(args: argparse.Namespace) -> dict[str, Any]:
    """The request field ``--fast`` gives."""
    return {"fast": parse_fast_mode(args.fast or "")}
