"""Outpainting: growing a source image on any side, with the new area pre-filled.

The model repaints the new area (its mask is white), but it starts from what
is there: a flat or empty border gives flat, washed-out results. Two fills:

- ``"stretch"``: the edge pixels stretched outwards, softened with distance,
  plus gaussian noise, so the model has colours and texture to start from;
- ``"blur"``: a smooth fill from the surrounding colours
  (:func:`fill_from_surroundings`, a harmonic fill solved coarse to fine).

Both are written with numpy (OpenCV's Telea inpainting would need a large
dependency for a starting point the model repaints anyway). Sizes grow so that
an extended side ends on a multiple of 8, as the models need.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from PIL import Image

from sdstudio.engine.errors import ImageInputError
from sdstudio.engine.images import MAX_PIXELS

Fill = Literal["stretch", "blur"]
FILLS: tuple[Fill, ...] = ("stretch", "blur")
MAX_EXTEND = 2048
"""The most pixels one outpainting adds on one side."""
MULTIPLE = 8
NOISE = 24.0
"""The standard deviation (of 255) of the noise far from the old edge."""
RAMP = 32
"""Pixels from the old edge over which the stretch softens and the noise grows."""
PASSES = 8
"""Smoothing passes at each size of the blur fill."""

Array = np.ndarray[Any, Any]


def added_pixels(
    size: tuple[int, int], left: int, top: int, right: int, bottom: int
) -> tuple[int, int, int, int]:
    """The pixels really added on each side: on an axis that grows, rounded up so that
    the new width (height) is a multiple of 8, the extra going right (bottom) when
    that side grows, else left (top). Raises :class:`ImageInputError` for a bad amount."""
    for name, value in (("left", left), ("top", top), ("right", right), ("bottom", bottom)):
        if not 0 <= value <= MAX_EXTEND:
            raise ImageInputError(
                f"Outpainting adds 0 to {MAX_EXTEND} pixels on a side, not {value} on the {name}."
            )
    width, height = size
    left, right = _round_axis(width, left, right)
    top, bottom = _round_axis(height, top, bottom)
    new_width, new_height = width + left + right, height + top + bottom
    if new_width * new_height > MAX_PIXELS:
        raise ImageInputError(
            f"Outpainting to {new_width}×{new_height} would make an image of more than "
            f"the {MAX_PIXELS // 1_000_000} megapixels sdstudio works with."
        )
    return left, top, right, bottom


def extended_size(
    size: tuple[int, int], left: int, top: int, right: int, bottom: int
) -> tuple[int, int]:
    """The size :func:`extend` makes of an image of ``size``."""
    left, top, right, bottom = added_pixels(size, left, top, right, bottom)
    return size[0] + left + right, size[1] + top + bottom


def extend(
    image: Image.Image,
    mask: Image.Image | None,
    left: int,
    top: int,
    right: int,
    bottom: int,
    fill: Fill = "stretch",
    seed: int = 0,
) -> tuple[Image.Image, Image.Image]:
    """``image`` grown by the given pixels per side (see :func:`added_pixels`), and its
    mask (``"L"``, 255 = repaint; ``None`` is an empty mask) grown with white.

    The old pixels and the old mask are kept exactly; the new area is pre-filled
    with ``fill``. The same arguments and ``seed`` give the same result.
    """
    if fill not in FILLS:
        raise ImageInputError(f"Unknown outpainting fill {fill!r}: use one of {', '.join(FILLS)}.")
    rgb = image.convert("RGB")
    if mask is not None and mask.size != rgb.size:
        raise ImageInputError(
            f"The mask is {mask.width}×{mask.height} but the image is {rgb.width}×{rgb.height}."
        )
    left, top, right, bottom = added_pixels(rgb.size, left, top, right, bottom)
    old = np.asarray(rgb)
    pad = ((top, bottom), (left, right))
    old_mask = np.zeros(old.shape[:2], np.uint8) if mask is None else np.asarray(mask.convert("L"))
    new_mask = np.pad(old_mask, pad, mode="constant", constant_values=255)
    if not any((left, top, right, bottom)):
        return rgb.copy(), Image.fromarray(new_mask)
    if fill == "blur":
        canvas = Image.fromarray(np.pad(old, (*pad, (0, 0)), mode="edge"))
        new_area = np.pad(np.zeros(old.shape[:2], np.uint8), pad, constant_values=255)
        filled = np.asarray(fill_from_surroundings(canvas, Image.fromarray(new_area)))
    else:
        filled = _stretch(old, pad, seed)
    filled = filled.copy()
    filled[top : top + old.shape[0], left : left + old.shape[1]] = old
    return Image.fromarray(filled), Image.fromarray(new_mask)


def fill_from_surroundings(image: Image.Image, mask: Image.Image) -> Image.Image:
    """``image`` (RGB) with the area ``mask`` marks (``"L"``, 255 = fill) filled smoothly
    from the colours around it.

    Pixels where the mask is 0 are returned exactly as they are; partly masked
    pixels (a blurred mask's edge) are blended towards the fill. A mask that
    covers everything gives the image's mean colour.
    """
    rgb = image.convert("RGB")
    if mask.size != rgb.size:
        raise ImageInputError(
            f"The mask is {mask.width}×{mask.height} but the image is {rgb.width}×{rgb.height}."
        )
    pixels = np.asarray(rgb)
    amount = np.asarray(mask.convert("L"))
    known = amount == 0
    if known.all():
        return rgb.copy()
    colours = pixels.astype(np.float32)
    if known.any():
        smooth = _diffuse(colours, known)
    else:
        smooth = np.broadcast_to(colours.mean(axis=(0, 1)), colours.shape)
    weight = (amount.astype(np.float32) / 255.0)[..., None]
    blended = np.clip(np.rint(colours + (smooth - colours) * weight), 0, 255).astype(np.uint8)
    return Image.fromarray(np.where(known[..., None], pixels, blended))


def _round_axis(length: int, before: int, after: int) -> tuple[int, int]:
    if before + after == 0:
        return before, after
    extra = -(length + before + after) % MULTIPLE
    return (before, after + extra) if after or not before else (before + extra, after)


def _stretch(old: Array, pad: tuple[tuple[int, int], ...], seed: int) -> Array:
    """The edge pixels stretched over the new area, softened away from the old edge,
    with noise that grows with the distance."""
    stretched = np.pad(old, (*pad, (0, 0)), mode="edge").astype(np.float32)
    soft = stretched
    for _ in range(3):
        soft = _box_blur(soft, RAMP // 4)
    distance = _distance_outside(old.shape[:2], pad)
    ramp = np.clip(distance / RAMP, 0.0, 1.0)[..., None]
    base = stretched + (soft - stretched) * ramp
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(base.shape, dtype=np.float32) * (NOISE * np.maximum(ramp, 0.25))
    return np.clip(np.rint(base + noise), 0, 255).astype(np.uint8)


def _distance_outside(size: tuple[int, int], pad: tuple[tuple[int, int], ...]) -> Array:
    """Each pixel's distance (Chebyshev) from the old image's rectangle; 0 inside it."""
    height, width = size
    (top, bottom), (left, right) = pad
    ys = np.arange(height + top + bottom, dtype=np.float32) - top
    xs = np.arange(width + left + right, dtype=np.float32) - left
    dy = np.maximum(np.maximum(-ys, ys - (height - 1)), 0.0)
    dx = np.maximum(np.maximum(-xs, xs - (width - 1)), 0.0)
    return np.maximum(dy[:, None], dx[None, :])


def _box_blur(pixels: Array, radius: int) -> Array:
    """A box blur of ``radius`` along both axes, edges repeated."""
    for axis in (0, 1):
        padding = [(0, 0)] * pixels.ndim
        padding[axis] = (radius + 1, radius)
        sums = np.cumsum(np.pad(pixels, padding, mode="edge"), axis=axis, dtype=np.float32)
        length = pixels.shape[axis]
        upper = np.take(sums, np.arange(2 * radius + 1, 2 * radius + 1 + length), axis=axis)
        lower = np.take(sums, np.arange(0, length), axis=axis)
        pixels = (upper - lower) / (2 * radius + 1)
    return pixels


def _diffuse(colours: Array, known: Array) -> Array:
    """Fill the pixels not ``known`` smoothly from the known ones around them (the
    harmonic fill: each unknown pixel the mean of its neighbours), solved coarse to
    fine so that large areas need only a few passes at each size."""
    height, width = known.shape
    if known.all() or height == width == 1:
        return colours
    weight = known.astype(np.float32)
    coarse_weight = _halve(weight)
    coarse_sums = _halve(colours * weight[..., None])
    coarse_colours = coarse_sums / np.maximum(coarse_weight, 1e-6)[..., None]
    guess = _double(_diffuse(coarse_colours, coarse_weight > 0), (height, width))
    filled = np.where(known[..., None], colours, guess)
    for _ in range(PASSES):
        around = np.pad(filled, ((1, 1), (1, 1), (0, 0)), mode="edge")
        mean = (around[:-2, 1:-1] + around[2:, 1:-1] + around[1:-1, :-2] + around[1:-1, 2:]) / 4
        filled = np.where(known[..., None], colours, mean)
    return filled


def _halve(values: Array) -> Array:
    """Average 2×2 blocks (an odd last row or column is repeated)."""
    height, width = values.shape[:2]
    padding = [(0, height % 2), (0, width % 2)] + [(0, 0)] * (values.ndim - 2)
    values = np.pad(values, padding, mode="edge")
    return (values[0::2, 0::2] + values[1::2, 0::2] + values[0::2, 1::2] + values[1::2, 1::2]) / 4


def _double(values: Array, shape: tuple[int, ...]) -> Array:
    """Bilinear upsampling by 2 to ``shape`` (height, width)."""
    for axis, length in enumerate(shape[:2]):
        source = values.shape[axis]
        position = np.clip((np.arange(length, dtype=np.float32) + 0.5) / 2 - 0.5, 0, source - 1)
        below = np.floor(position).astype(int)
        above = np.minimum(below + 1, source - 1)
        along = [-1 if a == axis else 1 for a in range(values.ndim)]
        weight = (position - below.astype(np.float32)).reshape(along)
        values = (
            np.take(values, below, axis=axis) * (1 - weight)
            + np.take(values, above, axis=axis) * weight
        )
    return values
