"""SD upscale (A1111's script of that name; "Ultimate SD upscale" does the same): the
source is upscaled, then repainted with image-to-image tile by tile at the request's
size, and the tiles are blended back across their overlap.

The tiles are laid out as A1111's ``images.split_grid`` lays them: as many columns
as ``ceil((width - overlap) / (tile - overlap))``, spread evenly so that the first
starts at 0 and the last ends at the image's edge (rows the same way). Every tile is
repainted with the same seed, as A1111 does. Where tiles overlap, each pixel is the
average of the tiles over it, weighted by how far inside each tile it lies (weights
fall linearly to the tile's edge across the overlap), so no seam shows. Finished rows
are written out as the tiles go, so memory holds a few rows of tiles, not the whole
image in floating point.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.progress import StepReporter
from sdstudio.engine.request import GenerationRequest

Repaint = Callable[[Image.Image, int], Image.Image]
"""Repaints one tile: ``(tile image, tiles still to come) -> repainted tile``."""


@dataclass(frozen=True, slots=True)
class TileGrid:
    """Where the tiles of an image lie."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    xs: tuple[int, ...]
    ys: tuple[int, ...]

    @property
    def count(self) -> int:
        """How many tiles there are."""
        return len(self.xs) * len(self.ys)


def _starts(size: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Tile starts along one side, as A1111's ``split_grid`` places them."""
    count = max(1, math.ceil((size - overlap) / max(1, tile - overlap)))
    step = (size - tile) / (count - 1) if count > 1 else 0
    return tuple(min(int(i * step), size - tile) for i in range(count))


def tile_grid(width: int, height: int, tile_width: int, tile_height: int, overlap: int) -> TileGrid:
    """The tiles of a ``width`` x ``height`` image; :class:`InvalidRequest` when the image
    is smaller than a tile or the overlap leaves no room."""
    if width < tile_width or height < tile_height:
        raise InvalidRequest(
            f"The upscaled image ({width}x{height}) is smaller than a tile "
            f"({tile_width}x{tile_height}); make the tile (width and height) smaller or "
            "the scale larger."
        )
    if overlap * 2 > min(tile_width, tile_height):
        raise InvalidRequest(
            f"An SD upscale overlap of {overlap} pixels is more than half a tile "
            f"({tile_width}x{tile_height}); use at most {min(tile_width, tile_height) // 2}."
        )
    return TileGrid(
        width,
        height,
        tile_width,
        tile_height,
        _starts(width, tile_width, overlap),
        _starts(height, tile_height, overlap),
    )


def _ramp(length: int, before: int, after: int) -> np.ndarray:
    """Weights along one side of a tile: rising over ``before`` pixels at the start and
    falling over ``after`` at the end (0 where there is no neighbour to blend with)."""
    weights = np.ones(length, dtype=np.float32)
    if before > 0:
        weights[:before] = (np.arange(before, dtype=np.float32) + 0.5) / before
    if after > 0:
        weights[length - after :] = np.minimum(
            weights[length - after :], (np.arange(after, 0, -1, dtype=np.float32) - 0.5) / after
        )
    return weights


def _overlaps(starts: tuple[int, ...], index: int, tile: int) -> tuple[int, int]:
    """How far the tile at ``index`` overlaps its neighbours before and after it."""
    before = starts[index - 1] + tile - starts[index] if index > 0 else 0
    after = starts[index] + tile - starts[index + 1] if index + 1 < len(starts) else 0
    return max(0, before), max(0, after)


def repaint_tiles(
    image: Image.Image,
    grid: TileGrid,
    repaint: Repaint,
    raise_if_cancelled: Callable[[], None] = lambda: None,
) -> Image.Image:
    """Repaint each tile of ``image`` and blend them into one image of its size."""
    rgb = np.asarray(image.convert("RGB"))
    out = np.empty_like(rgb)
    tw, th = grid.tile_width, grid.tile_height
    pending: list[tuple[int, np.ndarray, np.ndarray]] = []  # (top, weighted sum, weights)
    done_rows = 0
    remaining = grid.count
    for r, y in enumerate(grid.ys):
        strip = np.zeros((th, grid.width, 3), dtype=np.float32)
        strip_weights = np.zeros((th, grid.width), dtype=np.float32)
        rows = _ramp(th, *_overlaps(grid.ys, r, th))
        for c, x in enumerate(grid.xs):
            raise_if_cancelled()
            remaining -= 1
            tile = Image.fromarray(rgb[y : y + th, x : x + tw])
            result = repaint(tile, remaining)
            if result.size != (tw, th):
                result = result.resize((tw, th), Image.Resampling.LANCZOS)
            weights = rows[:, None] * _ramp(tw, *_overlaps(grid.xs, c, tw))[None, :]
            pixels = np.asarray(result.convert("RGB"), dtype=np.float32)
            strip[:, x : x + tw] += pixels * weights[:, :, None]
            strip_weights[:, x : x + tw] += weights
        pending.append((y, strip, strip_weights))
        final = grid.ys[r + 1] if r + 1 < len(grid.ys) else grid.height
        done_rows = _write_rows(out, pending, done_rows, final)
        pending = [p for p in pending if p[0] + th > final]
    return Image.fromarray(out)


def _write_rows(
    out: np.ndarray, pending: list[tuple[int, np.ndarray, np.ndarray]], start: int, end: int
) -> int:
    """Write the finished rows ``start``..``end`` of ``out`` from the strips over them."""
    if end <= start:
        return start
    total = np.zeros((end - start, out.shape[1], 3), dtype=np.float32)
    weights = np.zeros((end - start, out.shape[1]), dtype=np.float32)
    for top, strip, strip_weights in pending:
        lo, hi = max(start, top), min(end, top + strip.shape[0])
        if lo < hi:
            total[lo - start : hi - start] += strip[lo - top : hi - top]
            weights[lo - start : hi - start] += strip_weights[lo - top : hi - top]
    blended = total / np.maximum(weights, 1e-6)[:, :, None]
    out[start:end] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return end


@dataclass(frozen=True, slots=True)
class TilePass:
    """The image-to-image pass of an SD upscale, run once per tile with the same
    arguments (``kwargs``, made for the request as for any image-to-image pass), the
    same seed, and progress counted over all the tiles."""

    request: GenerationRequest
    kwargs: dict[str, Any]
    seed: int
    steps: StepReporter

    def repaint(
        self,
        upscaled: Image.Image,
        call: Callable[[dict[str, Any], int, int], Image.Image],
        on_status: Callable[[str], None] | None = None,
    ) -> Image.Image:
        """Repaint ``upscaled`` in tiles of the request's size; ``call`` runs the pipeline
        with the given arguments at a width and height and returns its image."""
        import torch

        request = self.request
        assert request.upscale is not None
        width, height = request.width, request.height
        grid = tile_grid(upscaled.width, upscaled.height, width, height, request.upscale.overlap)
        if on_status:
            on_status(
                f"SD upscale: repainting {upscaled.width}x{upscaled.height} in "
                f"{grid.count} tile{'s' if grid.count != 1 else ''} of {width}x{height}…"
            )
        per_tile = max(1, min(int(request.steps * request.strength), request.steps))

        def one(tile: Image.Image, remaining: int) -> Image.Image:
            arguments = {
                **self.kwargs,
                "image": tile,
                "generator": torch.Generator("cpu").manual_seed(self.seed),
                "callback_on_step_end": self.steps.callback(
                    width, height, later=remaining * per_tile
                ),
            }
            return call(arguments, width, height)

        return repaint_tiles(upscaled, grid, one, self.steps.raise_if_cancelled)
