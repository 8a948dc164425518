"""Writing NovelAI, SwarmUI and hidden-in-the-pixels samples for the metadata tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

NOVELAI_COMMENT: dict[str, Any] = {
    "prompt": "1girl, cherry blossoms, {{best quality}}",
    "steps": 28,
    "height": 1216,
    "width": 832,
    "scale": 5.5,
    "uncond_scale": 1.0,
    "cfg_rescale": 0.0,
    "seed": 3141592653,
    "n_samples": 1,
    "noise_schedule": "karras",
    "sampler": "k_dpmpp_2m",
    "sm": False,
    "sm_dyn": False,
    "uc": "lowres, bad anatomy",
    "request_type": "PromptGenerateRequest",
}
NOVELAI_SOURCE = "Stable Diffusion XL C1E1DE52"
NOVELAI_EXPECTED = (
    "1girl, cherry blossoms, {{best quality}}",
    "lowres, bad anatomy",
    28,
    "DPM++ 2M",
    "Karras",
    5.5,
    3141592653,
    832,
    1216,
)

SWARM_PARAMS: dict[str, Any] = {
    "prompt": "a castle on a hill, golden hour",
    "negativeprompt": "blurry",
    "model": "OfficialStableDiffusion/sd_xl_base_1.0.safetensors",
    "seed": 42424242,
    "steps": 35,
    "cfgscale": 6.0,
    "aspectratio": "Custom",
    "width": 1152,
    "height": 896,
    "sampler": "dpmpp_2m_sde_gpu",
    "scheduler": "karras",
    "swarm_version": "0.9.5.0",
}
SWARM_EXPECTED = (
    "a castle on a hill, golden hour",
    "blurry",
    35,
    "DPM++ 2M SDE",
    "Karras",
    6.0,
    42424242,
    1152,
    896,
)

SMALL_GRAPH: dict[str, Any] = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 5,
            "steps": 12,
            "cfg": 4.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "dreamshaper_8.ckpt"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 640}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
}


def novelai_texts(comment: dict[str, Any] | None = None, **extra: str) -> dict[str, str]:
    """NovelAI's texts, as its PNG chunks hold them."""
    comment = NOVELAI_COMMENT if comment is None else comment
    texts = {
        "Title": "NovelAI generated image",
        "Description": str(comment.get("prompt", "")),
        "Software": "NovelAI",
        "Source": NOVELAI_SOURCE,
        "Generation time": "4.2",
        "Comment": json.dumps(comment),
    }
    texts.update(extra)
    return texts


def write_text_png(path: Path, texts: dict[str, str], mode: str = "RGB") -> Path:
    """A PNG whose texts are written as Pillow writes them (Latin-1 tEXt or UTF-8 iTXt)."""
    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    Image.new(mode, (64, 96)).save(path, pnginfo=info)
    return path


def write_raw_text_png(path: Path, key: str, data: bytes) -> Path:
    """A PNG with one ``tEXt`` chunk holding ``data`` as it is (UTF-8 written by other tools)."""
    info = PngInfo()
    info.add(b"tEXt", key.encode("latin-1") + b"\0" + data)
    Image.new("RGB", (64, 96)).save(path, pnginfo=info)
    return path


def write_user_comment(path: Path, text: str, ifd0: dict[int, Any] | None = None) -> Path:
    """A JPEG or WebP (by suffix) with ``text`` as its Unicode EXIF UserComment."""
    exif = Image.Exif()
    for tag, value in (ifd0 or {}).items():
        exif[tag] = value
    if text:
        exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode("utf-16-be")
    Image.new("RGB", (64, 96)).save(path, exif=exif)
    return path


def hidden_bits(signature: bytes, payload: bytes, length: int | None = None) -> list[int]:
    """The bits of a stealth block: signature, 32-bit length in bits, payload."""
    length = len(payload) * 8 if length is None else length
    data = signature + length.to_bytes(4, "big") + payload
    return [(byte >> (7 - bit)) & 1 for byte in data for bit in range(8)]


def write_stealth_png(
    path: Path,
    text: str,
    *,
    compressed: bool = False,
    size: tuple[int, int] = (64, 96),
    rgb: bool = False,
    length: int | None = None,
) -> Path:
    """A PNG hiding ``text`` in the low bits, read column by column, as A1111's extension does."""
    payload = text.encode("utf-8")
    if compressed:
        payload = gzip.compress(payload)
    kind = "rgb" if rgb else "png"
    signature = f"stealth_{kind}{'comp' if compressed else 'info'}".encode()
    bits = hidden_bits(signature, payload, length)
    width, height = size
    per_pixel = 3 if rgb else 1
    # Column-major values: a transposed image's rows are the original's columns.
    values = bytearray(b"\xff" * (width * height * per_pixel))
    for index, bit in enumerate(bits):
        values[index] = 0xFE | bit
    columns = Image.frombytes("RGB" if rgb else "L", (height, width), bytes(values))
    plane = columns.transpose(Image.Transpose.TRANSPOSE)
    if rgb:
        plane.convert("RGBA").save(path)  # opaque: the alpha bits hold no signature
    else:
        image = Image.new("RGBA", size, (40, 80, 120, 255))
        image.putalpha(plane)
        image.save(path)
    return path


# Stability Matrix's GenerationParameters as its Inference tab serialises them.
STABILITY_MATRIX_JSON: dict[str, Any] = {
    "PositivePrompt": "(cat:1.2), by artist, detailed, [shaded]",
    "NegativePrompt": "blurry, jpg artifacts",
    "Steps": 30,
    "Sampler": "DPM++ 2M Karras",
    "CfgScale": 7.5,
    "Seed": 124825529,
    "Height": 896,
    "Width": 640,
    "ModelHash": "b899d188a1ac7356bfb9399b2277d5b21712aa360f8f9514fba6fcce021baff7",
    "ModelName": "ExampleMix7.safetensors",
    "FrameCount": 0,
    "MotionBucketId": 0,
    "VideoQuality": 0,
    "Lossless": False,
    "Fps": 0,
    "OutputFps": 0.0,
    "MinCfg": 0.0,
    "AugmentationLevel": 0.0,
    "VideoOutputMethod": None,
    "ModelVersionId": None,
    "ExtraNetworkModelVersionIds": None,
}
STABILITY_MATRIX_EXPECTED = (
    "(cat:1.2), by artist, detailed, [shaded]",
    "blurry, jpg artifacts",
    30,
    "DPM++ 2M",
    "Karras",
    7.5,
    124825529,
    640,
    896,
)
# The A1111 text written next to it, made different here to tell which one was read.
STABILITY_MATRIX_A1111 = (
    "a different prompt\nSteps: 12, Sampler: Euler, CFG scale: 3, Seed: 1, Size: 512x512"
)
STABILITY_MATRIX_PROJECT = json.dumps({"Version": 2, "ProjectType": "Inference", "State": {}})

TENSORART_DATA: dict[str, Any] = {
    "prompt": "splatter style painting of a man, starry sky <lora:EMS-274416-EMS:1.1>",
    "negativePrompt": "lowres",
    "steps": 25,
    "cfgScale": 6.5,
    "seed": 2405514972,
    "width": 768,
    "height": 1152,
    "sampler": "DPM++ 2M Karras",
    "clipSkip": 2,
    "baseModel": {
        "modelId": "681308059685024766",
        "modelFileName": "juggernautXL_v9.safetensors",
        "hash": "C9E3E68F89",
    },
}
TENSORART_EXPECTED = (
    "splatter style painting of a man, starry sky <lora:EMS-274416-EMS:1.1>",
    "lowres",
    25,
    "DPM++ 2M",
    "Karras",
    6.5,
    2405514972,
    768,
    1152,
)

WEBDEMO_SETTINGS: dict[str, Any] = {
    "prompt": "1girl, souryuu asuka langley, plugsuit, masterpiece",
    "negative_prompt": "nsfw, lowres, bad anatomy",
    "resolution": "896 x 1152",
    "guidance_scale": 7,
    "num_inference_steps": 28,
    "seed": 1418574683,
    "sampler": "Euler a",
    "model": "cagliostrolab/animagine-xl-3.1",
}
WEBDEMO_EXPECTED = (
    "1girl, souryuu asuka langley, plugsuit, masterpiece",
    "nsfw, lowres, bad anatomy",
    28,
    "Euler a",
    "Automatic",
    7.0,
    1418574683,
    896,
    1152,
)
# Fooocus's own JSON (scheme "fooocus"), with a prompt and guidance_scale too.
FOOOCUS_JSON: dict[str, Any] = {
    "prompt": "a cabin in the woods",
    "negative_prompt": "",
    "resolution": "(1152, 896)",
    "guidance_scale": 4,
    "sharpness": 2,
    "performance": "Speed",
    "steps": 30,
    "sampler": "dpmpp_2m_sde_gpu",
    "scheduler": "karras",
    "seed": "7",
    "base_model": "juggernautXL_v8Rundiffusion.safetensors",
    "version": "Fooocus v2.5.5",
}
