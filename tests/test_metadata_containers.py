"""Settings that tools keep in other EXIF tags of WebP and JPEG files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from metadata_samples import summary, write_exif
from metadata_samples_more import (
    STABILITY_MATRIX_A1111,
    STABILITY_MATRIX_EXPECTED,
    STABILITY_MATRIX_JSON,
    STABILITY_MATRIX_PROJECT,
    write_user_comment,
)
from PIL import Image

from sdstudio.cli import main
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import read_image_settings
from sdstudio.engine.metadata.exif import IMAGE_DESCRIPTION, SOFTWARE, exif_texts

PROMPT = "café au lait, ☕, (cat:1.2)"


def stability_matrix_webp(path: Path, description: object, software: object) -> Path:
    """A WebP as Stability Matrix saves it: its JSON texts in ImageDescription and Software
    (as UTF-8 bytes), the A1111 text as the UserComment."""
    return write_user_comment(
        path, STABILITY_MATRIX_A1111, {IMAGE_DESCRIPTION: description, SOFTWARE: software}
    )


def utf8(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("suffix", ["webp", "jpg"])
def test_stability_matrix_webp_is_read_from_its_exif(tmp_path: Path, suffix: str) -> None:
    parameters = STABILITY_MATRIX_JSON | {"PositivePrompt": PROMPT}
    image = stability_matrix_webp(
        tmp_path / f"sm.{suffix}", utf8(parameters), STABILITY_MATRIX_PROJECT.encode()
    )
    found = read_image_settings(image)
    assert found.source == "stabilitymatrix"
    assert summary(found.request) == (PROMPT, *STABILITY_MATRIX_EXPECTED[1:])
    assert found.model_hash == STABILITY_MATRIX_JSON["ModelHash"]
    assert any("AUTOMATIC1111 parameters" in note for note in found.notes)
    assert any("(smproj) was not read" in note for note in found.notes)


def test_info_json_shows_a_stability_matrix_webp(capsys, tmp_path: Path) -> None:
    image = stability_matrix_webp(
        tmp_path / "sm.webp", utf8(STABILITY_MATRIX_JSON), STABILITY_MATRIX_PROJECT
    )
    assert main(["info", str(image), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == "stabilitymatrix" and data["request"]["steps"] == 30
    assert data["model_hash"] == STABILITY_MATRIX_JSON["ModelHash"]


@pytest.mark.parametrize(
    ("description", "software"),
    [
        ("A photo of a cat", "GIMP 2.10"),
        (json.dumps({"title": "holiday"}), json.dumps({"Version": 2})),
        ("{not json", "{"),
    ],
)
def test_other_descriptions_are_not_taken_for_stability_matrix(
    tmp_path: Path, description: str, software: str
) -> None:
    image = write_user_comment(
        tmp_path / "other.webp", "", {IMAGE_DESCRIPTION: description, SOFTWARE: software}
    )
    with Image.open(image) as opened:
        texts = exif_texts(opened.getexif())
    assert "parameters-json" not in texts and "smproj" not in texts
    with pytest.raises(InvalidRequest, match="holds no generation settings"):
        read_image_settings(image)


def test_a_description_that_is_not_utf8_stays_latin1(tmp_path: Path) -> None:
    parameters = json.dumps(STABILITY_MATRIX_JSON | {"PositivePrompt": "déjà"}, ensure_ascii=False)
    image = stability_matrix_webp(tmp_path / "latin.webp", parameters.encode("latin-1"), "")
    assert read_image_settings(image).request.prompt == "déjà"


def test_an_animated_webp_gives_the_settings_of_its_exif(tmp_path: Path) -> None:
    from metadata_samples import A1111_TEXT

    comment = b"UNICODE\0" + A1111_TEXT.encode("utf-16-be")
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = comment
    frames = [Image.new("RGB", (64, 96), (i * 60, 0, 0)) for i in range(3)]
    path = tmp_path / "animated.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], exif=exif, duration=100)
    with Image.open(path) as image:
        assert getattr(image, "n_frames", 1) == 3
    settings = read_image_settings(path)
    still = read_image_settings(write_exif(tmp_path / "still.webp", {0x9286: comment}))
    assert settings.source == still.source == "a1111"
    assert summary(settings.request) == summary(still.request)
    assert settings.request.prompt and settings.request.steps == still.request.steps
