"""Which settings an image held: ``ImageSettings.read``, ``info``'s marks, model hashes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import metadata_samples_comfyui as comfy
from metadata_samples import A1111_TEXT
from PIL import Image

from sdstudio.cli import main
from sdstudio.engine.metadata import ImageRecord, png_info, read_image_settings
from sdstudio.engine.metadata.a1111 import read_parameters
from sdstudio.engine.metadata.fooocus import read_fooocus
from sdstudio.engine.metadata.tensorart import read_tensorart
from sdstudio.engine.metadata.values import build_request
from sdstudio.engine.request import GenerationRequest
from tests.metadata_samples_more import FOOOCUS_JSON, write_text_png

UNREAD = "(not in the image; sdstudio's default)"
TENSORART_NO_SAMPLER = {
    "prompt": "a castle on a hill",
    "negativePrompt": "blurry",
    "width": 512,
    "height": 768,
    "seed": 42,
    "steps": 20,
    "cfgScale": 8,
    "baseModel": {"modelFileName": "dreamshaper_8", "hash": "879db523c3"},
}


def _swarm_without_steps_or_sampler(tmp_path: Path) -> Path:
    params = {"prompt": "a red fox", "model": "sd_xl_base_1.0.safetensors", "seed": 5}
    parameters = json.dumps({"sui_image_params": params})
    return write_text_png(tmp_path / "swarm.png", {"parameters": parameters})


def test_own_record_holds_every_field(tmp_path: Path) -> None:
    request = GenerationRequest(model="m", prompt="a boat", seed=3)
    path = tmp_path / "own.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info(ImageRecord(request=request)))
    found = read_image_settings(path)
    assert found.read == {f.name for f in dataclasses.fields(GenerationRequest)}


def test_other_tools_say_what_they_read(tmp_path: Path) -> None:
    found = read_image_settings(_swarm_without_steps_or_sampler(tmp_path))
    assert {"prompt", "seed", "model"} <= found.read
    assert not {"steps", "sampler", "schedule", "guidance_scale", "vae"} & found.read


def test_an_image_naming_no_vae_has_no_vae_read() -> None:
    assert "vae" not in read_parameters(A1111_TEXT).read
    assert "vae" not in build_request({"prompt": "a", "vae": ""}).read
    assert "vae" in build_request({"prompt": "a", "vae": "sdxl_vae"}).read


def test_info_marks_settings_the_image_did_not_hold(capsys, tmp_path: Path) -> None:
    path = _swarm_without_steps_or_sampler(tmp_path)
    assert main(["info", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "Prompt: a red fox" in lines
    assert "Seed: 5" in lines
    assert "Model: sd_xl_base_1.0" in lines
    assert f"Steps: 20 {UNREAD}" in lines
    assert f"CFG scale: 7 {UNREAD}" in lines
    assert f"Sampler: DPM++ 2M {UNREAD}" in lines
    assert f"Schedule type: Karras {UNREAD}" in lines
    assert f"Mode: txt2img {UNREAD}" in lines
    assert main(["info", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "prompt" in data["read"] and "steps" not in data["read"]


def test_info_marks_nothing_in_sdstudio_images(capsys, tmp_path: Path) -> None:
    request = GenerationRequest(model="m", prompt="a boat", seed=3)
    path = tmp_path / "own.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info(ImageRecord(request=request)))
    assert main(["info", str(path)]) == 0
    assert "not in the image" not in capsys.readouterr().out


def test_fooocus_model_hashes_are_read() -> None:
    scheme = {"parameters": json.dumps({**FOOOCUS_JSON, "base_model_hash": "aeb7e9e689"})}
    assert read_fooocus({**scheme, "fooocus_scheme": "fooocus"}).model_hash == "aeb7e9e689"
    ruined = {
        "software": "RuinedFooocus",
        "Prompt": "a knight",
        "steps": 24,
        "base_model_name": "sd_xl_base_1.0.safetensors",
        "base_model_hash": "31e35c80fc",
    }
    assert read_fooocus({"parameters": json.dumps(ruined)}).model_hash == "31e35c80fc"


def test_tensorart_takes_the_sampler_from_its_comfyui_graph() -> None:
    graph = comfy.txt2img(
        n4=comfy.node("ECHOCheckpointLoaderSimple", ckpt_name="EMS-1.safetensors")
    )
    graph["3"]["inputs"].update(sampler_name="dpmpp_2m", scheduler="karras")
    texts = {"generation_data": json.dumps(TENSORART_NO_SAMPLER), "prompt": json.dumps(graph)}
    parsed = read_tensorart(texts, (512, 768))
    assert (parsed.request.sampler, parsed.request.schedule) == ("DPM++ 2M", "Karras")
    assert {"sampler", "schedule"} <= parsed.read
    assert any("come from the ComfyUI graph" in note for note in parsed.notes)


def test_tensorart_graph_schedule_notes_are_kept() -> None:
    texts = {
        "generation_data": json.dumps(TENSORART_NO_SAMPLER),
        "prompt": json.dumps(comfy.txt2img()),
    }
    parsed = read_tensorart(texts, (512, 768))
    assert (parsed.request.sampler, parsed.request.schedule) == ("Euler", "Automatic")
    assert any("no normal schedule" in note for note in parsed.notes)


def test_tensorart_without_a_sampler_anywhere_leaves_it_unread() -> None:
    alone = read_tensorart({"generation_data": json.dumps(TENSORART_NO_SAMPLER)}, (512, 768))
    graph = comfy.txt2img()
    del graph["3"]
    broken = {"generation_data": json.dumps(TENSORART_NO_SAMPLER), "prompt": json.dumps(graph)}
    beside = read_tensorart(broken, (512, 768))
    for parsed in (alone, beside):
        assert not {"sampler", "schedule"} & parsed.read
        assert any("does not name the sampler" in note for note in parsed.notes)
        assert {"prompt", "steps", "seed"} <= parsed.read


def test_tensorart_sampler_without_schedule_leaves_the_schedule_unread() -> None:
    data = {**TENSORART_NO_SAMPLER, "sampler": "Euler"}
    parsed = read_tensorart({"generation_data": json.dumps(data)}, (512, 768))
    assert parsed.request.sampler == "Euler"
    assert "sampler" in parsed.read and "schedule" not in parsed.read
