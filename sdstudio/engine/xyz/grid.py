"""Drawing an X/Y/Z plot's images into one labelled grid, as A1111 lays it out.

Each Z value gets a sub-grid: X labels across its top, Y labels down its left,
one cell per image. Sub-grids stand side by side, each titled with its Z label.
Sizes follow A1111's ``draw_grid_annotations``: the font is (cell width + cell
height) / 25 pixels, the left margin three quarters of a cell, and labels too
long for their room are wrapped at spaces. Images of different sizes (a Size
axis) are centred in cells as large as the largest of them, at their own size, so
that pixels compare one to one; a cell whose image is missing (a cancelled or
failed generation) stays grey.

The font is Pillow's own (``ImageFont.load_default(size=…)``, a scalable font
shipped inside Pillow), so the grid looks the same on every system.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from sdstudio.engine.fileio import write_atomically

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
EMPTY_CELL = (128, 128, 128)
GRIDS_FOLDER = "grids"
XYZ_KEY = "sdstudio-xyz"
"""The PNG text chunk holding the plot's axes and cells as JSON."""

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont | ImageFont.TransposedFont


def _font(size: int) -> Font:
    return ImageFont.load_default(size=size)


def _wrap(text: str, font: Font, width: float) -> list[str]:
    """``text`` in lines no wider than ``width`` where spaces allow (A1111's wrapping)."""
    lines = [""]
    for word in text.split():
        line = f"{lines[-1]} {word}".strip()
        if font.getlength(line) <= width or not lines[-1]:
            lines[-1] = line
        else:
            lines.append(word)
    return lines


def _line_height(line: str, font: Font) -> int:
    _left, top, _right, bottom = font.getbbox(line or " ")
    return int(bottom - top)


@dataclass(slots=True)
class Labels:
    """Labels wrapped for their room, with their heights."""

    lines: list[list[str]]
    spacing: int

    def height(self, index: int, font: Font) -> int:
        """The height of label ``index``: its lines and the spacing between them."""
        lines = self.lines[index]
        return sum(_line_height(line, font) for line in lines) + self.spacing * (len(lines) - 1)


@dataclass(slots=True)
class GridLayout:
    """Where everything of a grid goes; computed before anything is drawn."""

    cell: tuple[int, int]
    shape: tuple[int, int, int]
    pad_left: int
    pad_top: int
    title_height: int
    font_size: int
    title_font_size: int
    size: tuple[int, int] = (0, 0)
    cells: list[tuple[int, int]] = field(default_factory=list)
    """Each cell's top-left corner, in cell index order."""
    x_label_centres: list[tuple[float, float]] = field(default_factory=list)
    """The centre of each X label of each sub-grid (Z major)."""
    y_label_centres: list[tuple[float, float]] = field(default_factory=list)
    title_centres: list[tuple[float, float]] = field(default_factory=list)

    @property
    def sub_grid(self) -> tuple[int, int]:
        """The width and height of one sub-grid with its labels (not its title)."""
        columns, rows, _ = self.shape
        return self.pad_left + columns * self.cell[0], self.pad_top + rows * self.cell[1]


def cell_size(images: Sequence[Image.Image | None]) -> tuple[int, int]:
    """A cell as large as the largest image (in each direction)."""
    present = [image for image in images if image is not None]
    if not present:
        return 64, 64
    return max(i.width for i in present), max(i.height for i in present)


def layout_grid(
    cell: tuple[int, int],
    shape: tuple[int, int, int],
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    z_labels: Sequence[str] = (),
) -> tuple[GridLayout, Labels, Labels, Labels]:
    """Where the cells and labels of a grid of ``shape`` (columns, rows, sub-grids) go."""
    width, height = cell
    columns, rows, depth = shape
    font_size = max(8, (width + height) // 25)
    spacing = font_size // 2
    font = _font(font_size)
    pad_left = width * 3 // 4 if any(y_labels) else 0
    x_text = Labels([_wrap(t, font, width) for t in x_labels], spacing)
    y_text = Labels([_wrap(t, font, max(1, pad_left)) for t in y_labels], spacing)
    x_heights = [x_text.height(i, font) for i in range(len(x_labels))]
    pad_top = max(x_heights) + spacing * 2 if any(x_labels) else 0
    sub_width, sub_height = pad_left + columns * width, pad_top + rows * height

    title_size = max(8, (sub_width + sub_height) // 25)
    title_font = _font(title_size)
    titles = Labels([_wrap(t, title_font, sub_width) for t in z_labels], title_size // 2)
    title_height = 0
    if any(z_labels):
        title_height = max(titles.height(i, title_font) for i in range(len(z_labels)))
        title_height += title_size  # half the font size above and below, as A1111
    layout = GridLayout(
        cell,
        shape,
        pad_left,
        pad_top,
        title_height,
        font_size,
        title_size,
        size=(sub_width * depth, sub_height + title_height),
    )
    for z in range(depth):
        left = z * sub_width
        top = title_height
        for y in range(rows):
            for x in range(columns):
                layout.cells.append((left + pad_left + x * width, top + pad_top + y * height))
        layout.x_label_centres += (
            [(left + pad_left + width * x + width / 2, top + pad_top / 2) for x in range(columns)]
            if any(x_labels)
            else []
        )
        layout.y_label_centres += (
            [(left + pad_left / 2, top + pad_top + height * y + height / 2) for y in range(rows)]
            if any(y_labels)
            else []
        )
        if any(z_labels):
            layout.title_centres.append((left + sub_width / 2, title_height / 2))
    return layout, x_text, y_text, titles


def draw_grid(
    images: Sequence[Image.Image | None],
    shape: tuple[int, int, int],
    x_labels: Sequence[str],
    y_labels: Sequence[str] = (),
    z_labels: Sequence[str] = (),
) -> Image.Image:
    """The grid of ``images`` (in cell index order, ``x + y * nx + z * nx * ny``)."""
    columns, rows, depth = shape
    if len(images) != columns * rows * depth:
        raise ValueError(f"{len(images)} images for a {columns}x{rows}x{depth} grid")
    cell = cell_size(images)
    layout, x_text, y_text, titles = layout_grid(cell, shape, x_labels, y_labels, z_labels)
    grid = Image.new("RGB", layout.size, BACKGROUND)
    for image, (left, top) in zip(images, layout.cells, strict=True):
        if image is None:
            grid.paste(EMPTY_CELL, (left, top, left + cell[0], top + cell[1]))
            continue
        offset = ((cell[0] - image.width) // 2, (cell[1] - image.height) // 2)
        grid.paste(image.convert("RGB"), (left + offset[0], top + offset[1]))
    draw = ImageDraw.Draw(grid)
    font, title_font = _font(layout.font_size), _font(layout.title_font_size)
    for i, centre in enumerate(layout.x_label_centres):
        _draw_label(draw, centre, x_text, i % columns, font)
    for i, centre in enumerate(layout.y_label_centres):
        _draw_label(draw, centre, y_text, i % rows, font)
    for i, centre in enumerate(layout.title_centres):
        _draw_label(draw, centre, titles, i, title_font)
    return grid


def _draw_label(
    draw: ImageDraw.ImageDraw, centre: tuple[float, float], labels: Labels, index: int, font: Font
) -> None:
    """The lines of label ``index`` centred on ``centre``."""
    lines = labels.lines[index]
    y = centre[1] - labels.height(index, font) / 2
    for line in lines:
        line_height = _line_height(line, font)
        draw.text((centre[0], y + line_height / 2), line, font=font, fill=TEXT, anchor="mm")
        y += line_height + labels.spacing


def grid_png(image: Image.Image, parameters: str, plot_json: str) -> bytes:
    """The grid as PNG bytes, with A1111's ``parameters`` text and the plot as JSON."""
    info = PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    info.add_text(XYZ_KEY, plot_json)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=4)
    return buffer.getvalue()


def save_grid(data: bytes, outputs_dir: Path, *, now: datetime | None = None) -> Path:
    """Write a grid's PNG bytes into the outputs folder's ``grids`` folder, whole or not at
    all, under a new name (``xyz-20261122-173328-512.png``)."""
    now = now or datetime.now()
    stem = f"xyz-{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}"
    folder = outputs_dir / GRIDS_FOLDER
    for attempt in range(1000):
        name = f"{stem}.png" if attempt == 0 else f"{stem}-{attempt}.png"
        try:
            return write_atomically(folder / name, data, overwrite=False)
        except FileExistsError:
            continue
    raise FileExistsError(f"Could not find a free file name for {stem} in {folder}.")
