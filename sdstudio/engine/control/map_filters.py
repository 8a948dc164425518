"""The built-in control map filters: what A1111's ControlNet extension computes for its
preprocessors that need no annotator weights, written here from its documented
behaviour with OpenCV and NumPy.

Each filter takes an RGB ``uint8`` array of shape (height, width, 3), already at its
working size, with the preprocessor's two settings, and returns an RGB ``uint8`` array.
Filters that look at neighbouring pixels (``canny``, ``lineart_standard``,
``scribble_xdog``, ``threshold``) work on the image padded with its edge pixels to a
multiple of 64, as A1111 does, so that their maps match its maps at the borders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    Pixels = np.ndarray
    Filter = Callable[[np.ndarray, float, float, int], np.ndarray]

SHUFFLE_CELL = 256
"""The size in pixels of a cell of the shuffle's smooth random flow (A1111's ``f``)."""


def _gray_to_rgb(gray: Pixels) -> Pixels:
    import numpy as np

    return np.repeat(gray[:, :, None], 3, axis=2)


def _padded(pixels: Pixels) -> Pixels:
    """``pixels`` extended with its edge pixels to a multiple of 64 on each side."""
    import numpy as np

    height, width = pixels.shape[:2]
    pad = [(0, -height % 64), (0, -width % 64), (0, 0)]
    return np.pad(pixels, pad, mode="edge")


def _on_padded(work: Callable[[Pixels], Pixels], pixels: Pixels) -> Pixels:
    """``work`` run on the edge-padded image, cut back to the image's size."""
    import numpy as np

    height, width = pixels.shape[:2]
    return np.ascontiguousarray(work(_padded(pixels))[:height, :width])


def canny(pixels: Pixels, low: float, high: float, seed: int) -> Pixels:
    """OpenCV's Canny edges: white lines on black; ``low`` and ``high`` are the
    hysteresis thresholds (gradients above ``high`` start an edge, above ``low`` extend it)."""
    import cv2

    return _gray_to_rgb(_on_padded(lambda x: cv2.Canny(x, int(low), int(high)), pixels))


def invert(pixels: Pixels, a: float, b: float, seed: int) -> Pixels:
    """A black-on-white drawing turned into the white-on-black map line models read."""
    return 255 - pixels


def lineart_standard(pixels: Pixels, a: float, b: float, seed: int) -> Pixels:
    """Dark lines found by how much darker each pixel is than its blurred surroundings,
    scaled by the median line strength: white lines on black."""
    import cv2
    import numpy as np

    def work(x: Pixels) -> Pixels:
        values = x.astype(np.float32)
        blurred = cv2.GaussianBlur(values, (0, 0), 6.0)
        intensity = np.min(blurred - values, axis=2).clip(0, 255)
        strong = intensity[intensity > 8]
        median = float(np.median(strong)) if strong.size else 0.0
        intensity = intensity / max(16.0, median) * 127
        return intensity.clip(0, 255).astype(np.uint8)

    return _gray_to_rgb(_on_padded(work, pixels))


def scribble_xdog(pixels: Pixels, threshold: float, b: float, seed: int) -> Pixels:
    """Scribble lines by a difference of Gaussians (sigmas 0.5 and 5): white where the
    fine-minus-coarse darkening, doubled, exceeds ``threshold``."""
    import cv2
    import numpy as np

    def work(x: Pixels) -> Pixels:
        values = x.astype(np.float32)
        fine = cv2.GaussianBlur(values, (0, 0), 0.5)
        coarse = cv2.GaussianBlur(values, (0, 0), 5.0)
        dog = (255 - np.min(coarse - fine, axis=2)).clip(0, 255).astype(np.uint8)
        result = np.zeros(x.shape[:2], dtype=np.uint8)
        result[2 * (255 - dog.astype(np.int32)) > threshold] = 255
        return result

    return _gray_to_rgb(_on_padded(work, pixels))


def threshold(pixels: Pixels, level: float, b: float, seed: int) -> Pixels:
    """White where every channel is brighter than ``level``, black elsewhere."""
    import numpy as np

    def work(x: Pixels) -> Pixels:
        return np.where(np.min(x, axis=2) > level, 255, 0).astype(np.uint8)

    return _gray_to_rgb(_on_padded(work, pixels))


def tile_resample(pixels: Pixels, rate: float, b: float, seed: int) -> Pixels:
    """The image made ``rate`` times smaller (area-averaged); below 1.1 it is kept."""
    import cv2

    if rate < 1.1:
        return pixels
    height, width = pixels.shape[:2]
    size = (max(1, int(width / rate)), max(1, int(height / rate)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def blur_gaussian(pixels: Pixels, sigma: float, b: float, seed: int) -> Pixels:
    """The image blurred with a Gaussian of ``sigma`` pixels."""
    import cv2

    return cv2.GaussianBlur(pixels, (0, 0), float(sigma))


def recolor_luminance(pixels: Pixels, gamma: float, b: float, seed: int) -> Pixels:
    """The image's lightness (L of Lab) raised to ``gamma``, as grey. The channels are
    read in the order A1111 reads them (as BGR), so that its maps come out the same."""
    import cv2

    return _gamma_gray(cv2.cvtColor(pixels, cv2.COLOR_BGR2LAB)[:, :, 0], gamma)


def recolor_intensity(pixels: Pixels, gamma: float, b: float, seed: int) -> Pixels:
    """The image's value (V of HSV, the brightest channel) raised to ``gamma``, as grey."""
    import cv2

    return _gamma_gray(cv2.cvtColor(pixels, cv2.COLOR_BGR2HSV)[:, :, 2], gamma)


def _gamma_gray(channel: Pixels, gamma: float) -> Pixels:
    import numpy as np

    values = (channel.astype(np.float32) / 255.0) ** gamma
    return _gray_to_rgb((values * 255.0).clip(0, 255).astype(np.uint8))


def shuffle(pixels: Pixels, a: float, b: float, seed: int) -> Pixels:
    """The image's content moved around by a smooth random flow (A1111's content
    shuffle): each pixel is read from where two smooth noise fields point. The noise is
    drawn from ``seed``, so a re-run makes the same map."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    height, width = pixels.shape[:2]
    x = _noise_field(rng, height, width) * float(width - 1)
    y = _noise_field(rng, height, width) * float(height - 1)
    return cv2.remap(pixels, x, y, cv2.INTER_LINEAR)


def _noise_field(rng: np.random.Generator, height: int, width: int) -> Pixels:
    """Smooth noise in 0..1: a coarse grid of random values, scaled up with cubic
    interpolation to a margin of one cell around the image, the middle kept."""
    import cv2
    import numpy as np

    cell = SHUFFLE_CELL
    coarse = rng.uniform(0.0, 1.0, ((height // cell) + 2, (width // cell) + 2))
    smooth = cv2.resize(
        coarse, (width + 2 * cell, height + 2 * cell), interpolation=cv2.INTER_CUBIC
    )
    field = smooth[cell : cell + height, cell : cell + width]
    field = field - field.min()
    span = float(field.max())
    return (field / span if span > 0 else field).astype(np.float32)


FILTERS: dict[str, Filter] = {
    "canny": canny,
    "invert": invert,
    "lineart_standard": lineart_standard,
    "scribble_xdog": scribble_xdog,
    "threshold": threshold,
    "tile_resample": tile_resample,
    "blur_gaussian": blur_gaussian,
    "recolor_luminance": recolor_luminance,
    "recolor_intensity": recolor_intensity,
    "shuffle": shuffle,
}
"""Each built-in module's filter (``none`` and the inpaint modules have none)."""
