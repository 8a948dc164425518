"""Upscaling in tiles: the tiles cover the image and overlap, their blend matches the
whole image run at once, the model runs in passes as A1111 runs it, progress counts
every tile, cancelling stops between tiles, memory stays within a band of rows, and
the benchmark runs."""

from __future__ import annotations

import importlib.util
import itertools
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.errors import GenerationCancelled, OutOfMemory
from sdstudio.engine.progress import CancelToken
from sdstudio.engine.refine.upscale_tiles import TileLayout, feather, plan_tiles
from sdstudio.engine.refine.upscalers import (
    UpscalerCache,
    UpscalerModel,
    load_upscaler,
    passes,
    upscale_image,
    upscale_with_model,
)
from sdstudio.testing.tiny_upscalers import write_tiny_upscaler


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """A random RGB image (the hardest case for seams)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("upscale_models")
    write_tiny_upscaler(folder / "esrgan4.pth", "esrgan", 4)
    write_tiny_upscaler(folder / "realesrgan2.pth", "esrgan", 2, layout="new")
    write_tiny_upscaler(folder / "compact2.safetensors", "compact", 2)
    write_tiny_upscaler(folder / "compact4.safetensors", "compact", 4)
    write_tiny_upscaler(folder / "swinir2.pth", "swinir", 2)
    write_tiny_upscaler(folder / "dat2.safetensors", "dat", 2)
    write_tiny_upscaler(folder / "restore1.pth", "esrgan", 1)
    return folder


@pytest.mark.parametrize(
    ("name", "size", "scale", "tile", "overlap"),
    [
        ("esrgan4", (77, 53), 4, 32, 16),  # odd sizes
        ("esrgan4", (77, 53), 2, 24, 12),  # 2x from a 4x model: one pass, then Lanczos
        ("realesrgan2", (61, 45), 2, 32, 16),  # unshuffled input: tiles on a 4-pixel grid
        ("compact2", (90, 70), 3.5, 32, 16),  # two passes (2x, 4x), then down to 3.5x
        ("swinir2", (50, 41), 2, 32, 16),  # attention windows: tiles on the window grid
        ("dat2", (50, 41), 2, 24, 12),  # a minimum size of 16
        ("restore1", (45, 38), 1, 24, 16),  # a 1x restoration model runs once
    ],
)
def test_tiles_blend_into_what_the_whole_image_gives(
    files: Path, name: str, size: tuple[int, int], scale: float, tile: int, overlap: int
) -> None:
    image = noise(*size)
    cache = UpscalerCache()
    whole = upscale_image(image, name, scale, folders=[files], tile=0, cache=cache)
    counts: list[int] = []
    tiled = upscale_image(
        image,
        name,
        scale,
        folders=[files],
        tile=tile,
        overlap=overlap,
        cache=cache,
        on_progress=lambda done, total: counts.append(total),
    )
    expected = (round(size[0] * scale), round(size[1] * scale))
    assert whole.size == tiled.size == expected and tiled.mode == "RGB"
    assert counts and counts[0] > 1  # it did run in tiles
    difference = np.abs(pixels(whole) - pixels(tiled))
    assert difference.max() <= 1 and difference.mean() < 0.1
    assert pixels(whole).std() > 5  # the models make images, not flat grey


def test_the_model_runs_in_passes_as_a1111_runs_it() -> None:
    assert passes(100, 80, (200, 160), 4) == [(100, 80)]
    assert passes(100, 80, (400, 320), 2) == [(100, 80), (200, 160)]
    assert passes(100, 80, (350, 280), 2) == [(100, 80), (200, 160)]  # then down to 350
    assert passes(10, 10, (1000, 1000), 2) == [(10, 10), (20, 20), (40, 40)]  # at most 3
    assert passes(100, 80, (100, 80), 4) == []  # large enough already: a resize only
    assert passes(100, 80, (100, 80), 1) == [(100, 80)]  # a restoration model runs once


@pytest.mark.parametrize("align", [1, 4, 8])
@pytest.mark.parametrize("size", [17, 32, 33, 100, 257, 511])
@pytest.mark.parametrize(("tile", "overlap"), [(16, 4), (32, 16), (64, 32), (96, 8)])
def test_tiles_cover_the_image_overlap_and_sit_on_the_grid(
    size: int, tile: int, overlap: int, align: int
) -> None:
    layout = plan_tiles(size, size, tile, overlap, minimum=16, align=align)
    spans = layout.columns
    assert layout.rows == spans and spans[0][0] == 0 and spans[-1][1] == size
    if len(spans) == 1:
        assert spans == ((0, size),)
        return
    assert all(start % align == 0 for start, _ in spans)
    assert all(end - start >= max(tile, 16) for start, end in spans)
    assert all(end - start < max(tile, 16) + 2 * align for start, end in spans)
    for (start, end), (next_start, _) in itertools.pairwise(spans):
        assert start < next_start and end - next_start >= layout.overlap_x > 0


def test_feathered_weights_add_up_to_one_across_an_overlap() -> None:
    for scale in (1, 2, 4):
        overlap, length = 16, 48
        left = feather(length * scale, scale, overlap, False, True)
        right = feather(length * scale, scale, overlap, True, False)
        shared = overlap * scale
        total = left[-shared:] + right[:shared]
        assert np.allclose(total, 1.0)
        assert left[0] == 1.0 and left[-1] == 0.0 and right[0] == 0.0
    # Over any layout, every output pixel gets some weight.
    layout = plan_tiles(101, 77, 32, 16, align=4)
    weights = np.zeros((77 * 2, 101 * 2))
    for row, (top, bottom) in enumerate(layout.rows):
        ys = feather((bottom - top) * 2, 2, 16, top > 0, row < len(layout.rows) - 1)
        for column, (left_x, right_x) in enumerate(layout.columns):
            last = column < len(layout.columns) - 1
            xs = feather((right_x - left_x) * 2, 2, 16, left_x > 0, last)
            weights[top * 2 : bottom * 2, left_x * 2 : right_x * 2] += ys[:, None] * xs[None]
    assert weights.min() > 0.2


def test_progress_counts_every_tile_of_every_pass(files: Path) -> None:
    events: list[tuple[int, int]] = []
    result = upscale_image(
        noise(56, 56),
        "compact2",
        4,
        folders=[files],
        tile=32,
        overlap=8,
        on_progress=lambda done, total: events.append((done, total)),
    )
    assert result.size == (224, 224)
    # Pass 1 at 56 px: 2 x 2 tiles; pass 2 at 112 px: 5 x 5.
    first, second = plan_tiles(56, 56, 32, 8), plan_tiles(112, 112, 32, 8)
    assert (first.count, second.count) == (4, 25)
    assert events == [(done, 29) for done in range(1, 30)]


def test_cancelling_stops_between_tiles(files: Path) -> None:
    cancel = CancelToken()
    events: list[int] = []

    def on_progress(done: int, total: int) -> None:
        events.append(done)
        if done == 3:
            cancel.cancel()

    with pytest.raises(GenerationCancelled):
        upscale_image(
            noise(80, 80), "esrgan4", 4, folders=[files], tile=32, on_progress=on_progress,
            cancel=cancel,
        )  # fmt: skip
    assert events == [1, 2, 3]
    with pytest.raises(GenerationCancelled):  # a resize checks once
        upscale_image(noise(8, 8), "Lanczos", 2, cancel=cancel)


def test_built_in_resizes_are_pillows_and_transparency_is_kept(files: Path) -> None:
    image = noise(30, 20)
    lanczos = image.resize((75, 50), Image.Resampling.LANCZOS)
    assert np.array_equal(pixels(upscale_image(image, "lanczos", 2.5)), pixels(lanczos))
    assert np.array_equal(pixels(upscale_image(image, "None", 2.5)), pixels(lanczos))
    nearest = image.resize((60, 40), Image.Resampling.NEAREST)
    assert np.array_equal(
        pixels(upscale_image(image, "Nearest", 1, size=(60, 40))), pixels(nearest)
    )

    rgba = image.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((30, 20)))
    result = upscale_image(rgba, "esrgan4", 2, folders=[files])
    assert result.mode == "RGBA" and result.size == (60, 40)
    alpha = rgba.getchannel("A").resize((60, 40), Image.Resampling.LANCZOS)
    assert np.array_equal(pixels(result.getchannel("A")), pixels(alpha))


def test_memory_holds_a_band_of_rows_not_the_whole_image_in_floats(files: Path) -> None:
    """numpy's allocations (tracemalloc sees them; torch's are its own): the 8-bit output
    and a band one tile high, where a float accumulator of the image would take 4.5 times
    the output."""
    model = load_upscaler(files / "compact4.safetensors")
    image = noise(192, 192)
    upscale_with_model(model, image, (768, 768), tile=32)  # warm up
    tracemalloc.start()
    try:
        upscale_with_model(model, image, (768, 768), tile=32, overlap=16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    output = 768 * 768 * 3
    accumulator = 768 * 768 * 4 * 4  # float32 sums of 3 channels and a weight
    assert peak < output + accumulator / 2


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_running_out_of_memory_says_to_choose_a_smaller_tile() -> None:
    import torch
    from spandrel import MAIN_REGISTRY, ImageModelDescriptor

    class Exhausted(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    module = Exhausted()
    descriptor = ImageModelDescriptor(
        module, module.state_dict(), MAIN_REGISTRY.get("ESRGAN").architecture,
        purpose="SR", tags=[], supports_half=True, supports_bfloat16=True, scale=2,
        input_channels=3, output_channels=3,
    )  # fmt: skip
    model = UpscalerModel(Path("4x-Big.pth"), "ESRGAN", 2, descriptor)
    with pytest.raises(
        OutOfMemory, match=r"upscaling a 256x256 tile with 4x-Big; choose a smaller tile than 256"
    ):
        upscale_with_model(model, noise(300, 300), (600, 600), tile=256)
    with pytest.raises(OutOfMemory, match=r"the whole 300x300 image .* such as 256"):
        upscale_with_model(model, noise(300, 300), (600, 600), tile=0)


def test_the_tile_layout_is_one_tile_for_tile_0_or_a_small_image() -> None:
    assert plan_tiles(640, 480, 0, 32) == TileLayout(640, 480, 0, 0, ((0, 640),), ((0, 480),))
    assert plan_tiles(100, 90, 512, 32).count == 1
    assert plan_tiles(100, 600, 512, 32).columns == ((0, 100),)


def test_the_benchmark_measures_a_tiled_upscale(files: Path) -> None:
    path = Path(__file__).parents[1] / "benchmarks" / "upscale.py"
    spec = importlib.util.spec_from_file_location("upscale_benchmark", path)
    assert spec is not None and spec.loader is not None
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    figures = benchmark.measure(files / "esrgan4.pth", 48, 24)
    assert figures["tiles"] == 9 and figures["scale"] == 4
    assert figures["seconds"] > 0 and figures["peak_rss_mb"] >= figures["rss_before_mb"] > 0
