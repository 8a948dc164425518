"""Reading input images and masks safely, and keeping copies for re-runs.

Only PNG, JPEG and WebP files are opened, whatever their names: what Stable
Diffusion tools write. Left to itself, Pillow identifies dozens of formats by
their content, some decoded by an outside program (EPS runs Ghostscript, whose
PostScript can loop forever) or by large, rarely used decoders. Images larger
than :data:`MAX_PIXELS` are refused before their pixels are decoded, and only
the first frame of an animated file is ever decoded.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
import zlib
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from sdstudio.engine.errors import ImageInputError
from sdstudio.engine.fileio import write_atomically

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
"""The formats sdstudio opens (Pillow's names)."""
FORMAT_NAMES = "PNG, JPEG or WebP"
MAX_PIXELS = 8192 * 8192
"""Larger images are refused: they are far beyond what the models use and may
be decompression bombs."""
# What opening or decoding a damaged file raises, besides Pillow's own errors.
_DAMAGED = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
_SIXTEEN_BIT = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def open_image(path: str | Path, *, what: str = "image") -> Image.Image:
    """Open an image file fully, upright and in RGB, or raise :class:`ImageInputError`."""
    path = Path(path)
    image = open_checked(path, what=what)
    try:
        _load(image, path, what)
        upright = _upright(image)
    finally:
        image.close()
    return to_rgb(upright, f"The {what} {path}")


def open_mask(path: str | Path, size: tuple[int, int]) -> tuple[Image.Image, tuple[int, int]]:
    """Open a mask as greyscale (white = repaint), resized to ``size``.

    A mask with transparency (painted on a transparent layer) is its alpha
    channel: what was painted is repainted. Returns the mask and the size the
    file had.
    """
    path = Path(path)
    image = open_checked(path, what="mask")
    try:
        _load(image, path, "mask")
        mask = _eight_bit(_upright(image))
    finally:
        image.close()
    if mask.mode in ("P", "PA"):
        mask = mask.convert("RGBA")
    if mask.mode in ("RGBA", "LA") and _has_transparency(mask):
        mask = mask.getchannel("A")
    elif mask.mode != "L":
        mask = to_rgb(mask, f"The mask {path}").convert("L")
    original_size = mask.size
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    return mask, original_size


def open_checked(
    path: str | Path,
    *,
    what: str = "image",
    max_pixels: int | None = MAX_PIXELS,
    draft: tuple[int, int] | None = None,
) -> Image.Image:
    """Open a PNG, JPEG or WebP file without decoding its pixels; the caller closes it.

    ``draft`` lets a JPEG be decoded at a reduced size (for thumbnails);
    ``max_pixels`` is checked on the size that will be decoded. Raises
    :class:`ImageInputError` for a missing, unsupported, damaged or too large file.
    """
    path = Path(path)
    if not path.exists():
        raise ImageInputError(f"The {what} {path} does not exist.")
    if not path.is_file():
        raise ImageInputError(f"The {what} {path} is not a file.")
    try:
        with warnings.catch_warnings():
            # The size is checked below, with a clearer message than Pillow's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path, formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise ImageInputError(unsupported_message(path, what)) from None
    except Image.DecompressionBombError:
        raise ImageInputError(f"The {what} {path} is too large to open safely.") from None
    except _DAMAGED as error:
        raise ImageInputError(f"The {what} {path} is damaged or truncated ({error}).") from None
    try:
        if draft is not None:
            image.draft("RGB", draft)
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageInputError(
                f"The {what} {path} is {width}x{height} pixels, more than the "
                f"{max_pixels // 1_000_000} megapixels sdstudio accepts."
            )
    except ImageInputError:
        image.close()
        raise
    except _DAMAGED as error:
        image.close()
        raise ImageInputError(f"The {what} {path} is damaged or truncated ({error}).") from None
    return image


def unsupported_message(path: Path, what: str = "image") -> str:
    """Why ``path`` is refused: the format it has when Pillow can tell from its first bytes.

    Only the formats' signature checks run; no decoder is started.
    """
    try:
        with path.open("rb") as file:
            prefix = file.read(16)
    except OSError:
        prefix = b""
    Image.init()
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        if name in IMAGE_FORMATS or accept is None:
            continue
        try:
            found = accept(prefix) is True
        except (IndexError, TypeError, ValueError, SyntaxError, struct.error):
            found = False
        if found:
            return f"The {what} {path} is not a {FORMAT_NAMES} image (it is {name})."
    return f"The {what} {path} is not an image file sdstudio can read ({FORMAT_NAMES})."


def to_rgb(image: Image.Image, described: str = "The image") -> Image.Image:
    """``image`` in RGB (itself when it is): transparency dropped, 16-bit grey scaled to 8 bits.

    ``described`` starts the message of the :class:`ImageInputError` raised for
    a colour mode that cannot be converted.
    """
    image = _eight_bit(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("P", "PA"):
        # Through RGBA: a palette with transparency converts to RGB with a warning.
        image = image.convert("RGBA")
    try:
        return image.convert("RGB")
    except ValueError:
        raise ImageInputError(
            f"{described} has the colour mode {image.mode}, which sdstudio cannot use."
        ) from None


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit greyscale scaled to 8 bits: converting it directly clips it to white."""
    if image.mode not in _SIXTEEN_BIT:
        return image
    return image.convert("I").point(lambda value: value * (1 / 257)).convert("L")


def _load(image: Image.Image, path: Path, what: str) -> None:
    """Decode the pixels of the first frame."""
    try:
        image.load()
    except _DAMAGED as error:
        raise ImageInputError(f"The {what} {path} is damaged or truncated ({error}).") from None


def _upright(image: Image.Image) -> Image.Image:
    """A copy of a loaded image turned as its EXIF orientation says."""
    try:
        return ImageOps.exif_transpose(image) or image.copy()
    except Exception:  # damaged EXIF only loses the orientation
        return image.copy()


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
