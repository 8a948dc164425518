"""Reading the metadata texts of an image file, never its pixels.

- PNG: the text chunks (``tEXt``, ``zTXt``, ``iTXt``) and ``eXIf``, wherever
  they are. The chunks are walked here, skipping the image data unread:
  Pillow reads chunks that follow the image data only by decoding it (every
  frame of an APNG), which takes seconds and gigabytes for a large image.
  PNG's chunk layout is simple and fixed (length, type, data, CRC).
- JPEG and WebP: EXIF (see :mod:`~sdstudio.engine.metadata.exif`), read by
  Pillow's header parsing; no pixels are decoded.

``tEXt`` and ``zTXt`` texts are read as UTF-8 when they are valid UTF-8
(many tools write it there, against the standard), else as Latin-1.

Only the texts asked for are read. A text larger than :data:`MAX_TEXT_BYTES`
is left out, and so is any text after :data:`MAX_TOTAL_BYTES` have been read;
the returned notes say which. Every text is cleaned by
:func:`~sdstudio.engine.metadata.safe_text.clean_text`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sdstudio.engine.errors import ImageInputError
from sdstudio.engine.images import open_checked
from sdstudio.engine.metadata.exif import exif_bytes_texts
from sdstudio.engine.metadata.safe_text import clean_text

MAX_TEXT_BYTES = 1 << 20
"""The largest text read (1 MB, as Pillow's ``PngImagePlugin.MAX_TEXT_CHUNK``);
real settings take a few kilobytes."""
MAX_TOTAL_BYTES = 4 << 20
MAX_CHUNKS = 100_000
"""Chunks walked before reading stops (a 100-megapixel PNG has a few thousand)."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_KEYWORD_BYTES = 80  # a keyword is 1 to 79 Latin-1 characters, then a NUL


@dataclass(frozen=True, slots=True)
class ImageTexts:
    """The metadata texts found in an image file."""

    texts: dict[str, str]
    size: tuple[int, int]
    """The image's size in pixels, from its header."""
    notes: tuple[str, ...] = ()
    """Texts left out, and why."""


def read_texts(path: str | Path, keys: Collection[str]) -> ImageTexts:
    """The texts under ``keys`` in a PNG, JPEG or WebP file, and the image's size.

    Raises :class:`ImageInputError` when the file is missing, of another
    format or damaged before its metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageInputError(f"The image {path} does not exist.")
    try:
        with path.open("rb") as file:
            if file.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE:
                return _Collector(keys).png(file)
    except OSError as error:
        raise ImageInputError(f"The image {path} cannot be read ({error}).") from None
    return _other_texts(path, keys)


def _other_texts(path: Path, keys: Collection[str]) -> ImageTexts:
    """JPEG and WebP: string values of Pillow's header info, then EXIF."""
    collector = _Collector(keys)
    image = open_checked(path, max_pixels=None)
    try:
        size = image.size
        info = dict(image.info)
    finally:
        image.close()
    for key, value in info.items():
        if isinstance(key, str) and isinstance(value, str):
            collector.add(key, value)
    exif = info.get("exif")
    if isinstance(exif, bytes) and collector.fits("EXIF", len(exif)):
        for key, value in exif_bytes_texts(exif).items():
            collector.add(key, value)
    return ImageTexts(collector.texts, size, tuple(collector.notes))


class _Collector:
    """Gathers wanted texts within the size limits; the first text under a key is kept."""

    def __init__(self, keys: Collection[str]) -> None:
        self.keys = keys
        self.texts: dict[str, str] = {}
        self.notes: list[str] = []
        self.total = 0

    def fits(self, key: str, size: int) -> bool:
        """Whether a text of ``size`` bytes may be read; notes why not."""
        if size > MAX_TEXT_BYTES:
            self.notes.append(
                f"The {key!r} text ({_megabytes(size)}) is larger than the "
                f"{_megabytes(MAX_TEXT_BYTES)} sdstudio reads; it was left out."
            )
            return False
        if self.total + size > MAX_TOTAL_BYTES:
            self.notes.append(
                f"The {key!r} text was left out: the image holds more than "
                f"{_megabytes(MAX_TOTAL_BYTES)} of metadata."
            )
            return False
        self.total += size
        return True

    def wanted(self, key: str) -> bool:
        """Whether a text under ``key`` is asked for and not yet found."""
        return key in self.keys and key not in self.texts

    def add(self, key: str, value: str) -> None:
        """Keep a text if it is wanted and fits."""
        key = clean_text(key)
        if self.wanted(key) and self.fits(key, len(value)):
            self.texts[key] = clean_text(value)

    def png(self, file: BinaryIO) -> ImageTexts:
        """Walk a PNG's chunks (the signature already read) up to ``IEND``."""
        size = (0, 0)
        exif: bytes | None = None
        for _ in range(MAX_CHUNKS):
            header = file.read(8)
            if len(header) < 8:
                break  # truncated: keep what was found
            length, kind = struct.unpack(">I4s", header)
            if kind == b"IEND":
                break
            end = file.tell() + length + 4  # the data, then its CRC
            if kind == b"IHDR" and length >= 8:
                size = struct.unpack(">II", file.read(8))
            elif kind in _TEXT_CHUNKS:
                self._text_chunk(file, kind, length)
            elif kind == b"eXIf" and exif is None and self.fits("EXIF", length):
                exif = file.read(length)
            file.seek(end)
        else:
            self.notes.append(f"Metadata after the first {MAX_CHUNKS} PNG chunks was not read.")
        if exif is not None:
            for key, value in exif_bytes_texts(exif).items():
                self.add(key, value)
        return ImageTexts(self.texts, size, tuple(self.notes))

    def _text_chunk(self, file: BinaryIO, kind: bytes, length: int) -> None:
        start = file.read(min(length, _KEYWORD_BYTES))
        keyword, separator, _ = start.partition(b"\0")
        key = clean_text(keyword.decode("latin-1"))
        if not separator or not self.wanted(key) or not self.fits(key, length):
            return
        data = start + file.read(length - len(start))
        text = _decode_text(kind, data[len(keyword) + 1 :])
        if text is None:
            self.notes.append(
                f"The {key!r} text is damaged or larger than {_megabytes(MAX_TEXT_BYTES)} "
                "decompressed; it was left out."
            )
        else:
            self.texts[key] = clean_text(text)


def _decode_text(kind: bytes, body: bytes) -> str | None:
    """The text of a tEXt, zTXt or iTXt chunk after its keyword; ``None`` if unreadable."""
    if kind == b"tEXt":
        return decode_bytes(body)
    if kind == b"zTXt":
        inflated = _inflate(body[1:]) if body[:1] == b"\0" else None
        return decode_bytes(inflated) if inflated is not None else None
    if len(body) < 2:
        return None
    compressed, method, rest = body[0], body[1], body[2:]
    # The language tag and the translated keyword come before the text.
    parts = rest.split(b"\0", 2)
    if len(parts) < 3:
        return None
    text: bytes | None = parts[2]
    if compressed:
        text = _inflate(parts[2]) if method == 0 else None
    return text.decode("utf-8", errors="replace") if text is not None else None


def decode_bytes(data: bytes) -> str:
    """Text as UTF-8 when it is valid UTF-8, else as Latin-1.

    The PNG standard makes ``tEXt`` and ``zTXt`` Latin-1, but many tools
    write UTF-8 there; Latin-1 text with accents is almost never valid UTF-8.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _inflate(data: bytes) -> bytes | None:
    """Decompressed text, ``None`` when damaged or larger than :data:`MAX_TEXT_BYTES`."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, MAX_TEXT_BYTES)
    except zlib.error:
        return None
    return None if inflater.unconsumed_tail else text


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"
