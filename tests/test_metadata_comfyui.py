"""Reading ComfyUI graphs: samplers, passes, prompts, LoRAs, clip skip, hostile shapes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from sdstudio.cli import main
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import read_image_settings
from sdstudio.engine.metadata.comfyui import read_comfyui
from sdstudio.engine.metadata.values import Parsed
from sdstudio.engine.refine.hires_settings import HiresFix
from tests.metadata_samples import write_png
from tests.metadata_samples_comfyui import (
    Graph,
    custom_advanced,
    node,
    sdxl,
    two_pass,
    txt2img,
)


def read(graph: Graph | dict[str, Any], size: tuple[int, int] = (0, 0)) -> Parsed:
    return read_comfyui({"prompt": json.dumps(graph)}, size)


def test_stock_txt2img() -> None:
    parsed = read(txt2img())
    request = parsed.request
    assert (request.prompt, request.negative_prompt) == ("a castle on a hill", "blurry")
    assert (request.seed, request.steps, request.guidance_scale) == (156680208700286, 20, 8.0)
    assert (request.sampler, request.width, request.height) == ("Euler", 512, 768)
    assert (request.model, request.clip_skip) == ("v1-5-pruned-emaonly", 1)
    # ComfyUI's "normal" schedule is the only thing sdstudio approximates here.
    assert parsed.notes == (
        "sdstudio has no normal schedule; the closest, Automatic "
        "(the model's own timestep spacing), is used.",
    )


def test_sdxl_text_encoders() -> None:
    parsed = read(sdxl())
    request = parsed.request
    assert (request.prompt, request.negative_prompt) == ("a fox", "ugly")
    assert (request.width, request.height, request.model) == (1024, 1024, "sd_xl_base_1.0")
    graph = sdxl()
    graph["6"]["inputs"]["text_l"] = "photo"
    parsed = read(graph)
    assert parsed.request.prompt == "a fox"
    assert any("text_l" in note for note in parsed.notes)


def test_sampler_custom_advanced() -> None:
    parsed = read(custom_advanced())
    request = parsed.request
    assert (request.seed, request.steps, request.guidance_scale) == (42, 28, 4.5)
    assert (request.sampler, request.schedule) == ("DPM++ 2M", "Karras")
    assert (request.width, request.height) == (1152, 896)
    assert (request.prompt, request.negative_prompt) == ("a red kite", "")
    assert request.model == "sd3.5_medium"
    assert {"seed", "steps", "guidance_scale", "sampler", "width"} <= parsed.read


def test_sampler_custom_advanced_karras_scheduler_and_basic_guider() -> None:
    graph = custom_advanced()
    graph["14"] = node("KarrasScheduler", steps=9, sigma_max=14.6, sigma_min=0.03, rho=7.0)
    graph["12"] = node("BasicGuider", model=["16", 0], conditioning=["17", 0])
    request = read(graph).request
    assert (request.steps, request.schedule, request.prompt) == (9, "Karras", "a red kite")


def test_k_sampler_select_is_not_taken_for_a_sampler() -> None:
    graph = custom_advanced()
    graph["1"] = graph.pop("13")  # the lowest id: id order alone would pick it
    graph["10"]["inputs"]["sampler"] = ["1", 0]
    assert read(graph).request.steps == 28


@pytest.mark.parametrize(
    ("upscale", "expected"),
    [
        ("latent", HiresFix(scale=1.5, upscaler="Latent (nearest-exact)", steps=12, denoise=0.5)),
        ("size", HiresFix(width=768, height=1152, upscaler="Latent", steps=12, denoise=0.5)),
        ("model", HiresFix(scale=1.5, upscaler="4x-UltraSharp", steps=12, denoise=0.5)),
    ],
)
def test_two_pass_hires_is_read_as_the_hires_fix(upscale: str, expected: HiresFix) -> None:
    parsed = read(two_pass(upscale))
    request = parsed.request
    assert (request.steps, request.width, request.height) == (20, 512, 768)
    assert request.strength == 0.75  # the hires pass's denoise is not the base's
    assert "strength" not in parsed.read and "hires" in parsed.read
    assert request.hires == expected
    assert dict(parsed.extras) == {}
    assert not any("hires" in note.casefold() for note in parsed.notes)


def test_a_hires_pass_with_its_own_sampler_cfg_prompt_and_seed() -> None:
    graph = two_pass()
    graph["2"]["inputs"].update(
        sampler_name="dpmpp_2m", scheduler="karras", cfg=5.0, seed=7, positive=["30", 0]
    )
    graph["30"] = node("CLIPTextEncode", text="a castle, sharp details", clip=["4", 1])
    parsed = read(graph)
    hires = parsed.request.hires
    assert hires is not None
    assert (hires.sampler, hires.schedule, hires.guidance_scale) == ("DPM++ 2M", "Karras", 5.0)
    assert (hires.prompt, hires.negative_prompt) == ("a castle, sharp details", "")
    assert parsed.extras == {"Hires seed": "7"}
    assert any("another seed" in note for note in parsed.notes)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"start_at_step": 4}, "it sets start_at_step"),
        ({"denoise": 0}, "its steps or denoise are unusable"),
    ],
)
def test_a_second_pass_that_is_no_hires_fix_is_kept(change: dict, reason: str) -> None:
    graph = two_pass()
    graph["2"]["inputs"].update(change)
    parsed = read(graph)
    assert parsed.request.hires is None and "hires" not in parsed.read
    assert parsed.extras["Hires upscaler"] == "Latent (nearest-exact)"
    assert f"A second sampler pass is kept, not applied: {reason}." in parsed.notes


def test_an_upscale_method_a1111_lacks_is_kept() -> None:
    graph = two_pass("size")
    graph["20"]["inputs"]["upscale_method"] = "bislerp"
    parsed = read(graph)
    assert parsed.request.hires is None
    assert parsed.extras["Hires upscaler"] == "Latent (bislerp)"
    note = "its upscale method Latent (bislerp) is none of A1111's hires upscalers"
    assert f"A second sampler pass is kept, not applied: {note}." in parsed.notes


def test_an_image_upscale_without_a_model_names_its_method() -> None:
    graph = two_pass("model")
    graph["23"]["inputs"]["image"] = ["8", 0]  # no upscale model on the way
    parsed = read(graph)
    assert parsed.extras["Hires upscaler"] == "Lanczos"
    assert parsed.extras["Hires upscale"] == "0.375"


def test_advanced_sampler_settings_are_kept_and_plain_ones_are_not() -> None:
    advanced = {
        **txt2img()["3"]["inputs"],
        "add_noise": "disable",
        "start_at_step": 4,
        "end_at_step": 16,
        "return_with_leftover_noise": "enable",
        "noise_seed": 9,
    }
    del advanced["seed"], advanced["denoise"]
    parsed = read(txt2img(n3=node("KSamplerAdvanced", **advanced)))
    assert parsed.request.seed == 9
    assert dict(parsed.extras) == {
        "add_noise": "disable",
        "start_at_step": "4",
        "return_with_leftover_noise": "enable",
        "end_at_step": "16",
    }
    plain = advanced | {"add_noise": "enable", "start_at_step": 0, "end_at_step": 10000}
    plain["return_with_leftover_noise"] = "disable"
    parsed = read(txt2img(n3=node("KSamplerAdvanced", **plain)))
    assert dict(parsed.extras) == {}
    assert not any("not applied" in note for note in parsed.notes)


def test_a_checkpoint_hash_on_the_loader_is_kept() -> None:
    loader = node("CheckpointLoaderSimple", ckpt_name="mine.safetensors", ckpt_hash="6ce0161689")
    assert read(txt2img(n4=loader)).model_hash == "6ce0161689"
    loader["inputs"]["ckpt_hash"] = "not a hash"
    assert read(txt2img(n4=loader)).model_hash == ""
    assert read(txt2img()).model_hash == ""


def test_info_shows_the_hires_pass(capsys, tmp_path: Path) -> None:
    image = write_png(tmp_path / "two_pass.png", prompt=json.dumps(two_pass()))
    assert main(["info", str(image), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == "comfyui" and data["request"]["steps"] == 20
    assert data["extras"] == {} and "hires" in data["read"]
    assert data["request"]["hires"]["upscaler"] == "Latent (nearest-exact)"
    assert main(["info", str(image)]) == 0
    shown = "Hires fix: upscale 1.5 with Latent (nearest-exact), 12 steps, denoising 0.5"
    assert shown in capsys.readouterr().out


def test_text_through_concat_switch_and_primitive_nodes() -> None:
    graph = txt2img(
        n6=node("CLIPTextEncode", text=["30", 0], clip=["4", 1]),
        n30=node(
            "ImpactSwitch", select=["31", 0], input1=["32", 0], input2="unused", sel_mode=False
        ),
        n31=node("PrimitiveNode", value=1),
        n32=node(
            "StringFunction|pysssss",
            action="append",
            tidy_tags="yes",
            text_a=["33", 0],
            text_b=["34", 0],
            text_c="",
        ),
        n33=node("Text Multiline", text="a castle"),
        n34=node(
            "Text Concatenate",
            delimiter=" | ",
            clean_whitespace="true",
            text_a=" on a hill ",
            text_b=["35", 0],
        ),
        n35=node("Switch any [Crystools]", boolean=False, on_true="day", on_false=["36", 0]),
        n36=node("PrimitiveString", value="at night"),
    )
    assert read(graph).request.prompt == "a castle, on a hill | at night"


def test_conditioning_combine_and_concat() -> None:
    graph = txt2img(
        n3={**txt2img()["3"], "inputs": {**txt2img()["3"]["inputs"], "positive": ["40", 0]}},
        n40=node("ConditioningConcat", conditioning_to=["6", 0], conditioning_from=["41", 0]),
        n41=node("ConditioningCombine", conditioning_1=["42", 0], conditioning_2=["43", 0]),
        n42=node("CLIPTextEncode", text="red roof", clip=["4", 1]),
        n43=node("ControlNetApplyAdvanced", positive=["44", 0], negative=["7", 0], strength=1.0),
        n44=node("CLIPTextEncode", text="stone walls", clip=["4", 1]),
    )
    assert read(graph).request.prompt == "a castle on a hill BREAK red roof BREAK stone walls"


def test_lora_chain_becomes_prompt_tags() -> None:
    power = {
        "PowerLoraLoaderHeaderWidget": {"type": "PowerLoraLoaderHeaderWidget"},
        "lora_1": {"on": True, "lora": "styles\\film.safetensors", "strength": 0.6},
        "lora_2": {"on": False, "lora": "off.safetensors", "strength": 1.0},
        "lora_3": {"on": True, "lora": "grain.safetensors", "strength": 0.3},
        "➕ Add Lora": "",
        "model": ["51", 0],
        "clip": ["51", 1],
    }
    graph = txt2img(
        n3={**txt2img()["3"], "inputs": {**txt2img()["3"]["inputs"], "model": ["52", 0]}},
        n50=node(
            "LoraLoader",
            lora_name="detail.safetensors",
            strength_model=0.8,
            strength_clip=1.0,
            model=["4", 0],
            clip=["4", 1],
        ),
        n51=node(
            "LoraLoaderModelOnly",
            lora_name="light.safetensors",
            strength_model=0.5,
            model=["50", 0],
        ),
        n52=node("Power Lora Loader (rgthree)", **power),
    )
    parsed = read(graph)
    assert parsed.request.prompt == (
        "a castle on a hill <lora:detail:0.8> <lora:light:0.5> <lora:film:0.6> <lora:grain:0.3>"
    )
    assert parsed.request.model == "v1-5-pruned-emaonly"


def test_clip_skip_from_clip_set_last_layer() -> None:
    graph = txt2img(
        n6=node("CLIPTextEncode", text="a castle", clip=["60", 1]),
        n60=node(
            "LoraLoader",
            lora_name="x.safetensors",
            strength_model=1,
            strength_clip=1,
            model=["4", 0],
            clip=["61", 0],
        ),
        n61=node("CLIPSetLastLayer", stop_at_clip_layer=-2, clip=["4", 1]),
    )
    parsed = read(graph)
    assert parsed.request.clip_skip == 2
    assert "clip_skip" in parsed.read
    graph["61"]["inputs"]["stop_at_clip_layer"] = "deep"
    parsed = read(graph)
    assert parsed.request.clip_skip == 1
    assert any("CLIP layer" in note for note in parsed.notes)


def test_size_from_resolution_picker_links() -> None:
    graph = txt2img(
        n5=node("EmptyLatentImage", width=["70", 0], height=["70", 1], batch_size=1),
        n70=node("CM_SDXLResolution", resolution="832x1216"),
    )
    request = read(graph).request
    assert (request.width, request.height) == (832, 1216)


def test_cyclic_graph_reads_what_it_can() -> None:
    graph = txt2img(
        n6=node("CLIPTextEncode", text=["80", 0], clip=["4", 1]),
        n80=node("Text Concatenate", text_a=["81", 0], text_b=["80", 0], delimiter=", "),
        n81=node("StringConcatenate", string_a=["80", 0], string_b=["81", 0], delimiter=""),
        n4=node("ModelSamplingDiscrete", model=["4", 0]),
        n5=node("LatentUpscale", samples=["5", 0], width=["5", 0], height=1),
        n7=node("ConditioningCombine", conditioning_1=["7", 0], conditioning_2=["7", 0]),
    )
    parsed = read(graph)
    request = parsed.request
    assert (request.prompt, request.model, request.width, request.steps) == ("", "unknown", 512, 20)
    assert any("prompt" in note for note in parsed.notes)
    assert any("model" in note for note in parsed.notes)


def test_ten_thousand_node_chain_is_bounded() -> None:
    graph: dict[str, Any] = txt2img(n6=node("CLIPTextEncode", text=["100", 0], clip=["4", 1]))
    for index in range(100, 10_100):
        graph[str(index)] = node(
            "StringConcatenate", string_a=[str(index + 1), 0], string_b=[str(index + 1), 0]
        )
    graph["10100"] = node("PrimitiveString", value="deep")
    graph["3"]["inputs"]["model"] = ["200", 0]
    for index in range(200, 10_200):
        graph[str(index + 10_000)] = node(
            "LoraLoader", lora_name="l.safetensors", model=[str(index + 10_001), 0]
        )
    start = time.perf_counter()
    parsed = read(graph)
    assert time.perf_counter() - start < 5
    assert parsed.request.steps == 20


def test_many_samplers_and_odd_shapes_give_notes_not_exceptions() -> None:
    graph: dict[str, Any] = {
        str(i): node("KSampler", latent_image=[str(i - 1), 0]) for i in range(1, 5000)
    }
    graph["x"] = {"class_type": 5, "inputs": []}
    graph["y"] = node("KSampler", seed=[1, 2, 3], steps={"a": 1}, cfg=[True, 0], positive="text")
    assert read(graph).request.steps == 20
    with pytest.raises(InvalidRequest):
        read({"1": node("KSamplerSelect", sampler_name="euler")})


def test_workflow_chunk_when_there_is_no_prompt_chunk(tmp_path: Path) -> None:
    workflow = {
        "nodes": [
            {
                "id": 3,
                "type": "KSampler",
                "mode": 0,
                "inputs": [
                    {"name": "model", "link": 1},
                    {"name": "positive", "link": 4},
                    {"name": "negative", "link": 6},
                    {"name": "latent_image", "link": 2},
                ],
                "widgets_values": [123, "fixed", 25, 6.0, "dpmpp_2m", "karras", 1],
            },
            {"id": 4, "type": "CheckpointLoaderSimple", "widgets_values": ["dream.safetensors"]},
            {"id": 5, "type": "EmptyLatentImage", "widgets_values": [640, 960, 1]},
            {
                "id": 6,
                "type": "CLIPTextEncode",
                "inputs": [{"name": "clip", "link": 3}],
                "widgets_values": ["a harbour"],
            },
            {"id": 7, "type": "CLIPTextEncode", "widgets_values": ["fog"]},
            {"id": 8, "type": "KSampler", "mode": 2, "widgets_values": []},
        ],
        "links": [
            [1, 4, 0, 3, 0, "MODEL"],
            [2, 5, 0, 3, 3, "LATENT"],
            [3, 4, 1, 6, 0, "CLIP"],
            [4, 6, 0, 3, 1, "CONDITIONING"],
            {"id": 6, "origin_id": 7, "origin_slot": 0, "target_id": 3, "target_slot": 2},
        ],
    }
    path = write_png(tmp_path / "workflow.png", workflow=json.dumps(workflow))
    found = read_image_settings(path)
    assert found.source == "comfyui"
    request = found.request
    assert (request.prompt, request.negative_prompt, request.seed) == ("a harbour", "fog", 123)
    assert (request.steps, request.sampler, request.schedule) == (25, "DPM++ 2M", "Karras")
    assert (request.width, request.height, request.model) == (640, 960, "dream")
