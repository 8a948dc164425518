"""NovelAI metadata, written from its description: PNG chunks and the JPEG/WebP EXIF copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from metadata_samples import summary
from metadata_samples_more import (
    NOVELAI_COMMENT,
    NOVELAI_EXPECTED,
    NOVELAI_SOURCE,
    novelai_texts,
    write_text_png,
    write_user_comment,
)

from sdstudio.cli import main
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import read_image_settings
from sdstudio.engine.metadata.novelai import read_novelai


def test_novelai_png(tmp_path: Path) -> None:
    found = read_image_settings(write_text_png(tmp_path / "nai.png", novelai_texts()))
    assert found.source == "novelai"
    assert summary(found.request) == NOVELAI_EXPECTED
    assert found.notes == ()
    assert found.request.model == found.model_name == NOVELAI_SOURCE


def test_novelai_seed_in_range_and_native_schedule() -> None:
    comment = NOVELAI_COMMENT | {"seed": 1234, "noise_schedule": "native", "sampler": "k_euler"}
    request = read_novelai(novelai_texts(comment)).request
    assert (request.seed, request.sampler, request.schedule) == (1234, "Euler", "Automatic")


@pytest.mark.parametrize(
    ("sampler", "expected"),
    [
        ("k_euler_ancestral", "Euler a"),
        ("k_dpmpp_sde", "DPM++ SDE"),
        ("ddim_v3", "DDIM"),
        ("k_dpmpp_2m_sde", "DPM++ 2M SDE"),
    ],
)
def test_novelai_samplers(sampler: str, expected: str) -> None:
    comment = NOVELAI_COMMENT | {"sampler": sampler, "noise_schedule": "native"}
    assert read_novelai(novelai_texts(comment)).request.sampler == expected


def test_novelai_settings_sdstudio_cannot_apply_are_kept_not_invented() -> None:
    comment = NOVELAI_COMMENT | {
        "sampler": "k_dpmpp_2s_ancestral",
        "noise_schedule": "polyexponential",
        "cfg_rescale": 0.3,
        "sm": True,
        "sm_dyn": False,
    }
    parsed = read_novelai(novelai_texts(comment))
    # Kept as read, so generation says they are unknown instead of using others.
    assert (parsed.request.sampler, parsed.request.schedule) == ("DPM++ 2S a", "polyexponential")
    assert dict(parsed.extras) == {
        "Noise schedule": "polyexponential",
        "CFG rescale": "0.3",
        "SMEA": "true",
    }
    assert parsed.notes == (
        "Also in the image, kept but not applied by sdstudio: Noise schedule, CFG rescale, SMEA.",
        "NovelAI's sampler k_dpmpp_2s_ancestral has no equivalent in sdstudio.",
        "NovelAI's polyexponential noise schedule has no equivalent in sdstudio.",
    )


def test_novelai_defaults_are_not_kept_as_settings() -> None:
    comment = NOVELAI_COMMENT | {"noise_schedule": "karras", "cfg_rescale": 0, "sm": False}
    comment |= {"noise": 0.2, "strength": 0.7}  # left in a text-to-image comment
    assert dict(read_novelai(novelai_texts(comment)).extras) == {}


def test_novelai_v4_prompts_and_characters() -> None:
    comment = {
        "prompt": "old flat prompt",
        "steps": 23,
        "scale": 6,
        "seed": 77,
        "sampler": "k_euler_ancestral",
        "noise_schedule": "karras",
        "width": 1024,
        "height": 1024,
        "v4_prompt": {
            "caption": {
                "base_caption": "2girls, park, sunny",
                "char_captions": [
                    {"char_caption": "girl, red hair", "centers": [{"x": 0.3, "y": 0.5}]},
                    {"char_caption": "girl, blue hair", "centers": [{"x": 0.7, "y": 0.5}]},
                ],
            },
            "use_coords": True,
        },
        "v4_negative_prompt": {
            "caption": {"base_caption": "lowres", "char_captions": [{"char_caption": "hat"}]}
        },
    }
    parsed = read_novelai(novelai_texts(comment))
    request = parsed.request
    assert (request.prompt, request.negative_prompt) == ("2girls, park, sunny", "lowres")
    # Euler a takes no Karras sigmas: its own schedule, with a note.
    assert (request.sampler, request.schedule) == ("Euler a", "Automatic")
    assert dict(parsed.extras) == {
        "Character 1 prompt": "girl, red hair",
        "Character 1 negative": "hat",
        "Character 1 center": "0.3, 0.5",
        "Character 2 prompt": "girl, blue hair",
        "Character 2 center": "0.7, 0.5",
    }
    # One short note names them; the texts are not repeated in the notes.
    assert not any("girl, red hair" in note for note in parsed.notes)


def test_novelai_img2img_strength() -> None:
    comment = NOVELAI_COMMENT | {"request_type": "Img2ImgRequest", "strength": 0.6, "noise": 0.1}
    parsed = read_novelai(novelai_texts(comment))
    assert parsed.request.strength == 0.6
    assert dict(parsed.extras) == {"Img2img noise": "0.1"}
    txt2img = NOVELAI_COMMENT | {"strength": 0.7}  # left in a text-to-image comment
    assert read_novelai(novelai_texts(txt2img)).request.strength == 0.75


@pytest.mark.parametrize("suffix", ["webp", "jpg"])
def test_novelai_exif_user_comment(tmp_path: Path, suffix: str) -> None:
    texts = novelai_texts(NOVELAI_COMMENT | {"seed": 99})
    path = write_user_comment(
        tmp_path / f"nai.{suffix}", json.dumps(texts), {0x010E: texts["Description"]}
    )
    found = read_image_settings(path)
    assert found.source == "novelai"
    assert summary(found.request) == (*NOVELAI_EXPECTED[:6], 99, 832, 1216)


def test_only_novelai_software_is_claimed(tmp_path: Path) -> None:
    other = novelai_texts(Software="GIMP 2.10")
    with pytest.raises(InvalidRequest, match="No NovelAI"):
        read_novelai(other)
    with pytest.raises(InvalidRequest, match="holds no generation settings"):
        read_image_settings(write_text_png(tmp_path / "gimp.png", other))
    with pytest.raises(InvalidRequest, match="No NovelAI"):
        read_novelai(novelai_texts(Comment="Created with GIMP"))
    with pytest.raises(InvalidRequest, match="No NovelAI"):
        read_novelai({"parameters": json.dumps({"Software": "NovelAI", "Comment": "[1, 2]"})})


def test_info_json_shows_novelai_extras(capsys, tmp_path: Path) -> None:
    characters = {
        "char_captions": [{"char_caption": "a knight", "centers": [{"x": 0.5, "y": 0.1}]}]
    }
    comment = NOVELAI_COMMENT | {
        "cfg_rescale": 0.2,
        "sm_dyn": True,
        "v4_prompt": {"caption": {"base_caption": "a castle", **characters}},
    }
    image = write_text_png(tmp_path / "nai.png", novelai_texts(comment))
    assert main(["info", str(image), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["request"]["prompt"] == "a castle"
    assert data["extras"] == {
        "Character 1 prompt": "a knight",
        "Character 1 center": "0.5, 0.1",
        "CFG rescale": "0.2",
        "SMEA DYN": "true",
    }
