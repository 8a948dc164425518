"""Running an upscaler model over an image in overlapping tiles, in bounded memory.

A tile is a square of ``tile`` source pixels (less at the image's size). Tiles
overlap by ``overlap`` pixels or more and are spread evenly, the first at the image's
start and the last at its end. Where they overlap, each output pixel is a weighted
average: a tile's weight is 0 across the outer quarter of the overlap (the pixels a
convolution sees past the tile's edge as padding, which would show as seams), rises
linearly across the middle half and is 1 inside; at the image's own edges it is 1.
Two neighbours' weights add up to 1 across an overlap of exactly ``overlap``.

Tiles are run a row at a time, and the output is assembled in a band of rows as tall
as one row of tiles (float sums and weights); rows no later tile reaches are
finished into the 8-bit output as the band moves down. Memory is the 8-bit output, one
band and one tile's tensors, however large the image.

A tile smaller than the image is made a size the architecture takes (spandrel's
``size_requirements``: a minimum and a multiple) from more of the image around it; a
tile as large as the image is padded by spandrel itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

RunTile = Callable[[np.ndarray], np.ndarray]
"""Runs the model on one tile: (h, w, c) uint8 -> (h*s, w*s, c) float32 in [0, 1], an
array of its own (it is used as scratch space)."""


@dataclass(frozen=True, slots=True)
class TileLayout:
    """Where the tiles of one pass lie, in source pixels: ``(start, end)`` spans along
    each side, every tile being one column span by one row span."""

    width: int
    height: int
    overlap_x: int
    overlap_y: int
    columns: tuple[tuple[int, int], ...]
    rows: tuple[tuple[int, int], ...]

    @property
    def count(self) -> int:
        """How many tiles the pass runs."""
        return len(self.columns) * len(self.rows)


def plan_tiles(
    width: int, height: int, tile: int, overlap: int, *, minimum: int = 0, align: int = 1
) -> TileLayout:
    """The tiles of a ``width`` x ``height`` image: one for ``tile`` 0 or a tile as large
    as the image. Tiles start at multiples of ``align`` (the pixel grid of an
    architecture that unshuffles pixels or attends in windows, so that a tile sees the
    grid the whole image would), are ``tile`` pixels or more (rounded up to ``align``,
    at least ``minimum``), and the last one ends at the image's edge."""
    overlap_x, columns = _spans(width, tile, overlap, minimum, align)
    overlap_y, rows = _spans(height, tile, overlap, minimum, align)
    return TileLayout(width, height, overlap_x, overlap_y, columns, rows)


def _spans(
    size: int, tile: int, overlap: int, minimum: int, align: int
) -> tuple[int, tuple[tuple[int, int], ...]]:
    """The overlap and the tiles' spans along one side, counted in cells of ``align``
    pixels: starts spread evenly from 0 to the last cell boundary a tile fits after, so
    that neighbours share ``overlap`` pixels or more."""
    cells = math.ceil(max(tile, minimum, 1) / align)
    if tile <= 0 or cells * align >= size:
        return 0, ((0, size),)
    last = (size - cells * align) // align
    if last == 0:
        return 0, ((0, size),)
    overlap = min(overlap, cells * align // 2)
    overlap_cells = min(math.ceil(overlap / align), cells - 1)
    overlap = min(overlap, overlap_cells * align)
    count = math.ceil(last / (cells - overlap_cells)) + 1
    starts = [i * last // (count - 1) * align for i in range(count)]
    spans = [(start, start + cells * align) for start in starts]
    spans[-1] = (starts[-1], size)  # the last tile reaches the edge (up to a cell longer)
    return overlap, tuple(spans)


def feather(length: int, scale: int, overlap: int, start: bool, end: bool) -> np.ndarray:
    """A tile's weights along one side, at ``scale`` output pixels per source pixel:
    falling to 0 over ``overlap`` source pixels at an inner ``start`` or ``end``."""
    weights = np.ones(length, dtype=np.float32)
    if overlap <= 0 or not (start or end):
        return weights
    margin = overlap / 4
    distance = (np.arange(length, dtype=np.float32) + 0.5) / scale
    ramp = np.clip((distance - margin) / (overlap - 2 * margin), 0.0, 1.0)
    if start:
        weights = np.minimum(weights, ramp)
    if end:
        weights = np.minimum(weights, ramp[::-1])
    return weights


class _Band:
    """The output image: finished rows as 8-bit, the open rows as weighted float sums."""

    def __init__(self, width: int, height: int, channels: int, rows: int) -> None:
        self.output = np.empty((height, width, channels), dtype=np.uint8)
        self.top = 0
        """The first row not finished."""
        self.sums = np.zeros((rows, width, channels), dtype=np.float32)
        self.weights = np.zeros((rows, width, 1), dtype=np.float32)

    def add(self, values: np.ndarray, x: int, y: int, weights: np.ndarray) -> None:
        row, rows, columns = y - self.top, values.shape[0], values.shape[1]
        np.multiply(values, weights, out=values)
        self.sums[row : row + rows, x : x + columns] += values
        self.weights[row : row + rows, x : x + columns] += weights

    def finish(self, until: int) -> None:
        """Finish the rows above ``until`` and move the band down to it, in place (no
        temporary as large as the band)."""
        count = min(until, self.output.shape[0]) - self.top
        if count <= 0:
            return
        sums, weights = self.sums[:count], self.weights[:count]
        np.maximum(weights, 1e-6, out=weights)
        np.divide(sums, weights, out=sums)
        self.output[self.top : self.top + count] = to_uint8(sums, out=sums)
        kept = self.sums.shape[0] - count
        for start in range(0, kept, count):  # blocks of ``count`` rows never overlap
            end = min(start + count, kept)
            self.sums[start:end] = self.sums[start + count : end + count]
            self.weights[start:end] = self.weights[start + count : end + count]
        self.sums[max(kept, 0) :] = 0
        self.weights[max(kept, 0) :] = 0
        self.top += count


def to_uint8(values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Values in [0, 1] as 8-bit pixels, rounded (``out``: float scratch space, which
    may be ``values`` itself)."""
    scaled = np.multiply(values, 255.0, out=out)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def run_tiled(
    pixels: np.ndarray,
    layout: TileLayout,
    scale: int,
    run: RunTile,
    *,
    before_tile: Callable[[], Any] | None = None,
    after_tile: Callable[[], Any] | None = None,
) -> np.ndarray:
    """The upscaled (h*s, w*s, c) uint8 image of (h, w, c) uint8 ``pixels``, run tile by
    tile in ``layout``; ``before_tile`` is called before each tile (to cancel) and
    ``after_tile`` after it (to report progress)."""
    height, width, _ = pixels.shape
    if layout.count == 1:
        if before_tile:
            before_tile()
        values = run(pixels)
        result = to_uint8(values, out=values)
        if after_tile:
            after_tile()
        return result
    band: _Band | None = None
    band_rows = max(bottom - top for top, bottom in layout.rows) * scale
    for row_index, (top, bottom) in enumerate(layout.rows):
        if band is not None:
            band.finish(top * scale)
        inner = (top > 0, row_index < len(layout.rows) - 1)
        row_weights = feather((bottom - top) * scale, scale, layout.overlap_y, *inner)
        for column_index, (left, right) in enumerate(layout.columns):
            if before_tile:
                before_tile()
            values = run(pixels[top:bottom, left:right])
            if band is None:
                band = _Band(width * scale, height * scale, values.shape[2], band_rows)
            inner = (left > 0, column_index < len(layout.columns) - 1)
            column_weights = feather((right - left) * scale, scale, layout.overlap_x, *inner)
            weights = (row_weights[:, None] * column_weights[None, :])[..., None]
            band.add(values, left * scale, top * scale, weights)
            if after_tile:
                after_tile()
    assert band is not None
    band.finish(height * scale)
    return band.output
