"""X/Y/Z plot grids: A1111's layout, labels where they belong, mixed sizes, the PNG file."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.xyz.axes import parse_axis
from sdstudio.engine.xyz.compose import CellImage, compose_grid
from sdstudio.engine.xyz.grid import EMPTY_CELL, XYZ_KEY, draw_grid, layout_grid
from sdstudio.engine.xyz.plan import plan_plot

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200)]


def tiles(count: int, size: tuple[int, int] = (96, 64)) -> list[Image.Image | None]:
    return [Image.new("RGB", size, COLOURS[i % len(COLOURS)]) for i in range(count)]


def has_ink(grid: Image.Image, centre: tuple[float, float], radius: int = 6) -> bool:
    """Whether there is dark text around ``centre``."""
    x, y = int(centre[0]), int(centre[1])
    box = grid.crop((x - 3 * radius, y - radius, x + 3 * radius, y + radius)).convert("L")
    return box.getextrema()[0] < 100


@pytest.mark.parametrize(("columns", "rows"), [(2, 2), (3, 3)])
def test_grid_layout_and_labels(columns: int, rows: int) -> None:
    x_labels = [f"Steps: {i}" for i in range(columns)]
    y_labels = [f"CFG: {i}" for i in range(rows)]
    layout = layout_grid((240, 160), (columns, rows, 1), x_labels, y_labels)[0]
    assert layout.font_size == (240 + 160) // 25
    assert layout.pad_left == 240 * 3 // 4
    assert layout.pad_top > layout.font_size  # a line of text and its spacing
    assert layout.size == (layout.pad_left + columns * 240, layout.pad_top + rows * 160)
    assert layout.cells[0] == (layout.pad_left, layout.pad_top)
    assert layout.cells[columns] == (layout.pad_left, layout.pad_top + 160)  # row 2 starts
    assert layout.x_label_centres[1] == (layout.pad_left + 240 + 120, layout.pad_top / 2)
    assert layout.y_label_centres[1] == (layout.pad_left / 2, layout.pad_top + 160 + 80)

    grid = draw_grid(tiles(columns * rows, (240, 160)), (columns, rows, 1), x_labels, y_labels)
    assert grid.size == layout.size
    for index, (left, top) in enumerate(layout.cells):
        assert grid.getpixel((left + 120, top + 80)) == COLOURS[index % len(COLOURS)]
    for centre in layout.x_label_centres + layout.y_label_centres:
        assert has_ink(grid, centre)
    assert grid.getpixel((2, 2)) == (255, 255, 255)  # the corner stays blank


def test_sub_grids_for_z_side_by_side_with_titles() -> None:
    shape = (2, 2, 3)
    z_labels = ["Sampler A", "Sampler B", "Sampler C"]
    layout = layout_grid((64, 64), shape, ["x1", "x2"], ["y1", "y2"], z_labels)[0]
    sub_width, sub_height = layout.sub_grid
    assert layout.size == (3 * sub_width, sub_height + layout.title_height)
    assert layout.title_height > layout.title_font_size
    assert len(layout.cells) == 12
    # Cell 4 (x0, y0 of the second Z) starts one sub-grid to the right.
    assert layout.cells[4][0] - layout.cells[0][0] == sub_width
    assert layout.cells[4][1] == layout.cells[0][1] == layout.title_height + layout.pad_top
    assert [c[0] for c in layout.title_centres] == [sub_width * (i + 0.5) for i in range(3)]

    grid = draw_grid(tiles(12, (64, 64)), shape, ["x1", "x2"], ["y1", "y2"], z_labels)
    assert grid.size == layout.size
    for centre in layout.title_centres + layout.x_label_centres[2:4]:
        assert has_ink(grid, centre)


def test_no_y_axis_leaves_no_left_margin_and_long_labels_wrap() -> None:
    long = "a very long prompt about a lighthouse on a cliff in a storm at night"
    layout, x_text, _y, _z = layout_grid((128, 128), (2, 1, 1), [long, "short"], [])
    assert layout.pad_left == 0
    assert len(x_text.lines[0]) > 2 and x_text.lines[1] == ["short"]
    one_line = layout_grid((128, 128), (2, 1, 1), ["short", "short"], [])[0]
    assert layout.pad_top > 2 * one_line.pad_top
    grid = draw_grid(tiles(2, (128, 128)), (2, 1, 1), [long, "short"])
    assert grid.size == (256, 128 + layout.pad_top)


def test_images_of_other_sizes_are_centred_and_missing_cells_grey() -> None:
    images: list[Image.Image | None] = [
        Image.new("RGB", (64, 96), (200, 30, 30)),
        Image.new("RGB", (96, 64), (30, 200, 30)),
        None,
    ]
    layout = layout_grid((96, 96), (3, 1, 1), ["a", "b", "c"], [])[0]
    grid = draw_grid(images, (3, 1, 1), ["a", "b", "c"])
    assert grid.size == layout.size
    (left0, top), (left1, _), (left2, _) = layout.cells
    assert grid.getpixel((left0 + 2, top + 50)) == (255, 255, 255)  # beside the tall image
    assert grid.getpixel((left0 + 48, top + 50)) == (200, 30, 30)
    assert grid.getpixel((left1 + 48, top + 2)) == (255, 255, 255)  # above the wide one
    assert grid.getpixel((left1 + 48, top + 48)) == (30, 200, 30)
    assert grid.getpixel((left2 + 48, top + 48)) == EMPTY_CELL
    with pytest.raises(ValueError, match="4 images for a 3x1x1 grid"):
        draw_grid([*images, None], (3, 1, 1), ["a", "b", "c"])


def test_compose_writes_the_grid_with_parameters_into_grids(tmp_path: Path) -> None:
    base = GenerationRequest(model="m", prompt="a boat", seed=3)
    plot = plan_plot(base, [parse_axis("Steps", "1,2"), parse_axis("CFG Scale", "3,4")])
    made = {}
    for cell in plot.cells[:3]:  # the fourth was cancelled
        path = tmp_path / f"cell{cell.index}.png"
        info = PngInfo()
        info.add_text("parameters", f"a boat\nSteps: {cell.request.steps}, Seed: 3")
        Image.new("RGB", (64, 64), COLOURS[cell.index]).save(path, pnginfo=info)
        made[cell.index] = CellImage(str(path), 10 + cell.index)
    outputs = tmp_path / "outputs"
    path, grid = compose_grid(plot, made, outputs, now=datetime(2026, 1, 2, 3, 4, 5))
    assert path == outputs / "grids" / "xyz-20260102-030405-000.png"
    with Image.open(path) as saved:
        assert saved.size == grid.size
        assert saved.info["parameters"] == (
            'a boat\nSteps: 1, Seed: 3, X Type: Steps, X Values: "1,2", '
            'Y Type: CFG Scale, Y Values: "3,4"'
        )
        record = json.loads(saved.info[XYZ_KEY])
    assert [c["id"] for c in record["cells"]] == [10, 11, 12, None]
    assert record["axes"][1]["labels"] == ["CFG Scale: 3.0", "CFG Scale: 4.0"]
    again, _ = compose_grid(plot, made, outputs, now=datetime(2026, 1, 2, 3, 4, 5))
    assert again != path and again.exists()  # never replaces a grid
    with pytest.raises(SdStudioError, match="made no image"):
        compose_grid(plot, {}, outputs)
