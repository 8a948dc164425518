"""``sdstudio-cli xyz --x "Steps: 10,20" --y "CFG Scale: 5,7" [--z …] [generate's options]``.

An X/Y/Z plot as AUTOMATIC1111's script makes it: every combination of the axes'
values generated in turn (X fastest, then Y, then Z), each image saved and recorded
in the history as ``generate`` records it, then one labelled grid written into the
outputs folder's ``grids`` folder (not recorded as a generation). Ctrl+C stops the
plot: the images made so far are kept and drawn into the grid, the rest left grey.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from sdstudio.cli.engine_setup import open_engine, progress_reporters
from sdstudio.cli.generate import add_generate_options, generate_request
from sdstudio.engine.errors import GenerationCancelled, InvalidRequest
from sdstudio.engine.xyz.axes import AXIS_NAMES, Axis, Resolve, parse_axis_option
from sdstudio.engine.xyz.plan import MAX_IMAGES, plan_plot

if TYPE_CHECKING:
    from sdstudio.cli import Context
    from sdstudio.engine.models.lookup import ModelFinder
    from sdstudio.engine.xyz.compose import CellImage


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``xyz``, which takes every option of ``generate`` and the axes."""
    xyz = commands.add_parser(
        "xyz",
        help="an X/Y/Z plot: a labelled grid of images varying up to three settings",
        description="Axes are written 'NAME: VALUES', for example 'Steps: 10,20' or "
        "'CFG Scale: 3-9 (+2)'. Values: a comma list (quote a value holding a comma), "
        "ranges 1-5, 1-9 (+2) (a step), 0-1 [5] (a count). Axis names: "
        + ", ".join(AXIS_NAMES)
        + ".",
    )
    xyz.add_argument("--x", required=True, metavar="AXIS", help="the axis across ('Steps: 10,20')")
    xyz.add_argument("--y", default=None, metavar="AXIS", help="the axis down")
    xyz.add_argument("--z", default=None, metavar="AXIS", help="one sub-grid per value")
    xyz.add_argument(
        "--max-images",
        type=int,
        default=MAX_IMAGES,
        help=f"refuse a plot of more images than this (default {MAX_IMAGES})",
    )
    xyz.add_argument(
        "--keep-random-seeds",
        action="store_true",
        help="with --seed -1, let every cell draw its own seed (A1111's 'Keep -1 for seeds'; "
        "by default one seed is drawn for the whole plot)",
    )
    add_generate_options(xyz)


def run_xyz(args: argparse.Namespace, context: Context) -> int:
    """Plan the plot (every cell checked before a model loads), run it, draw its grid."""
    from sdstudio.engine.models.lookup import ModelFinder
    from sdstudio.engine.xyz.compose import CellImage, compose_grid, plot_record
    from sdstudio.logs import quiet_third_party

    quiet_third_party()
    finder = ModelFinder.for_catalog(context.paths, lambda: context.settings, remember=True)
    base = generate_request(args, context, finder)
    axes = _axes(args, finder)
    plot = plan_plot(
        base, axes, max_images=args.max_images, keep_random_seeds=args.keep_random_seeds
    )
    for cell in plot.cells:
        cell.request.check_prompts()
    reporter = context.reporter
    columns, rows, depth = plot.shape
    reporter.event(
        "plot",
        f"X/Y/Z plot: {len(plot.cells)} images on {depth} {columns}x{rows} grid"
        + ("s" if depth > 1 else ""),
        cells=len(plot.cells),
        shape=[columns, rows, depth],
    )
    engine, library = open_engine(args, context, finder)
    made: dict[int, CellImage] = {}
    cancelled = False
    try:
        for number, cell in enumerate(plot.cells, 1):
            reporter.event(
                "cell",
                f"cell {number}/{len(plot.cells)}: "
                + ", ".join(
                    axis.labels[place]
                    for axis, place in zip(plot.axes, (cell.x, cell.y, cell.z), strict=False)
                ),
                index=cell.index,
                number=number,
                total=len(plot.cells),
            )
            on_progress, on_status = progress_reporters(reporter, cell.request.mode)
            for result in engine.generate(
                cell.request, on_progress=on_progress, on_status=on_status
            ):
                entry = library.save(result)
                made.setdefault(cell.index, CellImage(str(entry.path), entry.id))
                reporter.event(
                    "image", None, path=entry.path, seed=entry.seed, id=entry.id, cell=cell.index
                )
    except (KeyboardInterrupt, GenerationCancelled):
        cancelled = True
    if not made:
        if cancelled:
            raise GenerationCancelled("The X/Y/Z plot was cancelled before its first image.")
        raise InvalidRequest("The X/Y/Z plot made no image.")
    outputs = Path(args.out) if args.out else context.settings.outputs_path(context.paths)
    path, grid = compose_grid(plot, made, outputs)
    record = plot_record(plot, made)
    reporter.event("grid", None, path=str(path), width=grid.width, height=grid.height, **record)
    reporter.result(str(path))
    if cancelled:
        raise GenerationCancelled(
            f"The X/Y/Z plot was cancelled after {len(made)} of {len(plot.cells)} cells; "
            "its grid holds those made."
        )
    reporter.event("done")
    return 0


def _vae_name(value: str) -> str:
    """A VAE axis value: a path (made absolute), a name to find in the VAE folders, or
    None/Automatic for the model's own."""
    if value.strip().casefold() in ("", "none", "automatic", "auto"):
        return ""
    return str(Path(value).expanduser().resolve()) if os.path.exists(value) else value


def _axes(args: argparse.Namespace, finder: ModelFinder) -> list[Axis]:
    from sdstudio.cli.model_choice import choose_model

    def resolve_model(name: str) -> str:
        return choose_model(name, finder).request_model

    resolvers: dict[str, Resolve] = {"checkpoint name": resolve_model, "vae": _vae_name}
    axes = []
    for letter, option in (("X", args.x), ("Y", args.y), ("Z", args.z)):
        if option is None:
            continue
        if letter == "Z" and args.y is None:
            raise InvalidRequest("--z needs --y: the axes are filled in the order X, Y, Z.")
        kind_name = option.partition(":")[0].strip().casefold()
        resolve = resolvers.get(kind_name)
        axes.append(parse_axis_option(option, limit=max(1, args.max_images), resolve=resolve))
    return axes
