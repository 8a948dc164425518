"""``generate``'s options for an init image and a mask: how the image is fitted
and how inpainting repaints (A1111's settings, with its defaults)."""

from __future__ import annotations

import argparse
from typing import Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.request import InpaintArea, MaskedContent, ResizeMode

_INPAINT_OPTIONS = ("mask_blur", "inpaint_area", "masked_padding", "masked_content")


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """How the init image is fitted, and the inpainting settings (defaults: A1111's)."""
    parser.add_argument(
        "--resize-mode",
        choices=[m.value for m in ResizeMode],
        default=None,
        help="fit an init image of another shape: stretch it (resize, the default), "
        "cover and crop (crop), or fit inside and fill the edges (fill)",
    )
    parser.add_argument(
        "--mask-blur", type=int, default=None, help="blur the mask by N pixels (default 4)"
    )
    parser.add_argument(
        "--inpaint-area",
        choices=[a.value for a in InpaintArea],
        default=None,
        help="repaint the whole picture (default) or only the masked area at full resolution",
    )
    parser.add_argument(
        "--masked-padding",
        type=int,
        default=None,
        help="pixels of context around the mask with --inpaint-area masked (default 32)",
    )
    parser.add_argument(
        "--masked-content",
        choices=[c.value for c in MaskedContent],
        default=None,
        help="what the masked area starts from (default: original)",
    )


def source_options(args: argparse.Namespace) -> dict[str, Any]:
    """The request fields the source options set; an option that has nothing to act on
    is refused rather than ignored."""
    given = {
        name: getattr(args, name)
        for name in ("resize_mode", *_INPAINT_OPTIONS)
        if getattr(args, name, None) is not None
    }
    for name in given:
        flag = "--" + name.replace("_", "-")
        if name in _INPAINT_OPTIONS and not args.mask:
            raise InvalidRequest(f"{flag} is an inpainting setting: it needs --mask.")
        if not args.init_image:
            raise InvalidRequest(f"{flag} needs --init-image.")
    return given
