"""Reading generation settings from images made by other tools.

The samples are written here from the formats' descriptions (see
shared/FORMATS.md): AUTOMATIC1111 (PNG text and JPEG/WebP EXIF), ComfyUI,
InvokeAI 2.x and 3+, Fooocus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from metadata_samples import A1111_TEXT, summary, write_exif, write_png
from PIL import Image

from sdstudio.cli import main
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import ImageRecord, png_info, read_image_settings
from sdstudio.engine.metadata.a1111 import read_parameters
from sdstudio.engine.metadata.comfyui import read_comfyui
from sdstudio.engine.metadata.exif import decode_user_comment
from sdstudio.engine.metadata.fooocus import read_fooocus
from sdstudio.engine.metadata.invokeai import read_invokeai
from sdstudio.engine.metadata.invokeai2 import read_invokeai2
from sdstudio.engine.request import GenerationRequest

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
    text = "x\nSteps: 0, Sampler: Euler, CFG scale: 99, Seed: 99999999999999999999999, Size: 513x70"
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
    "a lighthouse at dusk, (waves:1.1) <lora:add_detail:0.8>",
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
    assert found.notes == ()
    assert found.request.strength == 0.75  # denoise 1.0: plain text-to-image
    assert found.request.vae == ""  # decoded with the checkpoint's own VAE


def test_comfyui_vae_loader_names_the_vae() -> None:
    loader = {"class_type": "VAELoader", "inputs": {"vae_name": "SDXL\\sdxl_vae.safetensors"}}
    decode = {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["20", 0]}}
    graph = comfy(n20=loader, n8=decode)
    assert read_comfyui({"prompt": json.dumps(graph)}).request.vae == "SDXL\\sdxl_vae.safetensors"
    other = {"class_type": "VAEDecode", "inputs": {"samples": ["99", 0], "vae": ["4", 2]}}
    graph = comfy(n20=loader, n8=decode, n21=other)  # the sampler's own decoder wins
    assert read_comfyui({"prompt": json.dumps(graph)}).request.vae == "SDXL\\sdxl_vae.safetensors"


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
                "noise_seed": 2**64 + 5,
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
    assert any(str(2**64 + 5) in note for note in parsed.notes)
    assert (request.sampler, request.schedule) == ("res_multistep", "Automatic")
    assert request.prompt == "a lighthouse at dusk, (waves:1.1) <lora:add_detail:0.8>"
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
        7623987412,
        1152,
        896,
    )
    assert found.request.model == "juggernautXL_v8Rundiffusion"
    assert not any("7623987412" in note for note in found.notes)


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
