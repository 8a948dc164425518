"""Reading generation settings from images made by other tools.

The samples are written here from the formats' descriptions (see
shared/FORMATS.md): AUTOMATIC1111 (PNG text and JPEG/WebP EXIF), ComfyUI,
InvokeAI 2.x and 3+, Fooocus. The parsers are fuzzed: hostile metadata must
give "no settings", never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.cli import main
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import ImageRecord, png_info, read_image_settings
from sdstudio.engine.metadata.a1111 import read_parameters
from sdstudio.engine.metadata.comfyui import read_comfyui
from sdstudio.engine.metadata.exif import decode_user_comment
from sdstudio.engine.metadata.fooocus import read_fooocus
from sdstudio.engine.metadata.invokeai import read_invokeai
from sdstudio.engine.metadata.invokeai2 import read_invokeai2
from sdstudio.engine.metadata.names import comfyui_sampler, invokeai_scheduler, model_name
from sdstudio.engine.metadata.values import build_request
from sdstudio.engine.request import GenerationRequest

A1111_TEXT = (
    "masterpiece, (a red boat:1.2) on a lake, <lora:add_detail:0.8>\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567890, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
)


def write_png(path: Path, **chunks: str) -> Path:
    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key.replace("_dash_", "-"), value)
    Image.new("RGB", (64, 96)).save(path, pnginfo=info)
    return path


def write_exif(path: Path, exif_ifd: dict[int, Any], ifd0: dict[int, Any] | None = None) -> Path:
    exif = Image.Exif()
    for tag, value in (ifd0 or {}).items():
        exif[tag] = value
    if exif_ifd:
        exif.get_ifd(0x8769).update(exif_ifd)
    Image.new("RGB", (64, 96)).save(path, exif=exif)
    return path


def summary(request: GenerationRequest) -> tuple[object, ...]:
    return (
        request.prompt,
        request.negative_prompt,
        request.steps,
        request.sampler,
        request.schedule,
        request.guidance_scale,
        request.seed,
        request.width,
        request.height,
    )


# --- AUTOMATIC1111 -----------------------------------------------------------------------

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


@pytest.mark.parametrize(
    ("suffix", "comment"),
    [
        ("png", None),
        ("jpg", b"UNICODE\0" + A1111_TEXT.encode("utf-16-be")),  # A1111 through piexif
        ("webp", b"UNICODE\0" + A1111_TEXT.encode("utf-16-le")),
        ("jpg", b"UNICODE\0" + A1111_TEXT.encode("utf-16")),  # with a byte order mark
        ("webp", b"ASCII\0\0\0" + A1111_TEXT.encode("ascii")),
    ],
)
def test_a1111_from_png_jpeg_and_webp(tmp_path: Path, suffix: str, comment: bytes | None) -> None:
    path = tmp_path / f"a1111.{suffix}"
    if comment is None:
        write_png(path, parameters=A1111_TEXT)
    else:
        write_exif(path, {0x9286: comment})
    found = read_image_settings(path)
    assert found.source == "a1111"
    assert summary(found.request) == A1111_EXPECTED
    assert found.request.model == "v1-5-pruned-emaonly"
    assert found.parameters == A1111_TEXT
    assert found.notes == ()


def test_a1111_legacy_sampler_spelling_from_jpeg(tmp_path: Path) -> None:
    text = "a cat\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 512x512"
    path = write_exif(tmp_path / "old.jpg", {0x9286: b"UNICODE\0" + text.encode("utf-16-be")})
    request = read_image_settings(path).request
    assert (request.sampler, request.schedule, request.prompt) == ("DPM++ 2M", "Karras", "a cat")


def test_user_comment_decoding() -> None:
    text = "ünïcødé 猫, Steps: 20"
    assert decode_user_comment(b"UNICODE\0" + text.encode("utf-16-be")) == text
    assert decode_user_comment(b"UNICODE\0" + text.encode("utf-16-le")) == text
    assert decode_user_comment(b"UNICODE\0\xfe\xff" + text.encode("utf-16-be")) == text
    assert decode_user_comment(b"ASCII\0\0\0plain\0") == "plain"
    assert decode_user_comment(b"\0" * 8 + b"undefined") == "undefined"
    assert decode_user_comment("already text") == "already text"
    assert decode_user_comment(b"UNICODE\0\x00a\x00") == "a"  # odd length
    assert decode_user_comment(12) == ""


def test_a1111_out_of_range_values_are_fixed_not_refused() -> None:
    text = "x\nSteps: 0, Sampler: Euler, CFG scale: 99, Seed: 99999999999, Size: 513x70"
    parsed = read_parameters(text)
    request = parsed.request
    assert (request.steps, request.guidance_scale, request.seed) == (20, 50.0, -1)
    assert (request.width, request.height) == (512, 72)
    assert any("99999999999" in note for note in parsed.notes)


# --- ComfyUI -----------------------------------------------------------------------------

COMFY_GRAPH: dict[str, Any] = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 987654321,
            "steps": 30,
            "cfg": 6.5,
            "sampler_name": "dpmpp_2m",
            "scheduler": "karras",
            "denoise": 1.0,
            "model": ["10", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "4": {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "SDXL\\juggernautXL_v9.safetensors"},
    },
    "5": {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 832, "height": 1216, "batch_size": 1},
    },
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": ["12", 0], "clip": ["10", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, lowres", "clip": ["10", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    "10": {
        "class_type": "LoraLoader",
        "inputs": {
            "lora_name": "add_detail.safetensors",
            "strength_model": 0.8,
            "strength_clip": 0.8,
            "model": ["4", 0],
            "clip": ["4", 1],
        },
    },
    "12": {
        "class_type": "PrimitiveString",
        "inputs": {"value": "a lighthouse at dusk, (waves:1.1)"},
    },
}
COMFY_EXPECTED = (
    "a lighthouse at dusk, (waves:1.1)",
    "blurry, lowres",
    30,
    "DPM++ 2M",
    "Karras",
    6.5,
    987654321,
    832,
    1216,
)


def test_comfyui_png(tmp_path: Path) -> None:
    workflow = json.dumps({"nodes": [], "links": []})
    path = write_png(tmp_path / "comfy.png", prompt=json.dumps(COMFY_GRAPH), workflow=workflow)
    found = read_image_settings(path)
    assert found.source == "comfyui"
    assert summary(found.request) == COMFY_EXPECTED
    assert found.request.model == "juggernautXL_v9"
    assert found.model_name == "SDXL\\juggernautXL_v9.safetensors"
    assert found.notes == ("The image used the LoRA add_detail at weight 0.8.",)
    assert found.request.strength == 0.75  # denoise 1.0: plain text-to-image


def test_comfyui_webp_exif(tmp_path: Path) -> None:
    ifd0 = {0x0110: "prompt:" + json.dumps(COMFY_GRAPH), 0x010F: "workflow:{}"}
    path = write_exif(tmp_path / "comfy.webp", {}, ifd0)
    found = read_image_settings(path)
    assert (found.source, summary(found.request)) == ("comfyui", COMFY_EXPECTED)


def comfy(**changes: Any) -> dict[str, Any]:
    graph = json.loads(json.dumps(COMFY_GRAPH))
    for node_id, node in changes.items():
        graph[node_id.removeprefix("n")] = node
    return graph


def test_comfyui_base_pass_is_preferred_over_a_hires_pass() -> None:
    graph = comfy(
        n1={"class_type": "LatentUpscaleBy", "inputs": {"samples": ["3", 0], "scale_by": 1.5}},
        n2={
            "class_type": "KSampler",
            "inputs": {**COMFY_GRAPH["3"]["inputs"], "latent_image": ["1", 0], "steps": 12},
        },
    )
    request = read_comfyui({"prompt": json.dumps(graph)}).request
    assert (request.steps, request.width) == (30, 832)


def test_comfyui_img2img_huge_seed_advanced_sampler_and_unknown_names() -> None:
    graph = comfy(
        n3={
            "class_type": "KSamplerAdvanced",
            "inputs": {
                "noise_seed": 2**64 - 1,
                "steps": 25,
                "cfg": 5,
                "sampler_name": "res_multistep",
                "scheduler": "kl_optimal",
                "model": ["10", 0],
                "positive": ["13", 0],
                "negative": ["7", 0],
                "latent_image": ["14", 0],
            },
        },
        n13={
            "class_type": "ControlNetApply",
            "inputs": {"conditioning": ["6", 0], "control_net": ["99", 0], "strength": 1.0},
        },
        n14={"class_type": "VAEEncode", "inputs": {"pixels": ["15", 0], "vae": ["4", 2]}},
        n15={"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
    )
    parsed = read_comfyui({"prompt": json.dumps(graph)}, (1024, 680))
    request = parsed.request
    assert request.seed == -1
    assert any(str(2**64 - 1) in note for note in parsed.notes)
    assert (request.sampler, request.schedule) == ("res_multistep", "Automatic")
    assert request.prompt == "a lighthouse at dusk, (waves:1.1)"
    assert (request.width, request.height) == (1024, 680)


def test_comfyui_cycles_end() -> None:
    graph = comfy(
        n6={"class_type": "CLIPTextEncode", "inputs": {"text": ["16", 0]}},
        n16={"class_type": "StringConcat", "inputs": {"value": ["6", 0]}},
        n10={"class_type": "LoraLoader", "inputs": {"model": ["10", 0], "lora_name": 5}},
        n5={"class_type": "LatentUpscale", "inputs": {"samples": ["5", 0]}},
    )
    request = read_comfyui({"prompt": json.dumps(graph)}).request
    assert (request.prompt, request.model, request.width) == ("", "unknown", 512)


# --- InvokeAI ----------------------------------------------------------------------------


def test_invokeai_4(tmp_path: Path) -> None:
    metadata = {
        "generation_mode": "sdxl_txt2img",
        "positive_prompt": "a castle on a hill",
        "negative_prompt": "fog",
        "width": 1024,
        "height": 768,
        "seed": 3141592653,
        "rand_device": "cpu",
        "cfg_scale": 5.5,
        "cfg_rescale_multiplier": 0,
        "steps": 32,
        "scheduler": "dpmpp_2m_k",
        "model": {"key": "a1b2", "hash": "blake3:abc", "name": "Juggernaut XL v9", "base": "sdxl"},
        "loras": [{"model": {"name": "detail-tweaker"}, "weight": 0.6}],
        "app_version": "4.2.4",
    }
    path = write_png(
        tmp_path / "invoke.png", invokeai_metadata=json.dumps(metadata), invokeai_graph="{}"
    )
    found = read_image_settings(path)
    assert found.source == "invokeai"
    assert summary(found.request) == (
        "a castle on a hill",
        "fog",
        32,
        "DPM++ 2M",
        "Karras",
        5.5,
        3141592653,
        1024,
        768,
    )
    assert found.request.model == "Juggernaut XL v9"
    assert found.notes == ("The image used the LoRA detail-tweaker at weight 0.6.",)


def test_invokeai_3_text_model_and_img2img_strength() -> None:
    metadata = {
        "positive_prompt": "p",
        "steps": 20,
        "scheduler": "euler_a",
        "cfg_scale": [7.0, 7.0],
        "model": "stable-diffusion-v1-5",
        "strength": 0.4,
        "seed": -5,
    }
    request = read_invokeai({"invokeai_metadata": json.dumps(metadata)}).request
    assert (request.sampler, request.schedule, request.guidance_scale) == (
        "Euler a",
        "Automatic",
        7,
    )
    assert (request.model, request.strength, request.seed) == ("stable-diffusion-v1-5", 0.4, -1)


def test_invokeai_2_sd_metadata(tmp_path: Path) -> None:
    metadata = {
        "model": "stable diffusion",
        "model_weights": "stable-diffusion-1.5",
        "app_id": "invoke-ai/InvokeAI",
        "app_version": "2.2.5",
        "image": {
            "prompt": [{"prompt": "a fox in the snow [blurry, lowres]", "weight": 1.0}],
            "steps": 50,
            "cfg_scale": 7.5,
            "threshold": 0,
            "perlin": 0,
            "height": 512,
            "width": 576,
            "seed": 1234,
            "seamless": False,
            "type": "txt2img",
            "sampler": "k_euler_a",
            "variations": [],
        },
    }
    dream = '"a fox in the snow [blurry, lowres]" -s 50 -S 1234 -W 576 -H 512 -C 7.5 -A k_euler_a'
    path = write_png(tmp_path / "invoke2.png", sd_dash_metadata=json.dumps(metadata), Dream=dream)
    found = read_image_settings(path)
    expected = ("a fox in the snow", "blurry, lowres", 50, "Euler a", "Automatic", 7.5, 1234)
    assert found.source == "invokeai"
    assert summary(found.request) == (*expected, 576, 512)
    assert found.request.model == "stable-diffusion-1.5"
    dream_only = read_invokeai2({"Dream": dream}).request
    assert summary(dream_only) == (*expected, 576, 512)


def test_invokeai_2_dream_variants() -> None:
    request = read_invokeai2({"Dream": '"a cat" -s50 -S 7 -A k_lms --seamless -C 9'}).request
    assert (request.prompt, request.steps, request.seed, request.sampler) == ("a cat", 50, 7, "LMS")
    assert request.guidance_scale == 9
    with pytest.raises(InvalidRequest):
        read_invokeai2({"Dream": '"unclosed -s 5'})
    with pytest.raises(InvalidRequest):
        read_invokeai2({"Dream": "just words"})


# --- Fooocus -----------------------------------------------------------------------------

FOOOCUS_JSON = {
    "adm_guidance": "(1.5, 0.8, 0.3)",
    "base_model": "juggernautXL_v8Rundiffusion",
    "full_negative_prompt": ["ugly", "bad hands"],
    "full_prompt": ["a dragon over mountains", "cinematic, highly detailed"],
    "guidance_scale": 4,
    "negative_prompt": "ugly",
    "performance": "Speed",
    "prompt": "a dragon over mountains",
    "resolution": "(1152, 896)",
    "sampler": "dpmpp_2m_sde_gpu",
    "scheduler": "karras",
    "seed": "7623987412",
    "sharpness": 2,
    "steps": 30,
    "styles": "['Fooocus V2', 'Fooocus Enhance']",
    "version": "Fooocus v2.5.5",
}


def test_fooocus_json_scheme(tmp_path: Path) -> None:
    path = write_png(
        tmp_path / "fooocus.png", parameters=json.dumps(FOOOCUS_JSON), fooocus_scheme="fooocus"
    )
    found = read_image_settings(path)
    assert found.source == "fooocus"
    assert summary(found.request) == (
        "a dragon over mountains, cinematic, highly detailed",
        "ugly, bad hands",
        30,
        "DPM++ 2M SDE",
        "Karras",
        4.0,
        -1,  # 7623987412 is beyond 2**32-1
        1152,
        896,
    )
    assert found.request.model == "juggernautXL_v8Rundiffusion"
    assert any("7623987412" in note for note in found.notes)


def test_fooocus_labelled_keys_and_performance_steps() -> None:
    data = {
        "Prompt": "a bird",
        "Negative Prompt": "",
        "Performance": "Extreme Speed",
        "Sampler": "dpmpp_3m_sde_gpu",
        "Scheduler": "exponential",
        "Guidance Scale": 3,
        "Seed": "12",
        "Resolution": "(896, 1152)",
        "Base Model": "sd_xl_base_1.0.safetensors",
    }
    request = read_fooocus({"parameters": json.dumps(data)}).request
    assert summary(request) == ("a bird", "", 8, "DPM++ 3M SDE", "Exponential", 3, 12, 896, 1152)
    assert request.model == "sd_xl_base_1.0"


def test_fooocus_a1111_scheme_in_png_and_jpeg(tmp_path: Path) -> None:
    text = (
        "a dragon, cinematic\nNegative prompt: ugly\n"
        "Steps: 30, Sampler: DPM++ 2M SDE Karras, Seed: 1234, Size: 1152x896, CFG scale: 4, "
        "Sharpness: 2, Model: juggernautXL_v8Rundiffusion, Performance: Speed, Scheduler: karras, "
        'Raw prompt: "a dragon", Version: Fooocus v2.5.5'
    )
    expected = ("a dragon, cinematic", "ugly", 30, "DPM++ 2M SDE", "Karras", 4, 1234, 1152, 896)
    png = write_png(tmp_path / "f.png", parameters=text, fooocus_scheme="a1111")
    jpeg = write_exif(tmp_path / "f.jpg", {}, {0x9286: text, 0x927C: "a1111", 0x0131: "Fooocus"})
    for path in (png, jpeg):
        found = read_image_settings(path)
        assert (found.source, summary(found.request)) == ("fooocus", expected)
    lacking = text.replace("DPM++ 2M SDE Karras", "dpmpp_3m_sde_gpu")
    request = read_fooocus({"parameters": lacking, "fooocus_scheme": "a1111"}).request
    assert (request.sampler, request.schedule) == ("DPM++ 3M SDE", "Karras")


def test_fooocus_json_in_jpeg(tmp_path: Path) -> None:
    ifd0 = {0x9286: json.dumps(FOOOCUS_JSON), 0x927C: "fooocus"}
    found = read_image_settings(write_exif(tmp_path / "f.jpg", {}, ifd0))
    assert (found.source, found.request.sampler, found.request.width) == (
        "fooocus",
        "DPM++ 2M SDE",
        1152,
    )


# --- Which format wins -------------------------------------------------------------------


def test_order_of_preference(tmp_path: Path) -> None:
    comfy_graph = json.dumps(COMFY_GRAPH)
    invoke = json.dumps({"positive_prompt": "invoke", "steps": 9})
    both = write_png(tmp_path / "1.png", parameters=A1111_TEXT, prompt=comfy_graph)
    assert read_image_settings(both).source == "a1111"
    invoke_and_comfy = write_png(tmp_path / "2.png", invokeai_metadata=invoke, prompt=comfy_graph)
    assert read_image_settings(invoke_and_comfy).source == "invokeai"
    broken_a1111 = write_png(tmp_path / "3.png", parameters="only a prompt", prompt=comfy_graph)
    assert read_image_settings(broken_a1111).source == "comfyui"
    record = ImageRecord(GenerationRequest(model="m", prompt="own", seed=1))
    own = tmp_path / "4.png"
    info = png_info(record)
    info.add_text("prompt", comfy_graph)
    Image.new("RGB", (8, 8)).save(own, pnginfo=info)
    assert read_image_settings(own).source == "sdstudio"


@pytest.mark.parametrize(
    "chunks",
    [
        {"Software": "GIMP", "Comment": "hello"},
        {"prompt": json.dumps({"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}})},
        {"prompt": "not json"},
        {"invokeai_metadata": "{}"},
        {"sd_dash_metadata": json.dumps({"image": {}})},
        {"parameters": "just a prompt", "fooocus_scheme": "fooocus"},
        {"parameters": "[" * 100_000},
    ],
)
def test_no_settings(tmp_path: Path, chunks: dict[str, str]) -> None:
    path = write_png(tmp_path / "none.png", **chunks)
    with pytest.raises(InvalidRequest, match=r"none\.png holds no generation settings"):
        read_image_settings(path)


def test_jpeg_without_settings(tmp_path: Path) -> None:
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (8, 8)).save(plain)
    camera = write_exif(tmp_path / "camera.jpg", {0x9286: b"ASCII\0\0\0"}, {0x010F: "Canon"})
    for path in (plain, camera):
        with pytest.raises(InvalidRequest, match="holds no generation settings"):
            read_image_settings(path)


def test_cli_info_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    comfy_png = write_png(tmp_path / "c.png", prompt=json.dumps(COMFY_GRAPH))
    a1111_jpg = write_exif(
        tmp_path / "a.jpg", {0x9286: b"UNICODE\0" + A1111_TEXT.encode("utf-16-be")}
    )
    assert main(["info", str(comfy_png)]) == 0
    out = capsys.readouterr().out
    assert "Source: ComfyUI" in out and "Sampler: DPM++ 2M" in out
    assert main(["info", str(a1111_jpg)]) == 0
    out = capsys.readouterr().out
    assert "Source: AUTOMATIC1111 parameters" in out and "Seed: 1234567890" in out


# --- Names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (("dpmpp_2m", "karras"), ("DPM++ 2M", "Karras")),
        (("dpmpp_2m_sde_gpu", "karras"), ("DPM++ 2M SDE", "Karras")),
        (("euler_ancestral", "normal"), ("Euler a", "Automatic")),
        (("euler", "simple"), ("Euler", "Automatic")),
        (("dpmpp_3m_sde", "exponential"), ("DPM++ 3M SDE", "Exponential")),
        (("uni_pc", "sgm_uniform"), ("UniPC", "SGM Uniform")),
        (("lcm", "beta"), ("LCM", "Beta")),
        (("ddim", "ddim_uniform"), ("DDIM", "Automatic")),
        (("dpm_2_ancestral", ""), ("DPM2 a", "Automatic")),
        (("heun", "kl_optimal"), ("Heun", "kl_optimal")),
        (("dpmpp_2s_ancestral", "karras"), ("dpmpp_2s_ancestral", "Automatic")),
    ],
)
def test_comfyui_names(names: tuple[str, str], expected: tuple[str, str]) -> None:
    assert comfyui_sampler(*names) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dpmpp_2m_k", ("DPM++ 2M", "Karras")),
        ("dpmpp_2m", ("DPM++ 2M", "Automatic")),
        ("dpmpp_2m_sde_k", ("DPM++ 2M SDE", "Karras")),
        ("dpmpp_sde", ("DPM++ SDE", "Automatic")),
        ("euler_k", ("Euler", "Karras")),
        ("euler_a", ("Euler a", "Automatic")),
        ("kdpm_2_a_k", ("DPM2 a", "Karras")),
        ("lms_k", ("LMS", "Karras")),
        ("heun", ("Heun", "Automatic")),
        ("pndm", ("PLMS", "Automatic")),
        ("unipc_k", ("UniPC", "Karras")),
        ("deis", ("DEIS", "Automatic")),
        ("lcm", ("LCM", "Automatic")),
        ("ddim", ("DDIM", "Automatic")),
        ("k_lms", ("LMS", "Automatic")),
        ("k_dpmpp_2", ("DPM++ 2M", "Automatic")),
        ("k_dpm_2_a", ("DPM2 a", "Automatic")),
        ("plms", ("PLMS", "Automatic")),
        ("dpmpp_2m_karras", ("DPM++ 2M", "Karras")),
        ("tcd", ("tcd", "Automatic")),
    ],
)
def test_invokeai_names(name: str, expected: tuple[str, str]) -> None:
    assert invokeai_scheduler(name) == expected


def test_model_names() -> None:
    assert model_name("SDXL\\juggernautXL_v9.safetensors") == "juggernautXL_v9"
    assert model_name("/a/b/sd_xl_base_1.0.ckpt") == "sd_xl_base_1.0"
    assert model_name("v1-5-pruned-emaonly") == "v1-5-pruned-emaonly"


def test_build_request_fixes_values() -> None:
    parsed = build_request(
        {"seed": 2**32, "width": 1000, "height": 9000, "steps": 900, "guidance_scale": "nan"},
        model="m",
    )
    request = parsed.request
    assert (request.seed, request.width, request.height) == (-1, 1000, 4096)
    assert (request.steps, request.guidance_scale) == (500, 7.0)
    assert len(parsed.notes) == 3
    request = build_request({"seed": 2**32 - 1, "steps": "12.0", "width": True}).request
    assert (request.seed, request.steps, request.width, request.model) == (
        2**32 - 1,
        12,
        512,
        "unknown",
    )


# --- Fuzzing -----------------------------------------------------------------------------

KEYS = [
    "prompt", "text", "value", "seed", "noise_seed", "steps", "cfg", "sampler_name", "scheduler",
    "denoise", "model", "positive", "negative", "latent_image", "width", "height", "ckpt_name",
    "lora_name", "strength_model", "class_type", "inputs", "conditioning", "samples",
    "positive_prompt", "negative_prompt", "cfg_scale", "image", "weight", "loras", "name",
    "full_prompt", "resolution", "guidance_scale", "sampler", "base_model", "performance",
]  # fmt: skip
NODE_IDS = ["1", "2", "3", "10"]
CLASSES = ["KSampler", "KSamplerAdvanced", "KSampler (Efficient)", "CLIPTextEncode", "LoraLoader",
           "CheckpointLoaderSimple", "EmptyLatentImage", "PrimitiveString"]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(KEYS + NODE_IDS + CLASSES + ["dpmpp_2m_k", "(512, 512)", "karras"])
)
links = st.lists(st.sampled_from(NODE_IDS) | st.integers(0, 3), min_size=2, max_size=2)
json_values = st.recursive(
    scalars | links,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=6)
    ),
    max_leaves=24,
)
# Node inputs: links where ComfyUI has links, text or links for texts, anything elsewhere.
COMFY_INPUTS = {
    key: (
        links
        if key in ("model", "positive", "negative", "latent_image", "conditioning", "samples")
        else st.one_of(links, st.text(min_size=1, max_size=8))
        if key in ("text", "value", "ckpt_name", "lora_name", "sampler_name")
        else scalars
    )
    for key in [*KEYS[:19], "conditioning", "samples"]
}
graphs = st.dictionaries(
    st.sampled_from(NODE_IDS),
    st.fixed_dictionaries(
        {
            "class_type": st.sampled_from(CLASSES),
            "inputs": st.fixed_dictionaries({}, optional=COMFY_INPUTS),
        }
    )
    | json_values,
    max_size=4,
)
READERS = {
    "prompt": read_comfyui,
    "invokeai_metadata": read_invokeai,
    "sd-metadata": read_invokeai2,
    "Dream": read_invokeai2,
    "parameters": read_fooocus,
}
FUZZ = settings(max_examples=200, deadline=None)


def read_all(texts: dict[str, str]) -> None:
    """Every reader, guarded and not: only InvalidRequest may escape."""
    size = (512, 512)
    for read in (read_comfyui, read_invokeai, read_invokeai2, read_fooocus):
        with contextlib.suppress(InvalidRequest):
            read(texts, size)
        # Without the guard too: malformed input is handled on purpose, not by the safety net.
        with contextlib.suppress(InvalidRequest):
            read.__wrapped__(texts, size)  # type: ignore[attr-defined]
    with contextlib.suppress(InvalidRequest):
        read_parameters(texts.get("parameters", ""))


@FUZZ
@given(st.sampled_from(sorted(READERS)), json_values, st.booleans())
def test_fuzz_json_chunks(key: str, value: object, nest: bool) -> None:
    # InvokeAI 2.x keeps its settings one level down, under "image".
    text = json.dumps({"image": value, "model_weights": value} if nest else value)
    read_all({key: text, "fooocus_scheme": "fooocus"})


@FUZZ
@given(graphs)
def test_fuzz_comfyui_graphs(graph: dict[str, Any]) -> None:
    read_all({"prompt": json.dumps(graph)})


@FUZZ
@given(st.sampled_from(sorted(READERS)), st.text(), st.sampled_from(["", "a1111", "fooocus"]))
def test_fuzz_text_chunks(key: str, value: str, scheme: str) -> None:
    read_all({key: value, "fooocus_scheme": scheme})


@FUZZ
@given(
    st.binary(max_size=64), st.sampled_from([b"", b"UNICODE\0", b"ASCII\0\0\0", b"JIS\0\0\0\0\0"])
)
def test_fuzz_user_comment(body: bytes, header: bytes) -> None:
    assert isinstance(decode_user_comment(header + body), str)


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from([*sorted(READERS), "fooocus_scheme"]),
    st.text(max_size=200) | json_values.map(json.dumps),
)
def test_fuzz_image_files(tmp_path_factory: pytest.TempPathFactory, key: str, value: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "x.png"
    info = PngInfo()
    info.add_text(key, value)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    with contextlib.suppress(InvalidRequest):
        read_image_settings(path)


# --- Regression cases found while fuzzing -------------------------------------------------


@pytest.mark.parametrize(
    "texts",
    [
        {"Dream": '"a cat -s 5'},  # shlex: No closing quotation
        {"Dream": "\\"},  # shlex: No escaped character
        {"Dream": "x -s 1 " * 5000},  # longer than any real command line (shlex is slow)
        {"invokeai_metadata": "[" * 100_000},  # json: RecursionError, not a ValueError
        {"sd-metadata": '{"a":' * 100_000},
        {"prompt": "{" * 100_000},
        {"parameters": "{" * 100_000, "fooocus_scheme": "fooocus"},
        {"prompt": json.dumps({"3": {"class_type": "KSampler", "inputs": {"positive": [[1], 0]}}})},
        {"invokeai_metadata": json.dumps({"steps": 2**80, "seed": 1e308, "cfg_scale": "inf"})},
    ],
)
def test_fuzz_regressions(texts: dict[str, str]) -> None:
    read_all(texts)


def test_long_parameters_line_is_read_in_linear_time() -> None:
    """A1111's pattern took quadratic time on a long line of words without a colon."""
    started = time.perf_counter()
    for line in ("word " * 40_000, "a" * 200_000, " " * 200_000 + "x"):
        with pytest.raises(InvalidRequest):
            read_parameters(line)
    assert time.perf_counter() - started < 5  # hours for 1 MB before; about a second now


def test_schedule_the_sampler_lacks_falls_back_to_its_default() -> None:
    from sdstudio.engine.metadata.values import build_request

    parsed = build_request({"prompt": "x", "sampler": "Euler a", "schedule": "Karras"})
    assert (parsed.request.sampler, parsed.request.schedule) == ("Euler a", "Automatic")
    assert any("Euler a has no Karras schedule" in note for note in parsed.notes)
