"""Settings hidden in the pixels' lowest bits (A1111's stealth extension, NovelAI)."""

from __future__ import annotations

import json
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest
from metadata_samples import A1111_TEXT, summary
from metadata_samples_more import (
    NOVELAI_EXPECTED,
    novelai_texts,
    write_stealth_png,
)
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import read_image_settings
from sdstudio.engine.metadata.stealth import NOTE, RGB_NOTE, stealth_texts

A1111_EXPECTED = (
    "masterpiece, (a red boat:1.2) on a lake, <lora:add_detail:0.8>",
    "blurry, lowres",
    28,
    "DPM++ 2M",
    "Karras",
    6.5,
    1234567890,
    512,
    768,
)


@pytest.mark.parametrize("compressed", [False, True])
def test_a1111_text_in_the_alpha_channel(tmp_path: Path, compressed: bool) -> None:
    path = write_stealth_png(tmp_path / "hidden.png", A1111_TEXT, compressed=compressed)
    found = read_image_settings(path)
    assert (found.source, summary(found.request)) == ("a1111", A1111_EXPECTED)
    assert found.parameters == A1111_TEXT
    assert found.notes == (NOTE,)


def test_novelai_json_in_the_alpha_channel(tmp_path: Path) -> None:
    text = json.dumps(novelai_texts())
    found = read_image_settings(write_stealth_png(tmp_path / "nai.png", text, compressed=True))
    assert (found.source, summary(found.request)) == ("novelai", NOVELAI_EXPECTED)
    assert found.notes == (NOTE,)


def test_rgb_variant(tmp_path: Path) -> None:
    path = write_stealth_png(tmp_path / "rgb.png", A1111_TEXT, compressed=True, rgb=True)
    found = read_image_settings(path)
    assert (found.source, found.notes) == ("a1111", (RGB_NOTE,))


def test_text_chunks_win_over_hidden_bits(tmp_path: Path) -> None:
    path = write_stealth_png(tmp_path / "both.png", json.dumps(novelai_texts()))
    image = Image.open(path)
    info = PngInfo()
    info.add_text("parameters", A1111_TEXT)
    image.save(tmp_path / "both2.png", pnginfo=info)
    found = read_image_settings(tmp_path / "both2.png")
    assert (found.source, found.notes) == ("a1111", ())


def test_japanese_hidden_text(tmp_path: Path) -> None:
    text = A1111_TEXT.replace("masterpiece", "桜の木の下で")
    found = read_image_settings(write_stealth_png(tmp_path / "ja.png", text))
    assert found.request.prompt.startswith("桜の木の下で")


def test_alpha_without_signature_is_not_this_format(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    Image.new("RGBA", (64, 64), (1, 2, 3, 255)).save(path)
    assert stealth_texts(path).texts == {}
    with pytest.raises(InvalidRequest, match="holds no generation settings"):
        read_image_settings(path)


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_large_image_reads_only_the_leading_columns(tmp_path: Path) -> None:
    size = (4096, 4096)  # 16.8 megapixels
    hidden = write_stealth_png(tmp_path / "big.png", A1111_TEXT, compressed=True, size=size)
    plain = tmp_path / "big_plain.png"
    Image.new("RGBA", size, (9, 9, 9, 255)).save(plain)
    start = time.perf_counter()
    found = read_image_settings(hidden)
    assert found.source == "a1111"
    assert stealth_texts(plain).texts == {}
    # Decoding dominates; picking the bits must not add seconds on top.
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize(
    ("length", "message"), [(8 << 21, "too large"), (8 * 10_000, "damaged"), (13, "damaged")]
)
def test_bad_length_is_a_clear_message(tmp_path: Path, length: int, message: str) -> None:
    path = write_stealth_png(tmp_path / "bad.png", "short", length=length)
    found = stealth_texts(path)
    assert found.texts == {} and message in found.notes[0]
    with pytest.raises(InvalidRequest, match=message):
        read_image_settings(path)


def test_damaged_gzip_is_a_clear_message(tmp_path: Path) -> None:
    path = write_stealth_png(tmp_path / "gz.png", "x" * 200, compressed=True)
    image = Image.open(path)
    alpha = image.getchannel("A")
    alpha.putpixel((1, 57), alpha.getpixel((1, 57)) ^ 1)  # bit 153: the gzip magic
    image.putalpha(alpha)
    image.save(path)
    with pytest.raises(InvalidRequest, match="damaged"):
        read_image_settings(path)


def test_no_decode_beyond_the_pixel_limit(tmp_path: Path) -> None:
    path = write_stealth_png(tmp_path / "hidden.png", A1111_TEXT)
    assert stealth_texts(path).texts
    assert stealth_texts(path, max_pixels=64 * 96 - 1).texts == {}


def test_images_without_alpha_are_not_decoded(tmp_path: Path) -> None:
    path = write_stealth_png(tmp_path / "rgb.png", A1111_TEXT, rgb=True)
    Image.open(path).convert("RGB").save(path)
    assert stealth_texts(path).texts == {}


def test_chunks_after_the_image_data_are_not_read(tmp_path: Path) -> None:
    hidden = write_stealth_png(tmp_path / "hidden.png", A1111_TEXT)
    data = hidden.read_bytes()
    chunk = b"x" * 30_000_000
    body = b"blOb" + chunk
    extra = struct.pack(">I", len(chunk)) + body + struct.pack(">I", zlib.crc32(body))
    hidden.write_bytes(data[:-12] + extra + data[-12:])
    tracemalloc.start()
    try:
        found = read_image_settings(hidden)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found.source == "a1111"
    assert peak < 5_000_000
