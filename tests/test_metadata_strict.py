"""Readers claim only their own format, never invent settings, and split sampler names.

The samples are written here from the formats' descriptions: JSON that other
tools put in ``parameters`` (a ComfyUI graph as saved by image-saver nodes, a
web demo's settings, NovelAI-style JSON), RuinedFooocus's JSON, and A1111 text
with other tools' sampler spellings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from metadata_samples import write_png

from sdstudio.cli import main
from sdstudio.engine import samplers
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import read_image_settings
from sdstudio.engine.metadata.a1111 import read_parameters
from sdstudio.engine.metadata.fooocus import read_fooocus
from sdstudio.engine.metadata.invokeai import read_invokeai
from sdstudio.engine.metadata.names import sampler_and_schedule
from sdstudio.engine.metadata.values import build_request

COMFY_API_GRAPH = {
    "3": {
        "class_type": "KSampler",
        "inputs": {"seed": 5, "steps": 25, "cfg": 6.0, "sampler_name": "euler"},
    },
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["4", 1]}},
}
# JSON texts other tools write into ``parameters`` (or EXIF UserComment), each with a
# ``prompt`` key. None is Fooocus's or AUTOMATIC1111's.
FOREIGN_JSON = {
    "comfyui-graph-under-prompt": {"prompt": COMFY_API_GRAPH, "workflow": {"nodes": []}},
    "comfyui-graph-itself": COMFY_API_GRAPH,
    "web-demo": {
        "prompt": "a castle",
        "negative_prompt": "blurry",
        "resolution": "896 x 1152",
        "guidance_scale": 7,
        "num_inference_steps": 28,
        "seed": 42,
        "sampler": "Euler a",
        "Model": {"Model": "Some XL", "Model hash": "e3c47aedb0"},
    },
    "novelai-style": {
        "prompt": "1girl, solo",
        "steps": 28,
        "height": 1216,
        "width": 832,
        "scale": 5.0,
        "seed": 1234,
        "sampler": "k_euler_ancestral",
        "uc": "lowres",
    },
    "text-with-pairs": {
        "prompt": "Steps: 20, Sampler: Euler, Seed: 3, Size: 512x512",
        "note": "https://example.com/a, b: c",
    },
}


@pytest.mark.parametrize("name", sorted(FOREIGN_JSON))
def test_fooocus_and_a1111_do_not_claim_other_json(tmp_path: Path, name: str) -> None:
    text = json.dumps(FOREIGN_JSON[name])
    with pytest.raises(InvalidRequest):
        read_fooocus({"parameters": text})
    with pytest.raises(InvalidRequest):
        read_parameters(text)
    with pytest.raises(InvalidRequest):
        read_parameters(json.dumps(FOREIGN_JSON[name], indent=2))
    path = write_png(tmp_path / "foreign.png", parameters=text)
    try:
        found = read_image_settings(path)
    except InvalidRequest as error:
        assert "holds no generation settings" in str(error)
    else:
        assert found.source not in ("fooocus", "a1111")


def test_a1111_needs_its_settings_keys() -> None:
    with pytest.raises(InvalidRequest):
        read_parameters("a cat\nLighting: soft, Mood: calm, Style: ink")
    parsed = read_parameters("a cat\nsteps: 9, CFG Scale: 4.5, SAMPLER: euler_ancestral_karras")
    request = parsed.request
    assert (request.steps, request.guidance_scale) == (9, 4.5)
    assert (request.sampler, request.schedule) == ("Euler a", "Automatic")
    assert any("Euler a has no Karras schedule" in note for note in parsed.notes)


def test_ruinedfooocus_is_read_with_its_own_keys() -> None:
    data = {
        "Prompt": "a lighthouse",
        "Negative": "fog",
        "steps": 24,
        "cfg": 6.5,
        "width": 1152,
        "height": 896,
        "seed": 77,
        "sampler_name": "dpmpp_2m_sde_gpu",
        "scheduler": "karras",
        "base_model_name": "sd_xl_base_1.0.safetensors",
        "software": "RuinedFooocus",
    }
    parsed = read_fooocus({"parameters": json.dumps(data)})
    request = parsed.request
    assert (request.prompt, request.negative_prompt) == ("a lighthouse", "fog")
    assert (request.steps, request.guidance_scale, request.seed) == (24, 6.5, 77)
    assert (request.width, request.height) == (1152, 896)
    assert (request.sampler, request.schedule) == ("DPM++ 2M SDE", "Karras")
    assert request.model == "sd_xl_base_1.0"
    assert parsed.notes == ()


def test_invokeai_needs_its_own_keys() -> None:
    with pytest.raises(InvalidRequest):
        read_invokeai({"invokeai_metadata": json.dumps({"prompt": "x", "steps": 9})})
    parsed = read_invokeai({"invokeai_metadata": json.dumps({"steps": 9, "scheduler": "euler"})})
    assert parsed.request.steps == 9


def test_settings_not_read_are_named_in_notes() -> None:
    parsed = read_parameters("a cat\nSteps: 12, Sampler: Euler, Seed: 5")
    assert {"prompt", "steps", "sampler", "schedule", "seed"} <= parsed.read
    assert not {"guidance_scale", "width", "height"} & parsed.read
    notes = " ".join(parsed.notes)
    assert "does not say the CFG scale; the default 7 is used" in notes
    assert "does not say the width; the default 512 is used" in notes
    assert "steps" not in notes
    parsed = read_fooocus({"parameters": json.dumps({"prompt": "x"}), "fooocus_scheme": "fooocus"})
    assert parsed.read == {"prompt", "negative_prompt"}
    assert any("does not say the sampler" in note for note in parsed.notes)
    assert any("does not say the steps; the default 20 is used" in note for note in parsed.notes)


def test_cli_info_shows_notes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_png(
        tmp_path / "n.png", parameters="a cat\nSteps: 12, Sampler: Euler a Karras, Size: 64x64"
    )
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Notes:" in out
    assert "Euler a has no Karras schedule in sdstudio; Automatic is used." in out
    assert "The image does not say the seed; a random seed is used." in out
    assert main(["info", "--json", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "Euler a has no Karras schedule in sdstudio; Automatic is used." in data["notes"]
    full = write_png(
        tmp_path / "f.png",
        parameters="a cat\nSteps: 12, Sampler: Euler, CFG scale: 5, Seed: 1, Size: 64x64",
    )
    assert main(["info", "--json", str(full)]) == 0
    assert json.loads(capsys.readouterr().out)["notes"] == []


@pytest.mark.parametrize(
    ("sampler", "scheduler", "expected"),
    [
        ("euler_ancestral_karras", "", ("Euler a", "Karras")),
        ("Euler Ancestral Karras", "", ("Euler a", "Karras")),
        ("euler_karras", "", ("Euler", "Karras")),
        ("dpmpp_2m_sde_gpu_karras", "", ("DPM++ 2M SDE", "Karras")),
        ("DPM++ 2M SDE Karras", "", ("DPM++ 2M SDE", "Karras")),
        ("DPM++ 2M SDE Karras", "Automatic", ("DPM++ 2M SDE", "Karras")),
        ("DPM++ 2M Karras", "Exponential", ("DPM++ 2M", "Exponential")),
        ("dpmpp_2m_exponential", "", ("DPM++ 2M", "Exponential")),
        ("dpmpp_3m_sde_gpu", "exponential", ("DPM++ 3M SDE", "Exponential")),
        ("DPM2 a Karras", "", ("DPM2 a", "Karras")),
        ("lms_beta", "", ("LMS", "Beta")),
        ("uni_pc_sgm_uniform", "", ("UniPC", "SGM Uniform")),
        ("Euler a", "SGM Uniform", ("Euler a", "SGM Uniform")),
        ("dpmpp_2m", "karras", ("DPM++ 2M", "Karras")),
    ],
)
def test_sampler_names_carrying_a_schedule(
    sampler: str, scheduler: str, expected: tuple[str, str]
) -> None:
    choice = sampler_and_schedule(sampler, scheduler)
    assert (choice.sampler, choice.schedule) == expected
    assert choice.notes == ()


@pytest.mark.parametrize(
    ("sampler", "scheduler", "expected"),
    [
        ("euler_simple", "", ("Euler", "Automatic")),
        ("euler", "normal", ("Euler", "Automatic")),
        ("ddim", "ddim_uniform", ("DDIM", "Automatic")),
        ("DPM++ 2M", "Uniform", ("DPM++ 2M", "Automatic")),
        ("heun", "kl_optimal", ("Heun", "kl_optimal")),
        ("dpmpp_2s_ancestral", "karras", ("dpmpp_2s_ancestral", "Automatic")),
    ],
)
def test_schedules_sdstudio_lacks_are_noted(
    sampler: str, scheduler: str, expected: tuple[str, str]
) -> None:
    choice = sampler_and_schedule(sampler, scheduler)
    assert (choice.sampler, choice.schedule) == expected
    assert len(choice.notes) == 1 and "sdstudio has no" in choice.notes[0]


@pytest.mark.parametrize("sampler", samplers.sampler_names())
def test_supported_combinations_are_kept(sampler: str) -> None:
    for schedule in samplers.schedules_for(sampler):
        text = f"x\nSteps: 9, Sampler: {sampler}, Schedule type: {schedule}, Seed: 1"
        parsed = read_parameters(text)
        assert (parsed.request.sampler, parsed.request.schedule) == (sampler, schedule)
        assert not any("schedule" in note for note in parsed.notes)
        samplers.check_combination(parsed.request.sampler, parsed.request.schedule)


def test_euler_a_with_karras_is_changed_with_a_note() -> None:
    for text in (
        "x\nSteps: 9, Sampler: Euler a, Schedule type: Karras, Seed: 1",
        "x\nSteps: 9, Sampler: Euler a Karras, Seed: 1",
    ):
        parsed = read_parameters(text)
        assert (parsed.request.sampler, parsed.request.schedule) == ("Euler a", "Automatic")
        assert "Euler a has no Karras schedule in sdstudio; Automatic is used." in parsed.notes
    fooocus = "x\nSteps: 9, Sampler: euler_ancestral, Scheduler: karras, Seed: 1"
    parsed = read_fooocus({"parameters": fooocus, "fooocus_scheme": "a1111"})
    assert (parsed.request.sampler, parsed.request.schedule) == ("Euler a", "Automatic")
    assert any("no Karras schedule" in note for note in parsed.notes)
    samplers.check_combination(parsed.request.sampler, parsed.request.schedule)


def test_sampler_without_schedule_gets_a_supported_one() -> None:
    parsed = build_request({"sampler": "Euler a"})
    assert parsed.request.schedule == "Automatic"
    samplers.check_combination(parsed.request.sampler, parsed.request.schedule)
    assert any("does not say the schedule type" in note for note in parsed.notes)
