"""Reading input images and masks safely, and keeping copies for re-runs."""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from sdstudio.engine.errors import ImageInputError
from sdstudio.engine.fileio import write_atomically

MAX_PIXELS = 8192 * 8192
"""Larger images are refused: they are far beyond what the models use and may
be decompression bombs."""


def open_image(path: str | Path, *, what: str = "image") -> Image.Image:
    """Open an image file fully, upright and in RGB, or raise :class:`ImageInputError`."""
    image = _open(path, what)
    image = ImageOps.exif_transpose(image) or image
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def open_mask(path: str | Path, size: tuple[int, int]) -> tuple[Image.Image, tuple[int, int]]:
    """Open a mask as greyscale (white = repaint), resized to ``size``.

    Returns the mask and the size the file had.
    """
    mask = _open(path, "mask")
    mask = ImageOps.exif_transpose(mask) or mask
    if mask.mode in ("RGBA", "LA") and _has_transparency(mask):
        # A mask painted on a transparent layer: what was painted is repainted.
        mask = mask.getchannel("A")
    elif mask.mode != "L":
        mask = mask.convert("L")
    original_size = mask.size
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    return mask, original_size


def _has_transparency(image: Image.Image) -> bool:
    lowest, _ = image.getchannel("A").getextrema()
    return bool(lowest < 255)  # type: ignore[operator]


def store_input(image: Image.Image, directory: Path) -> Path:
    """Keep a lossless copy of an input image, named by its content.

    Re-running an image later needs its init image and mask even if the
    originals were moved or edited; the same content is stored once (and
    not encoded again).
    """
    path = input_path(image, directory)
    if not path.exists():
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        write_atomically(path, buffer.getvalue())
    return path


def input_path(image: Image.Image, directory: Path) -> Path:
    """Where :func:`store_input` keeps ``image``: a hash of its pixels (milliseconds,
    where encoding a large PNG takes a tenth of a second or more)."""
    digest = hashlib.sha256(image.mode.encode() + image.tobytes()).hexdigest()[:20]
    return directory / f"{digest}.png"


def _open(path: str | Path, what: str) -> Image.Image:
    path = Path(path)
    if not path.exists():
        raise ImageInputError(f"The {what} {path} does not exist.")
    if not path.is_file():
        raise ImageInputError(f"The {what} {path} is not a file.")
    image: Image.Image | None = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageInputError(
                    f"The {what} {path} is {width}x{height} pixels, more than the "
                    f"{MAX_PIXELS // 1_000_000} megapixels sdstudio accepts."
                )
            image.load()
            return image
    except ImageInputError:
        _close(image)
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        _close(image)
        raise ImageInputError(
            f"The {what} {path} is too large to open safely (over "
            f"{MAX_PIXELS // 1_000_000} megapixels)."
        ) from None
    except UnidentifiedImageError:
        raise ImageInputError(
            f"The {what} {path} is not an image file sdstudio can read."
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        _close(image)
        raise ImageInputError(f"The {what} {path} is damaged or truncated ({error}).") from None


def _close(image: Image.Image | None) -> None:
    if image is not None:
        image.close()
