"""Hostile image files, written by code: huge headers, many frames, huge text, other formats.

Everything is written in pieces, so making a file does not itself need the
memory or time its decoding would.
"""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from PIL import EpsImagePlugin, Image, ImageFile, PngImagePlugin

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A PostScript body Ghostscript would run forever; Pillow calls it EPS by its first bytes.
EPS_LOOP = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n{ } loop\nshowpage\n"


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def text_chunk(key: str, value: str) -> bytes:
    """A tEXt chunk (Latin-1 text)."""
    return chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))


def itxt_chunk(key: str, value: bytes) -> bytes:
    """An uncompressed iTXt chunk holding ``value`` as it is (meant to be UTF-8)."""
    return chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value)


def huge_png(path: Path, width: int, height: int, *, after: bytes = b"") -> Path:
    """An 8-bit greyscale PNG of any size whose pixels are all black: a small file.

    The image data is compressed in pieces, so nothing near its decoded size is
    ever held. ``after`` (chunks) goes between the image data and ``IEND``.
    """
    compressor = zlib.compressobj(9)
    block = bytes(1 << 20)
    remaining = (width + 1) * height  # a filter byte and the pixels, per row
    with path.open("wb") as file:
        file.write(PNG_SIGNATURE)
        file.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)))
        while remaining:
            size = min(remaining, len(block))
            remaining -= size
            data = compressor.compress(block[:size])
            if data:
                file.write(chunk(b"IDAT", data))
        file.write(chunk(b"IDAT", compressor.flush()))
        file.write(after)
        file.write(chunk(b"IEND", b""))
    return path


def with_chunks_before_end(png: bytes, *chunks: bytes) -> bytes:
    """A PNG with ``chunks`` added just before its ``IEND`` (after all image data)."""
    assert png.endswith(chunk(b"IEND", b""))
    return png[:-12] + b"".join(chunks) + png[-12:]


def apng(path: Path, frames: int, *, side: int = 32, after: bytes = b"") -> Path:
    """An animated PNG of ``frames`` frames, ``after`` (chunks) following the last one."""
    images = [Image.new("RGB", (side, side), (i % 256, 0, 0)) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "PNG", save_all=True, append_images=images[1:])
    path.write_bytes(with_chunks_before_end(buffer.getvalue(), after))
    return path


def png_with_big_text(path: Path, key: str, size: int) -> Path:
    """A small PNG with a ``size``-byte tEXt chunk after its image, written in pieces."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    png = buffer.getvalue()
    header = key.encode("latin-1") + b"\0"
    piece = b"word " * 200_000
    with path.open("wb") as file:
        file.write(png[:-12])
        file.write(struct.pack(">I", len(header) + size) + b"tEXt" + header)
        crc = zlib.crc32(b"tEXt" + header)
        remaining = size
        while remaining:
            part = piece[: min(remaining, len(piece))]
            file.write(part)
            crc = zlib.crc32(part, crc)
            remaining -= len(part)
        file.write(struct.pack(">I", crc & 0xFFFFFFFF))
        file.write(png[-12:])
    return path


def eps_named_png(path: Path) -> Path:
    """An EPS file under an image's name."""
    path.write_bytes(EPS_LOOP)
    return path


def record_decoding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, note every pixel decode and every move past an image's first frame."""
    calls: list[str] = []
    load, seek = ImageFile.ImageFile.load, PngImagePlugin.PngImageFile.seek

    def recording_load(image: ImageFile.ImageFile):  # type: ignore[no-untyped-def]
        if image.tile:  # pixels still to decode
            calls.append(f"decoded {image.format} {image.size}")
        return load(image)

    def recording_seek(image: PngImagePlugin.PngImageFile, frame: int) -> None:
        if frame:
            calls.append(f"frame {frame}")
        seek(image, frame)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "seek", recording_seek)
    return calls


def record_ghostscript(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, note (and stop) any use of Pillow's EPS reader and of Ghostscript."""
    calls: list[str] = []
    eps_open, which = EpsImagePlugin.EpsImageFile._open, shutil.which

    def ghostscript(*args: object, **kwargs: object) -> None:
        calls.append("Ghostscript started")
        raise AssertionError("Ghostscript was started")

    def recording_open(image: EpsImagePlugin.EpsImageFile) -> None:
        calls.append("EPS reader used")
        eps_open(image)

    def recording_which(name: str, *args: object, **kwargs: object) -> str | None:
        if name.startswith("gs"):
            calls.append(f"looked for {name}")
        return which(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", recording_open)
    monkeypatch.setattr(shutil, "which", recording_which)
    return calls
