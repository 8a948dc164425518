"""SD upscale's tile layout (A1111's split_grid) and its blending of repainted tiles."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.refine.sd_upscale import repaint_tiles, tile_grid


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_tiles_are_laid_out_as_a1111_splits_the_grid() -> None:
    # A1111: cols = ceil((w - overlap) / (tile - overlap)), spread from 0 to w - tile.
    grid = tile_grid(1024, 768, 512, 512, 64)
    assert grid.xs == (0, 256, 512)
    assert grid.ys == (0, 256)
    assert grid.count == 6
    single = tile_grid(512, 512, 512, 512, 64)
    assert (single.xs, single.ys) == ((0,), (0,))


def test_every_pixel_is_covered_and_tiles_stay_inside() -> None:
    for width, height in ((1000, 777), (2048, 1536), (600, 520)):
        grid = tile_grid(width, height, 512, 512, 64)
        covered = np.zeros((height, width), dtype=bool)
        for y in grid.ys:
            for x in grid.xs:
                assert 0 <= x <= width - 512 and 0 <= y <= height - 512
                covered[y : y + 512, x : x + 512] = True
        assert covered.all()


def test_unchanged_tiles_give_back_the_image_exactly() -> None:
    image = _image(1000, 700)
    grid = tile_grid(1000, 700, 256, 256, 48)
    calls: list[int] = []

    def same(tile: Image.Image, remaining: int) -> Image.Image:
        calls.append(remaining)
        return tile

    result = repaint_tiles(image, grid, same)
    assert np.array_equal(np.asarray(result), np.asarray(image))
    assert calls == list(range(grid.count - 1, -1, -1))  # tiles still to come, counted down


def test_overlaps_are_blended_without_a_seam() -> None:
    grid = tile_grid(768, 512, 512, 512, 128)  # two tiles overlapping by 256
    flat = Image.new("RGB", (768, 512), (0, 0, 0))
    shades = iter([(0, 0, 0), (200, 200, 200)])

    def shade(tile: Image.Image, remaining: int) -> Image.Image:
        return Image.new("RGB", tile.size, next(shades))

    row = np.asarray(repaint_tiles(flat, grid, shade))[100, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 200  # each tile alone at its own edge
    overlap = row[256:512]
    assert (np.diff(overlap) >= 0).all()  # a ramp from one tile to the other
    assert np.abs(np.diff(row)).max() <= 3  # no step anywhere


def test_cancel_is_checked_before_each_tile() -> None:
    grid = tile_grid(600, 600, 256, 256, 32)
    seen = []

    class Stop(Exception):
        pass

    def check() -> None:
        if len(seen) == 2:
            raise Stop

    def record(tile: Image.Image, remaining: int) -> Image.Image:
        seen.append(remaining)
        return tile

    with pytest.raises(Stop):
        repaint_tiles(_image(600, 600), grid, record, check)
    assert len(seen) == 2


def test_unusable_layouts_are_refused_with_what_to_change() -> None:
    with pytest.raises(InvalidRequest, match="smaller than a tile"):
        tile_grid(400, 900, 512, 512, 64)
    with pytest.raises(InvalidRequest, match="more than half a tile"):
        tile_grid(1024, 1024, 256, 256, 200)
