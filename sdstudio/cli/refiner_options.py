"""The refiner options of ``generate`` and ``rerun``: ``--refiner MODEL`` has a second
model finish the denoising from ``--refiner-switch`` (default 0.8) of the steps, as
A1111's "Refiner" does. ``rerun --refiner`` replaces the recorded refiner
(``none``: without one)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.models.lookup import AmbiguousModel, ModelFinder
from sdstudio.engine.refine.refiner_settings import DEFAULT_SWITCH_AT, Refiner

if TYPE_CHECKING:
    from sdstudio.engine.request import GenerationRequest

NONE = "none"


def add_refiner_options(parser: argparse.ArgumentParser, *, rerun: bool = False) -> None:
    """Add ``--refiner`` (and, for ``generate``, ``--refiner-switch``)."""
    group = parser.add_argument_group(
        "refiner", "a second model finishes the denoising (A1111's Refiner, for SDXL models)"
    )
    what = "an SDXL refiner or another SDXL model: a path, or a name 'models list' shows"
    group.add_argument(
        "--refiner",
        default=None,
        metavar="MODEL",
        help=f"use this refiner instead of the recorded one ('none': without) ({what})"
        if rerun
        else what,
    )
    if not rerun:
        group.add_argument(
            "--refiner-switch",
            type=float,
            default=None,
            metavar="F",
            help=f"the fraction of the steps after which the refiner takes over "
            f"(default {DEFAULT_SWITCH_AT:g})",
        )


def refiner_options(args: argparse.Namespace, finder: ModelFinder) -> Refiner | None:
    """The refiner the options ask for (``None``: none).

    Raises :class:`InvalidRequest` for ``--refiner-switch`` without ``--refiner``, a
    switch outside 0 to 1, and a refiner that is not found.
    """
    model = getattr(args, "refiner", None)
    switch = getattr(args, "refiner_switch", None)
    if model is None or model.strip().lower() == NONE:
        if switch is not None:
            raise InvalidRequest("--refiner-switch needs --refiner MODEL.")
        return None
    return Refiner(_chosen(model, finder), DEFAULT_SWITCH_AT if switch is None else switch)


def rerun_refiner(
    request: GenerationRequest, args: argparse.Namespace, finder: ModelFinder, *, trusted: bool
) -> Refiner | None:
    """The refiner a re-run uses: ``--refiner``'s, or the recorded one at its recorded
    switch. Unless ``trusted`` (sdstudio's history), a recorded path is taken only inside
    the model folders and the Hugging Face cache, as the model's is."""
    recorded = request.refiner
    if getattr(args, "refiner", None) is not None:
        if args.refiner.strip().lower() == NONE:
            return None
        switch = recorded.switch_at if recorded is not None else DEFAULT_SWITCH_AT
        return Refiner(_chosen(args.refiner, finder), switch)
    if recorded is None or trusted:
        return recorded
    try:
        finder.find_recorded(recorded.model)
    except AmbiguousModel as error:
        raise InvalidRequest(f"{error} Re-run with --refiner PATH.") from None
    except ModelError as error:
        raise InvalidRequest(
            f"The refiner of the image was not found: {error} Give it with --refiner PATH, "
            "or re-run without it with --refiner none."
        ) from None
    return recorded


def _chosen(argument: str, finder: ModelFinder) -> str:
    """What the request keeps of ``--refiner``: its absolute path, or the catalog's name."""
    from sdstudio.cli.model_choice import choose_model

    try:
        return choose_model(argument, finder).request_model
    except ModelError as error:
        raise InvalidRequest(f"--refiner: {error}") from None
