"""SwarmUI metadata, written from its description: ``sui_image_params`` in PNG text and EXIF."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from metadata_samples import A1111_TEXT, summary
from metadata_samples_more import (
    SWARM_EXPECTED,
    SWARM_PARAMS,
    write_text_png,
    write_user_comment,
)

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import read_image_settings
from sdstudio.engine.metadata.swarmui import read_swarmui


def swarm_json(**changes: object) -> str:
    params = {key: value for key, value in (SWARM_PARAMS | changes).items() if value is not None}
    return json.dumps({"sui_image_params": params, "sui_models": [{"name": "sd_xl_base_1.0"}]})


def test_swarmui_png(tmp_path: Path) -> None:
    found = read_image_settings(
        write_text_png(tmp_path / "swarm.png", {"parameters": swarm_json()})
    )
    assert found.source == "swarmui"
    assert summary(found.request) == SWARM_EXPECTED
    assert found.request.model == "sd_xl_base_1.0"
    assert found.model_name == "OfficialStableDiffusion/sd_xl_base_1.0.safetensors"
    assert found.notes == ()


@pytest.mark.parametrize("suffix", ["jpg", "webp"])
def test_swarmui_exif(tmp_path: Path, suffix: str) -> None:
    found = read_image_settings(write_user_comment(tmp_path / f"swarm.{suffix}", swarm_json()))
    assert (found.source, summary(found.request)) == ("swarmui", SWARM_EXPECTED)


def test_swarmui_defaults_img2img_clip_skip_vae_and_loras() -> None:
    text = swarm_json(
        sampler=None,
        scheduler=None,
        width=None,
        height=None,
        initimagecreativity=0.45,
        clipstopatlayer=-2,
        vae="sdxl_vae.safetensors",
        loras=["detail_tweaker", "style/ink.safetensors"],
        loraweights=["0.7", 1],
    )
    parsed = read_swarmui({"parameters": text}, (768, 512))
    request = parsed.request
    assert (request.width, request.height) == (768, 512)
    assert (request.strength, request.clip_skip, request.vae) == (0.45, 2, "sdxl_vae")
    assert {"strength", "clip_skip", "vae", "width", "height"} <= parsed.read
    # SwarmUI left out the sampler: its default depends on the model, so none is read.
    assert not {"sampler", "schedule"} & parsed.read
    assert parsed.notes[0].startswith("SwarmUI left out the sampler")
    assert any("does not say the sampler" in note for note in parsed.notes)
    assert parsed.notes[-2:] == (
        "The image used the LoRA detail_tweaker at weight 0.7.",
        "The image used the LoRA ink at weight 1.",
    )


def test_swarmui_sampler_without_scheduler_leaves_the_schedule_unread() -> None:
    parsed = read_swarmui({"parameters": swarm_json(sampler="dpmpp_2m", scheduler=None)})
    assert parsed.request.sampler == "DPM++ 2M"
    assert "sampler" in parsed.read and "schedule" not in parsed.read
    assert any("does not say the schedule type" in note for note in parsed.notes)


def test_swarmui_scheduler_notes_are_kept() -> None:
    parsed = read_swarmui({"parameters": swarm_json(sampler="euler", scheduler="normal")})
    assert (parsed.request.sampler, parsed.request.schedule) == ("Euler", "Automatic")
    assert {"sampler", "schedule"} <= parsed.read
    assert any("no normal schedule" in note for note in parsed.notes)


def test_swarmui_missing_prompt_is_unread() -> None:
    parsed = read_swarmui({"parameters": swarm_json(prompt=None, negativeprompt=None)})
    assert not {"prompt", "negative_prompt", "vae"} & parsed.read
    assert "The image does not say the prompt; it is left empty." in parsed.notes


def test_swarmui_model_hash_from_sui_models() -> None:
    models = [
        {"name": "lora.safetensors", "param": "loras", "hash": "0xabcdef0123"},
        {"name": "sd_xl_base_1.0.safetensors", "param": "model", "hash": "0x31E35C80FC4829D1"},
    ]
    text = json.dumps({"sui_image_params": SWARM_PARAMS, "sui_models": models})
    assert read_swarmui({"parameters": text}).model_hash == "31E35C80FC4829D1"
    models[1]["hash"] = "not hex"
    text = json.dumps({"sui_image_params": SWARM_PARAMS, "sui_models": models})
    assert read_swarmui({"parameters": text}).model_hash == ""


@pytest.mark.parametrize(
    "parameters",
    [
        A1111_TEXT,
        json.dumps({"prompt": "a fox", "steps": 20}),
        json.dumps({"sui_image_params": "not an object"}),
        "{not json",
    ],
)
def test_swarmui_claims_only_its_shape(parameters: str) -> None:
    with pytest.raises(InvalidRequest, match="No SwarmUI"):
        read_swarmui({"parameters": parameters})
