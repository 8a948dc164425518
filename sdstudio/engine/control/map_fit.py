"""Fitting a control map to the generation's size with a unit's resize mode.

The modes are A1111's ControlNet "Resize Mode": Just Resize (``resize``), Crop and
Resize (``crop``: scale to cover, cut the middle out) and Resize and Fill (``fill``:
scale to fit inside, the rest filled with the median colour of the map's border, which
for an edge map is its black background). :func:`sdstudio.engine.image_fit.fit_image`
is not used because a map must not be smoothed as a photo is: as A1111 does, maps of
few colours (segmentation, poses) are scaled by nearest neighbour, and black-and-white
maps (edges, scribbles) are scaled smoothly and made black and white again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sdstudio.engine.control.units import ControlResize

if TYPE_CHECKING:
    import numpy as np


def fit_map(pixels: np.ndarray, size: tuple[int, int], mode: ControlResize) -> np.ndarray:
    """The RGB ``uint8`` map ``pixels`` fitted to ``size`` (width, height)."""
    import numpy as np

    width, height = size
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    scaled = _placed(pixels, size, mode, _scale_map)
    if mode is ControlResize.FILL:
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        colour = np.median(border, axis=0).astype(np.uint8)
        canvas = np.tile(colour[None, None], (height, width, 1))
        return _paste(canvas, scaled)
    return scaled


def fit_mask(mask: np.ndarray, size: tuple[int, int], mode: ControlResize) -> np.ndarray:
    """A boolean array of the pixels to repaint: the greyscale ``mask`` (white: repaint)
    fitted like its image; the border ``fill`` adds is to repaint."""
    import cv2
    import numpy as np

    def scale(part: np.ndarray, to: tuple[int, int]) -> np.ndarray:
        return cv2.resize(part, to, interpolation=cv2.INTER_LINEAR)

    if mask.shape[1] == size[0] and mask.shape[0] == size[1]:
        return mask >= 128
    scaled = _placed(mask, size, mode, scale)
    if mode is ControlResize.FILL:
        scaled = _paste(np.full((size[1], size[0]), 255, dtype=np.uint8), scaled)
    return scaled >= 128


def _placed(
    pixels: np.ndarray,
    size: tuple[int, int],
    mode: ControlResize,
    scale: Callable[[np.ndarray, tuple[int, int]], np.ndarray],
) -> np.ndarray:
    """``pixels`` scaled for ``mode``: stretched to ``size``, covering it with the middle
    cut out (``crop``), or fitting inside it (``fill``, not yet placed)."""
    width, height = size
    if mode is ControlResize.RESIZE:
        return scale(pixels, size)
    old_height, old_width = pixels.shape[:2]
    ratio = (max if mode is ControlResize.CROP else min)(width / old_width, height / old_height)
    new_width = max(1, round(old_width * ratio))
    new_height = max(1, round(old_height * ratio))
    if mode is ControlResize.CROP:
        new_width, new_height = max(new_width, width), max(new_height, height)
        scaled = scale(pixels, (new_width, new_height))
        left, top = (new_width - width) // 2, (new_height - height) // 2
        return scaled[top : top + height, left : left + width]
    return scale(pixels, (min(new_width, width), min(new_height, height)))


def _paste(canvas: np.ndarray, part: np.ndarray) -> np.ndarray:
    """``part`` in the middle of ``canvas``."""
    top = (canvas.shape[0] - part.shape[0]) // 2
    left = (canvas.shape[1] - part.shape[1]) // 2
    canvas[top : top + part.shape[0], left : left + part.shape[1]] = part
    return canvas


def _scale_map(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A map scaled to ``size`` keeping its kind: few colours stay exact, black and
    white stays black and white."""
    import cv2
    import numpy as np

    if pixels.shape[1] == size[0] and pixels.shape[0] == size[1]:
        return pixels
    colours = _colour_count(pixels)
    binary = colours == 2 and pixels.min() < 16 and pixels.max() > 240
    smaller = size[0] * size[1] < pixels.shape[0] * pixels.shape[1]
    if 2 < colours < 200:
        interpolation = cv2.INTER_NEAREST
    elif smaller:
        interpolation = cv2.INTER_AREA
    else:
        interpolation = cv2.INTER_CUBIC
    scaled = cv2.resize(pixels, size, interpolation=interpolation)
    if not binary:
        return scaled
    gray = np.mean(scaled.astype(np.float32), axis=2).clip(0, 255).astype(np.uint8)
    _, white = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return np.repeat(white[:, :, None], 3, axis=2)


def _colour_count(pixels: np.ndarray, enough: int = 200) -> int:
    """How many colours the map has (at least ``enough`` when a sample has that many)."""
    import numpy as np

    wide = pixels.astype(np.uint32)
    packed = ((wide[:, :, 0] << 16) | (wide[:, :, 1] << 8) | wide[:, :, 2]).ravel()
    for values in (packed[::61], packed):
        ordered = np.sort(values)
        count = 1 + int(np.count_nonzero(ordered[1:] != ordered[:-1]))
        if count >= enough:
            break
    return count
