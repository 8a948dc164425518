"""Outpainting in the engine: growing an image on any side, with the new area pre-filled."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdstudio.engine.errors import ImageInputError
from sdstudio.engine.outpaint import (
    added_pixels,
    extend,
    extended_size,
    fill_from_surroundings,
)


def _picture(size: tuple[int, int] = (80, 72)) -> Image.Image:
    image = Image.new("RGB", size, (30, 90, 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, 60, 60), fill=(240, 200, 40))
    draw.rectangle((0, size[1] - 12, size[0], size[1]), fill=(20, 160, 40))
    return image


def _mask(size: tuple[int, int] = (80, 72)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, (20, 16, 40, 30))
    return mask


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


@pytest.mark.parametrize("fill", ["stretch", "blur"])
def test_300_pixels_on_one_side_keeps_the_original_and_masks_the_new_area(fill: str) -> None:
    image, mask = _picture(), _mask()
    grown, grown_mask = extend(image, mask, 0, 0, 300, 0, fill=fill)
    assert grown.size == grown_mask.size == (384, 72)  # 80 + 300 rounded up to 8s
    assert grown.mode == "RGB" and grown_mask.mode == "L"
    assert _pixels(grown)[:, :80].tobytes() == image.tobytes()
    assert _pixels(grown_mask)[:, :80].tobytes() == mask.tobytes()
    assert (_pixels(grown_mask)[:, 80:] == 255).all()


@pytest.mark.parametrize("fill", ["stretch", "blur"])
def test_all_four_sides_at_once(fill: str) -> None:
    image, mask = _picture((77, 61)), _mask((77, 61))
    grown, grown_mask = extend(image, mask, 30, 20, 40, 10, fill=fill, seed=5)
    left, top, right, bottom = added_pixels((77, 61), 30, 20, 40, 10)
    assert (left, top) == (30, 20) and (right, bottom) == (45, 15)  # the rounding goes far
    assert grown.size == (152, 96) and grown.width % 8 == grown.height % 8 == 0
    inside = (slice(top, top + 61), slice(left, left + 77))
    assert _pixels(grown)[inside].tobytes() == image.tobytes()
    assert _pixels(grown_mask)[inside].tobytes() == mask.tobytes()
    outside = np.ones((96, 152), bool)
    outside[inside] = False
    assert (_pixels(grown_mask)[outside] == 255).all()


@pytest.mark.parametrize(
    ("size", "sides", "expected"),
    [
        ((80, 72), (0, 0, 128, 0), (208, 72)),
        ((80, 72), (1, 0, 0, 0), (88, 72)),
        ((81, 70), (0, 0, 0, 3), (81, 80)),  # an axis not grown is left as it is
        ((64, 64), (8, 8, 8, 8), (80, 80)),
        ((100, 100), (5, 0, 5, 0), (112, 100)),
    ],
)
def test_sizes_are_rounded_up_to_multiples_of_8(
    size: tuple[int, int], sides: tuple[int, int, int, int], expected: tuple[int, int]
) -> None:
    assert extended_size(size, *sides) == expected
    grown, mask = extend(Image.new("RGB", size, (9, 9, 9)), None, *sides)
    assert grown.size == mask.size == expected


def test_the_new_area_is_stretched_edges_with_noise_not_a_flat_copy() -> None:
    image = _picture()
    grown, _ = extend(image, None, 0, 0, 304, 0, fill="stretch", seed=1)
    new = _pixels(grown)[:, 80:].astype(int)
    edge = _pixels(image)[:, -1:].astype(int)
    assert new.std(axis=1).mean() > 5  # noise, not the edge column repeated
    assert abs(new[:30].mean(axis=(0, 1)) - edge[:30].mean(axis=(0, 1))).max() < 12  # its colours
    assert new[-5:, :, 1].mean() > new[:30, :, 1].mean()  # the green ground goes on, as stretched


def test_the_blur_fill_is_smooth_and_takes_the_nearby_colours() -> None:
    image = _picture()
    grown, _ = extend(image, None, 0, 0, 304, 0, fill="blur")
    new = _pixels(grown)[:, 80:].astype(int)
    assert np.abs(np.diff(new[:, 16:], axis=1)).max() <= 3  # no noise, no steps
    near = new[:30, :4].mean(axis=(0, 1))
    assert abs(near - np.array([30, 90, 200])).max() < 20  # the sky next to the sky


@pytest.mark.parametrize("fill", ["stretch", "blur"])
def test_extending_is_deterministic_for_a_seed(fill: str) -> None:
    image, mask = _picture(), _mask()
    first = extend(image, mask, 16, 24, 40, 8, fill=fill, seed=3)
    again = extend(image, mask, 16, 24, 40, 8, fill=fill, seed=3)
    assert [i.tobytes() for i in first] == [i.tobytes() for i in again]
    if fill == "stretch":
        other = extend(image, mask, 16, 24, 40, 8, fill=fill, seed=4)
        assert other[0].tobytes() != first[0].tobytes()


def test_nothing_added_gives_the_same_image() -> None:
    image, mask = _picture(), _mask()
    grown, grown_mask = extend(image, mask, 0, 0, 0, 0)
    assert grown.tobytes() == image.tobytes() and grown_mask.tobytes() == mask.tobytes()


@pytest.mark.parametrize(
    ("sides", "message"),
    [
        ((-8, 0, 0, 0), "not -8 on the left"),
        ((0, 0, 0, 2056), "0 to 2048 pixels on a side"),
    ],
)
def test_bad_amounts_are_refused_clearly(sides: tuple[int, int, int, int], message: str) -> None:
    with pytest.raises(ImageInputError, match=message):
        extend(_picture(), None, *sides)


def test_bad_fill_and_mismatched_mask_are_refused_clearly() -> None:
    with pytest.raises(ImageInputError, match="Unknown outpainting fill 'tile'"):
        extend(_picture(), None, 8, 0, 0, 0, fill="tile")  # type: ignore[arg-type]
    with pytest.raises(ImageInputError, match="mask is 10×10 but the image is 80×72"):
        extend(_picture(), Image.new("L", (10, 10)), 8, 0, 0, 0)
    with pytest.raises(ImageInputError, match="mask is 10×10 but the image is 80×72"):
        fill_from_surroundings(_picture(), Image.new("L", (10, 10)))


def test_a_huge_result_is_refused() -> None:
    with pytest.raises(ImageInputError, match="megapixels"):
        extended_size((8000, 8000), 2048, 0, 0, 0)


def test_fill_from_surroundings_keeps_every_unmasked_pixel() -> None:
    image = _picture()
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (5, 5, 70, 60))  # the yellow circle, and sky and ground around it
    mask.paste(128, (70, 5, 75, 60))  # a soft edge is blended
    filled = fill_from_surroundings(image, mask)
    assert filled.mode == "RGB" and filled.size == image.size
    keep = _pixels(mask) == 0
    assert (_pixels(filled)[keep] == _pixels(image)[keep]).all()
    inside = _pixels(filled)[5:60, 5:70].astype(int)
    yellow = (inside[..., 0] > 150) & (inside[..., 2] < 100)
    assert yellow.sum() == 0  # the circle is gone, filled from the sky and ground around
    assert not (_pixels(filled)[~keep] == _pixels(image)[~keep]).all()


def test_fill_from_surroundings_with_nothing_or_everything_masked() -> None:
    image = _picture()
    untouched = fill_from_surroundings(image, Image.new("L", image.size, 0))
    assert untouched.tobytes() == image.tobytes()
    everything = _pixels(fill_from_surroundings(image, Image.new("L", image.size, 255)))
    assert (everything == everything[0, 0]).all()  # one colour: the image's mean
    assert abs(everything[0, 0].astype(int) - _pixels(image).mean(axis=(0, 1))).max() <= 1


def test_fill_from_surroundings_accepts_other_modes() -> None:
    image = _picture().convert("RGBA")
    mask = _mask().convert("1")
    filled = fill_from_surroundings(image, mask)
    keep = _pixels(_mask()) == 0
    assert filled.mode == "RGB"
    assert (_pixels(filled)[keep] == _pixels(image.convert("RGB"))[keep]).all()
