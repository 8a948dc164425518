"""``generate``'s variation seed options: ``--variation-seed``, ``--variation-strength`` and
``--seed-resize-from`` (AUTOMATIC1111's "Variation seed", "Variation seed strength" and
"Seed resize from")."""

from __future__ import annotations

import argparse
import random
import re
from typing import Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.request import MAX_RANDOM_SEED, RANDOM_SEED


def add_variation_options(parser: argparse.ArgumentParser) -> None:
    """Add the options to ``generate``."""
    parser.add_argument(
        "--variation-seed",
        type=int,
        default=RANDOM_SEED,
        metavar="N",
        help="a second seed whose noise is mixed into the seed's (-1: random, the default); "
        "image i of a batch uses N+i, every image keeping the seed",
    )
    parser.add_argument(
        "--variation-strength",
        type=float,
        default=0.0,
        metavar="F",
        help="how much of the variation seed's noise: 0 (default, off) to 1",
    )
    parser.add_argument(
        "--seed-resize-from",
        default=None,
        metavar="WxH",
        help="draw the noise at this size and place it in the middle of the image, so a "
        "seed keeps its picture at another size",
    )


def variation_options(args: argparse.Namespace, rng: random.Random | None = None) -> dict[str, Any]:
    """The request fields the options give; a random variation seed (-1) is drawn here,
    so that the records name the one used."""
    seed = args.variation_seed
    if seed == RANDOM_SEED:
        seed = (
            (rng or random.SystemRandom()).randint(0, MAX_RANDOM_SEED)
            if args.variation_strength
            else 0
        )
    elif seed < 0:
        raise InvalidRequest(f"--variation-seed must be -1 (random) or 0 or more, not {seed}.")
    return {
        "variation_seed": seed,
        "variation_strength": args.variation_strength,
        "seed_resize_from": seed_resize_size(args.seed_resize_from),
    }


def seed_resize_size(text: str | None) -> tuple[int, int]:
    """``WxH`` (``512x512``) as a width and height; none or ``0x0``: off."""
    if not text:
        return (0, 0)
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match:
        raise InvalidRequest(f"--seed-resize-from takes a size such as 512x512, not {text!r}.")
    return (int(match.group(1)), int(match.group(2)))
