"""A finished plot's images made into its grid file, by the CLI and the app alike.

The grid's ``parameters`` text is the first image's with the axes added
(``X Type: Steps, X Values: "10,20"``), as A1111 writes it, so a grid dropped onto
another tool shows the settings it was made from. The ``sdstudio-xyz`` chunk lists
the axes and, for each cell, its image. The grid itself is not a generation and is
not recorded in the history.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PIL import Image

from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.images import open_image
from sdstudio.engine.xyz.grid import draw_grid, grid_png, save_grid
from sdstudio.engine.xyz.plan import AXIS_LETTERS, XyzPlot

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CellImage:
    """What a cell made: its image file and history id (None for a cell that made none)."""

    path: str
    history_id: int | None = None


def plot_record(plot: XyzPlot, made: Mapping[int, CellImage]) -> dict:
    """The plot as JSON data: axes with their values and labels, and each cell's image."""
    return {
        "axes": [
            {
                "axis": letter,
                "type": axis.kind.name,
                "values": axis.text,
                "labels": axis.labels,
            }
            for letter, axis in zip(AXIS_LETTERS, plot.axes, strict=False)
        ],
        "cells": [
            {
                "index": cell.index,
                "x": cell.x,
                "y": cell.y,
                "z": cell.z,
                "path": made[cell.index].path if cell.index in made else None,
                "id": made[cell.index].history_id if cell.index in made else None,
            }
            for cell in sorted(plot.cells, key=lambda c: c.index)
        ],
    }


def grid_parameters(plot: XyzPlot, first_image: str | Path | None) -> str:
    """The first image's ``parameters`` text with the axes added to its settings line."""
    axes = plot.parameters()
    text = ""
    if first_image is not None:
        try:
            with Image.open(first_image) as image:
                text = image.info.get("parameters", "")
        except OSError:
            text = ""
    if not isinstance(text, str) or not text.strip():
        return axes
    return f"{text.rstrip()}, {axes}"


def compose_grid(
    plot: XyzPlot, made: Mapping[int, CellImage], outputs_dir: Path, *, now: datetime | None = None
) -> tuple[Path, Image.Image]:
    """Draw the grid of the cells' images, write it into ``outputs_dir/grids`` and return
    its path and image. A cell with no image (or one gone) is left grey."""
    columns, rows, depth = plot.shape
    images: list[Image.Image | None] = [None] * (columns * rows * depth)
    first: str | None = None
    for cell in sorted(plot.cells, key=lambda c: c.index):
        entry = made.get(cell.index)
        if entry is None:
            continue
        try:
            image = open_image(entry.path, what="plot image")
        except SdStudioError as error:
            log.warning("A plot image could not be read: %s", error)
            continue
        if first is None:
            first = entry.path
        images[cell.index] = image
    if first is None:
        raise SdStudioError("The X/Y/Z plot made no image, so there is no grid to draw.")
    grid = draw_grid(images, plot.shape, plot.labels("X"), plot.labels("Y"), plot.labels("Z"))
    record = json.dumps(plot_record(plot, made), ensure_ascii=False)
    data = grid_png(grid, grid_parameters(plot, first), record)
    return save_grid(data, outputs_dir, now=now), grid
