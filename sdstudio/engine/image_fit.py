"""Fitting a source image of any shape to the size a generation runs at.

The three ways are A1111's "Resize mode": stretch it (``resize``), scale it to
cover the size and cut off what sticks out (``crop``), or scale it to fit inside
and fill the rest by stretching its edges (``fill``). A mask is fitted the same
way, so it stays over the same pixels.
"""

from __future__ import annotations

from PIL import Image

from sdstudio.engine.request import ResizeMode


def fit_image(
    image: Image.Image,
    size: tuple[int, int],
    mode: ResizeMode,
    *,
    resample: Image.Resampling = Image.Resampling.LANCZOS,
) -> Image.Image:
    """``image`` fitted to ``size`` (itself when it has that size already)."""
    if image.size == size:
        return image
    width, height = size
    if mode is ResizeMode.RESIZE:
        return image.resize(size, resample)
    scale_x, scale_y = width / image.width, height / image.height
    if mode is ResizeMode.CROP:
        scale = max(scale_x, scale_y)
        scaled = _scaled(image, scale, size, resample, at_least=True)
        left = (scaled.width - width) // 2
        top = (scaled.height - height) // 2
        return scaled.crop((left, top, left + width, top + height))
    scale = min(scale_x, scale_y)
    scaled = _scaled(image, scale, size, resample, at_least=False)
    return _pad_with_edges(scaled, size)


def _scaled(
    image: Image.Image,
    scale: float,
    size: tuple[int, int],
    resample: Image.Resampling,
    *,
    at_least: bool,
) -> Image.Image:
    """``image`` scaled by ``scale``, rounded so that it covers (``at_least``) or fits
    in ``size``."""
    width = max(1, round(image.width * scale))
    height = max(1, round(image.height * scale))
    if at_least:
        width, height = max(width, size[0]), max(height, size[1])
    else:
        width, height = min(width, size[0]), min(height, size[1])
    return image.resize((width, height), resample)


def _pad_with_edges(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` centred in ``size``, the space around it filled with its edge pixels."""
    import numpy as np

    left = (size[0] - image.width) // 2
    top = (size[1] - image.height) // 2
    pixels = np.asarray(image)
    pad = [(top, size[1] - image.height - top), (left, size[0] - image.width - left)]
    pad += [(0, 0)] * (pixels.ndim - 2)
    return Image.fromarray(np.pad(pixels, pad, mode="edge"))
