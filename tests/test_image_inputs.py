"""Input images and masks from anywhere: only PNG, JPEG and WebP, bounded in size and frames,
any colour mode converted or refused clearly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hostile_images import (
    apng,
    eps_named_png,
    huge_png,
    record_decoding,
    record_ghostscript,
)
from PIL import Image

from sdstudio.engine.errors import ImageInputError
from sdstudio.engine.images import MAX_PIXELS, open_checked, open_image, open_mask, to_rgb
from sdstudio.engine.metadata import read_image_settings

OPENERS: dict[str, Callable[[Path], object]] = {
    "open_image": open_image,
    "open_mask": lambda path: open_mask(path, (64, 64)),
    "open_checked": open_checked,
    "read_image_settings": read_image_settings,
}


@pytest.mark.parametrize("opener", sorted(OPENERS))
def test_an_eps_file_named_png_is_refused_without_ghostscript(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opener: str
) -> None:
    started = record_ghostscript(monkeypatch)
    path = eps_named_png(tmp_path / "x.png")
    with pytest.raises(
        ImageInputError, match=r"x\.png is not a PNG, JPEG or WebP image \(it is EPS\)"
    ):
        OPENERS[opener](path)
    assert started == []


@pytest.mark.parametrize(
    ("mode", "suffix", "named"),
    [("LAB", "tif", "TIFF"), ("CMYK", "tif", "TIFF"), ("RGB", "bmp", "BMP"), ("P", "gif", "GIF")],
)
@pytest.mark.parametrize("opener", ["open_image", "open_mask"])
def test_other_formats_are_refused_by_name(
    tmp_path: Path, mode: str, suffix: str, named: str, opener: str
) -> None:
    path = tmp_path / f"input.{suffix}"
    Image.new(mode, (16, 16)).save(path)
    renamed = path.rename(tmp_path / "input.png")  # the name does not matter, the content does
    with pytest.raises(ImageInputError, match=rf"not a PNG, JPEG or WebP image \(it is {named}\)"):
        OPENERS[opener](renamed)


def test_unknown_content_is_refused_with_the_formats_read(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("%PDF-1.4 not really")
    with pytest.raises(ImageInputError, match=r"not an image file sdstudio can read \(PNG, JPEG"):
        open_image(path)


@pytest.fixture(scope="module")
def huge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """169 megapixels in a 165 kB file."""
    return huge_png(tmp_path_factory.mktemp("huge") / "huge.png", 13000, 13000)


@pytest.mark.parametrize("opener", ["open_image", "open_mask", "open_checked"])
def test_huge_images_are_refused_before_any_decode(
    huge: Path, monkeypatch: pytest.MonkeyPatch, opener: str
) -> None:
    decoded = record_decoding(monkeypatch)
    with pytest.raises(ImageInputError, match=r"13000x13000 pixels, more than the 67 megapixels"):
        OPENERS[opener](huge)
    assert decoded == []


def test_decompression_bombs_past_pillows_limit_get_a_clear_message(tmp_path: Path) -> None:
    bomb = huge_png(tmp_path / "bomb.png", 14000, 14000)  # over Pillow's own hard limit
    with pytest.raises(ImageInputError, match="too large to open safely"):
        open_image(bomb)


def test_only_the_first_frame_of_an_animation_is_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = apng(tmp_path / "anim.png", 400, side=16)
    decoded = record_decoding(monkeypatch)
    image = open_image(path)
    mask, _ = open_mask(path, (16, 16))
    assert image.getpixel((0, 0)) == (0, 0, 0) and mask.size == (16, 16)
    assert decoded == ["decoded PNG (16, 16)"] * 2  # one frame each, never a seek past it


def _sixteen_bit(path: Path) -> None:
    Image.new("I;16", (8, 8), 40000).save(path)


def _palette_with_transparency(path: Path) -> None:
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 200, 200, 200])
    image.putpixel((0, 0), 0)
    image.save(path, transparency=bytes([0, 255]))  # index 0 clear, index 1 opaque


def _one_bit(path: Path) -> None:
    image = Image.new("1", (8, 8), 1)
    image.putpixel((0, 0), 0)
    image.save(path)


def _cmyk_jpeg(path: Path) -> None:
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(path, "JPEG", quality=100)


MODES: dict[str, tuple[Callable[[Path], None], tuple[int, int, int], int]] = {
    # writer, the RGB source pixel at (1, 1), the mask value at (1, 1)
    "16-bit grey": (_sixteen_bit, (155, 155, 155), 155),  # scaled, not clipped to white
    "palette + transparency": (_palette_with_transparency, (200, 200, 200), 255),
    "1-bit": (_one_bit, (255, 255, 255), 255),
    "CMYK JPEG": (_cmyk_jpeg, (255, 255, 255), 255),
}


@pytest.mark.parametrize("kind", sorted(MODES))
def test_every_colour_mode_becomes_rgb_sources_and_greyscale_masks(
    tmp_path: Path, kind: str
) -> None:
    write, pixel, mask_value = MODES[kind]
    path = tmp_path / "input.png"
    write(path)
    image = open_image(path)
    assert (image.mode, image.getpixel((1, 1))) == ("RGB", pixel)
    mask, size = open_mask(path, (8, 8))
    assert (mask.mode, size, mask.getpixel((1, 1))) == ("L", (8, 8), mask_value)


def test_a_mask_on_a_transparent_palette_layer_is_its_painted_area(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    _palette_with_transparency(path)
    mask, _ = open_mask(path, (8, 8))
    assert (mask.getpixel((0, 0)), mask.getpixel((1, 1))) == (0, 255)


def test_to_rgb_converts_what_pillow_cannot_convert_directly() -> None:
    assert to_rgb(Image.new("LAB", (4, 4), (50, 0, 0))).mode == "RGB"
    assert to_rgb(Image.new("I;16", (4, 4), 65535)).getpixel((0, 0)) == (255, 255, 255)
    rgb = Image.new("RGB", (4, 4))
    assert to_rgb(rgb) is rgb


def test_the_pixel_limit_is_the_documented_one() -> None:
    assert MAX_PIXELS == 8192 * 8192
