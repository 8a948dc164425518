"""Text chunks written as UTF-8, and ComfyUI graphs under capitalised EXIF labels."""

from __future__ import annotations

import json
from pathlib import Path

from metadata_samples import A1111_TEXT, write_exif
from metadata_samples_more import SMALL_GRAPH, write_raw_text_png
from PIL import Image

from sdstudio.engine.metadata import read_image_settings
from sdstudio.engine.metadata.exif import exif_bytes_texts
from sdstudio.engine.metadata.files import decode_bytes

JAPANESE = A1111_TEXT.replace("masterpiece", "桜の木の下の少女、夕焼け")


def test_utf8_in_a_text_chunk_is_read_as_utf8(tmp_path: Path) -> None:
    path = write_raw_text_png(tmp_path / "ja.png", "parameters", JAPANESE.encode("utf-8"))
    found = read_image_settings(path)
    assert found.request.prompt.startswith("桜の木の下の少女、夕焼け, (a red boat:1.2)")
    assert found.parameters == JAPANESE


def test_latin1_in_a_text_chunk_stays_latin1(tmp_path: Path) -> None:
    text = A1111_TEXT.replace("masterpiece", "café crème, naïve")
    path = write_raw_text_png(tmp_path / "fr.png", "parameters", text.encode("latin-1"))
    assert read_image_settings(path).request.prompt.startswith("café crème, naïve")
    assert decode_bytes("é".encode("latin-1")) == "é"
    assert decode_bytes("é".encode()) == "é"


def test_comfyui_capitalised_labels_in_exif(tmp_path: Path) -> None:
    ifd0 = {
        0x010E: "Prompt: " + json.dumps(SMALL_GRAPH),
        0x010F: "Workflow: " + json.dumps({"nodes": []}),
    }
    for suffix in ("webp", "jpg"):
        found = read_image_settings(write_exif(tmp_path / f"comfy.{suffix}", {}, ifd0))
        assert found.source == "comfyui"
        request = found.request
        assert (request.prompt, request.steps, request.seed) == ("a red fox", 12, 5)
        assert (request.width, request.height, request.model) == (512, 640, "dreamshaper_8")


def test_exif_labels_that_hold_no_graph_are_ignored() -> None:
    exif = Image.Exif()
    exif[0x010E] = "Prompt: a watercolour of a harbour"
    exif[0x010F] = "Canon"
    assert exif_bytes_texts(exif.tobytes()) == {}
