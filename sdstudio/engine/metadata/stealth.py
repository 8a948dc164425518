"""Settings hidden in the pixels: the "stealth" metadata of A1111's extension and NovelAI.

The least significant bits of the pixels, read column by column from the
top left (``for x: for y:``), spell a signature, a 32-bit big-endian length
in bits, then that many bits of data:

- ``stealth_pnginfo`` / ``stealth_pngcomp``: one bit per pixel, from the
  alpha channel; the data is UTF-8 text, gzip-compressed for ``...comp``.
- ``stealth_rgbinfo`` / ``stealth_rgbcomp``: three bits per pixel, from red,
  green and blue in turn (read here in images with an alpha channel only).

The text is A1111's ``parameters`` text or NovelAI's texts as one JSON
object (``Software``, ``Comment``...). Pixels must be decoded to read it, so
:func:`stealth_texts` runs only on PNG and WebP images with an alpha channel
within :data:`~sdstudio.engine.images.MAX_PIXELS`, decodes a PNG without the
chunks after its image data, copies only the leftmost columns that hold
the signature and then the data, and reads at most
:data:`~sdstudio.engine.metadata.files.MAX_TEXT_BYTES` of data.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

from sdstudio.engine.errors import ImageInputError
from sdstudio.engine.images import MAX_PIXELS, open_checked
from sdstudio.engine.metadata.a1111 import PARAMETERS_KEY
from sdstudio.engine.metadata.files import MAX_CHUNKS, MAX_TEXT_BYTES, PNG_SIGNATURE, decode_bytes
from sdstudio.engine.metadata.novelai import novelai_texts
from sdstudio.engine.metadata.safe_text import clean_text

ALPHA_SIGNATURES = {b"stealth_pnginfo": False, b"stealth_pngcomp": True}
RGB_SIGNATURES = {b"stealth_rgbinfo": False, b"stealth_rgbcomp": True}
_SIGNATURE_BITS = 15 * 8
_LENGTH_BITS = 32
_FORMATS = ("PNG", "WEBP")
_ALPHA_MODES = ("RGBA", "LA", "PA")
_IEND = b"\0\0\0\0IEND\xaeB`\x82"
_BIT_TEXT = bytes(b"01"[value & 1] for value in range(256))
NOTE = "Read from the alpha channel."
RGB_NOTE = "Read from the lowest bits of the colours."


@dataclass(frozen=True, slots=True)
class StealthTexts:
    """The texts hidden in an image's pixels, and notes on what was read or left out."""

    texts: dict[str, str]
    notes: tuple[str, ...] = ()


def stealth_texts(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> StealthTexts:
    """The metadata texts hidden in the pixels of a PNG or WebP image, if any.

    Never raises for the image's content: an unreadable image, another
    format, more than ``max_pixels`` or no signature gives no texts.
    """
    try:
        header = open_checked(path, max_pixels=max_pixels)
    except ImageInputError:
        return StealthTexts({})
    image_format, mode = header.format, header.mode
    header.close()
    if image_format not in _FORMATS or mode not in _ALPHA_MODES:
        return StealthTexts({})
    try:
        with Path(path).open("rb") as file:
            source: BinaryIO = file
            if image_format == "PNG":
                source = io.BufferedReader(_ImageDataOnly(file))
            with Image.open(source, formats=(image_format,)) as image:
                image.load()
                return _read(image)
    except (OSError, ValueError, SyntaxError, EOFError, zlib.error, struct.error):
        return StealthTexts({})


class _ImageDataOnly(io.RawIOBase):
    """A PNG file up to the end of its image data, then ``IEND``.

    Pillow reads the chunks after the image data while decoding it, whatever
    their size; through this view it finds none.
    """

    def __init__(self, file: BinaryIO) -> None:
        super().__init__()
        self._file = file
        self._end = _image_data_end(file)
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position}.get(whence, self._end + len(_IEND))
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        wanted = len(buffer)
        if self._position < self._end:
            self._file.seek(self._position)
            data = self._file.read(min(wanted, self._end - self._position))
        else:
            start = self._position - self._end
            data = _IEND[start : start + wanted]
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


def _image_data_end(file: BinaryIO) -> int:
    """Where the chunk after a PNG's last ``IDAT`` starts (the file's end if none does)."""
    position, seen_data = len(PNG_SIGNATURE), False
    for _ in range(MAX_CHUNKS):
        file.seek(position)
        header = file.read(8)
        if len(header) < 8:
            break
        length, kind = struct.unpack(">I4s", header)
        if kind == b"IDAT":
            seen_data = True
        elif seen_data or kind == b"IEND":
            return position
        position += 12 + length
    return position


def _read(image: Image.Image) -> StealthTexts:
    if image.mode in _ALPHA_MODES:
        found = _read_channels(image.getchannel("A"), 1, ALPHA_SIGNATURES, NOTE)
        if found is not None:
            return found
    if image.mode == "RGBA":
        found = _read_channels(image, 3, RGB_SIGNATURES, RGB_NOTE)
        if found is not None:
            return found
    return StealthTexts({})


def _read_channels(
    image: Image.Image, per_pixel: int, signatures: dict[bytes, bool], note: str
) -> StealthTexts | None:
    """The texts after one of ``signatures``; ``None`` when the pixels hold none of them."""
    header = _bits(image, per_pixel, _SIGNATURE_BITS + _LENGTH_BITS)
    if header is None:
        return None
    signature, length = header[:15], int.from_bytes(header[15:], "big")
    if signature not in signatures:
        return None
    available = image.width * image.height * per_pixel - _SIGNATURE_BITS - _LENGTH_BITS
    if length > MAX_TEXT_BYTES * 8:
        return StealthTexts(
            {}, (f"The hidden metadata ({length // 8} bytes) is too large; it was left out.",)
        )
    if length > available or length % 8:
        return StealthTexts({}, ("The hidden metadata is damaged; it was left out.",))
    data = _bits(image, per_pixel, _SIGNATURE_BITS + _LENGTH_BITS + length)
    payload = data[len(header) :] if data is not None else None
    if payload is not None and signatures[signature]:
        payload = _gunzip(payload)
    if payload is None:
        return StealthTexts({}, ("The hidden metadata is damaged; it was left out.",))
    return StealthTexts(_texts(decode_bytes(payload)), (note,))


def _bits(image: Image.Image, per_pixel: int, count: int) -> bytes | None:
    """The first ``count`` low bits in column order, packed into bytes; ``None`` if too few.

    Only the leftmost columns that hold them are copied.
    """
    width, height = image.size
    pixels = -(-count // per_pixel)
    if pixels > width * height:
        return None
    columns = -(-pixels // height)
    strip = image.crop((0, 0, columns, height)).transpose(Image.Transpose.TRANSPOSE)
    if per_pixel == 3 and strip.mode != "RGB":
        strip = strip.convert("RGB")
    bits = strip.tobytes()[:count].translate(_BIT_TEXT)
    return int(bits, 2).to_bytes(count // 8, "big")


def _gunzip(data: bytes) -> bytes | None:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        text = inflater.decompress(data, MAX_TEXT_BYTES)
    except zlib.error:
        return None
    return None if inflater.unconsumed_tail else text


def _texts(payload: str) -> dict[str, str]:
    """The hidden text under the chunk names the readers look for."""
    payload = clean_text(payload)
    texts = {PARAMETERS_KEY: payload}
    return novelai_texts(texts) or texts
