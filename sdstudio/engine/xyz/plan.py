"""An X/Y/Z plot planned: one request per cell, checked before anything runs.

Cells are numbered as A1111 numbers them (``x + y * nx + z * nx * ny``); they run
with X changing fastest, then Y, then Z, except that the axis slowest to change
(a checkpoint, then a VAE) is moved outermost, as A1111 does, so that it changes
as few times as possible.

Seeds follow A1111's default ("Keep -1 for seeds" off): a random seed is drawn once
for the whole plot, so the cells differ only by their axes; on a Seed (or Var. seed)
axis each -1 value gets its own random seed. With ``keep_random_seeds`` each cell
draws its own.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.request import MAX_RANDOM_SEED, RANDOM_SEED, GenerationRequest
from sdstudio.engine.xyz.axes import Axis

MAX_AXES = 3
MAX_IMAGES = 100
"""The most images one plot makes, unless the caller allows more."""
MAX_GRID_PIXELS = 200_000_000
"""A1111's default limit on a grid's size (200 megapixels)."""
AXIS_LETTERS = ("X", "Y", "Z")


@dataclass(frozen=True, slots=True)
class Cell:
    """One image of the plot: where it stands and what it generates."""

    index: int
    """Its place in the grid: ``x + y * nx + z * nx * ny``."""
    x: int
    y: int
    z: int
    request: GenerationRequest


@dataclass(frozen=True, slots=True)
class XyzPlot:
    """A planned plot: its axes (X, then Y and Z if given) and its cells in running order."""

    base: GenerationRequest
    axes: tuple[Axis, ...]
    cells: tuple[Cell, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(columns, rows, sub-grids)."""
        counts = [len(axis.values) for axis in self.axes] + [1, 1, 1]
        return counts[0], counts[1], counts[2]

    def labels(self, letter: str) -> list[str]:
        """The labels of axis X, Y or Z (empty for an axis not given)."""
        index = AXIS_LETTERS.index(letter)
        return self.axes[index].labels if index < len(self.axes) else []

    def parameters(self) -> str:
        """The axes as A1111 records them with a grid: ``X Type: Steps, X Values: "1,2"``."""
        parts = []
        for letter, axis in zip(AXIS_LETTERS, self.axes, strict=False):
            values = axis.text or ",".join(axis.kind.show(v) for v in axis.values)
            parts.append(f"{letter} Type: {axis.kind.name}, {letter} Values: {_quoted(values)}")
        return ", ".join(parts)


def _quoted(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def image_count(axes: Sequence[Axis], batch_size: int = 1) -> int:
    """How many images a plot over ``axes`` makes."""
    count = batch_size
    for axis in axes:
        count *= len(axis.values)
    return count


def plan_plot(
    base: GenerationRequest,
    axes: Sequence[Axis],
    *,
    max_images: int = MAX_IMAGES,
    keep_random_seeds: bool = False,
    rng: random.Random | None = None,
) -> XyzPlot:
    """Every cell's request, each value applied in the order X, Y, Z.

    Raises :class:`InvalidRequest` for more than three axes, a plot of more than
    ``max_images`` images or a grid over :data:`MAX_GRID_PIXELS`, and for the first
    value that makes an invalid request (naming its axis and value).
    """
    axes = tuple(axes)
    if not axes:
        raise InvalidRequest("An X/Y/Z plot needs at least one axis.")
    if len(axes) > MAX_AXES:
        raise InvalidRequest(f"An X/Y/Z plot has at most {MAX_AXES} axes, not {len(axes)}.")
    total = image_count(axes, base.batch_size)
    if total > max_images:
        sizes = " × ".join(str(len(axis.values)) for axis in axes)
        batch = f" × batch of {base.batch_size}" if base.batch_size > 1 else ""
        raise InvalidRequest(
            f"This X/Y/Z plot would make {total:,} images ({sizes}{batch}); at most "
            f"{max_images} are allowed. Use fewer values."
        )
    draw = rng or random.SystemRandom()
    if not keep_random_seeds:
        base = base.with_seed_resolved(draw)
    axes = tuple(_seeds_drawn(axis, draw) if not keep_random_seeds else axis for axis in axes)
    counts = [len(axis.values) for axis in axes] + [1] * (MAX_AXES - len(axes))
    cells: list[Cell] = []
    for x, y, z in _running_order(axes, counts):
        request = base
        for axis, index in zip(axes, (x, y, z), strict=False):
            request = axis.apply(request, index)
        index = x + y * counts[0] + z * counts[0] * counts[1]
        cells.append(Cell(index, x, y, z, request))
    pixels = sum(_output_pixels(cell.request) for cell in cells)
    if pixels > MAX_GRID_PIXELS:
        raise InvalidRequest(
            f"The grid of this X/Y/Z plot would be {pixels / 1e6:,.0f} megapixels; at most "
            f"{MAX_GRID_PIXELS // 1_000_000} are allowed. Use fewer values or a smaller size."
        )
    return XyzPlot(base, axes, tuple(cells))


def _seeds_drawn(axis: Axis, draw: random.Random) -> Axis:
    if not axis.kind.random_seed or RANDOM_SEED not in axis.values:
        return axis
    values = tuple(
        draw.randint(0, MAX_RANDOM_SEED) if value == RANDOM_SEED else value for value in axis.values
    )
    return Axis(axis.kind, values, axis.text)


def _running_order(axes: Sequence[Axis], counts: list[int]) -> list[tuple[int, int, int]]:
    """(x, y, z) of each cell in running order: Z outermost and X innermost, but for an
    axis costlier to change, which goes outermost (A1111's order)."""
    costs = [axis.kind.cost for axis in axes] + [0.0] * (MAX_AXES - len(axes))
    outer_to_inner = sorted(range(MAX_AXES), key=lambda i: (-costs[i], -i))
    order: list[tuple[int, int, int]] = []

    def walk(level: int, place: list[int]) -> None:
        if level == MAX_AXES:
            order.append((place[0], place[1], place[2]))
            return
        axis = outer_to_inner[level]
        for value in range(counts[axis]):
            place[axis] = value
            walk(level + 1, place)

    walk(0, [0, 0, 0])
    return order


def _output_pixels(request: GenerationRequest) -> int:
    scale = request.hires.scale if request.hires is not None and not request.hires.width else 1.0
    if request.hires is not None and request.hires.width:
        return request.hires.width * request.hires.height
    return int(request.width * request.height * scale * scale)
