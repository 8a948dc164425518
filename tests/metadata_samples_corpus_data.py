"""The texts and JSON that popular tools write into images, for the metadata corpus.

Each is made from the tool's public format description; the expected values a
reader should find sit beside them where several samples share them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import metadata_samples_comfyui as comfy
from metadata_samples import A1111_TEXT, write_exif
from metadata_samples_more import NOVELAI_COMMENT, NOVELAI_SOURCE, SWARM_PARAMS

A1111 = {
    "prompt": "masterpiece, (a red boat:1.2) on a lake, <lora:add_detail:0.8>",
    "negative": "blurry, lowres",
    "seed": 1234567890,
    "steps": 28,
    "cfg": 6.5,
    "sampler": "DPM++ 2M",
    "schedule": "Karras",
    "size": (512, 768),
    "model": "v1-5-pruned-emaonly",
    "model_hash": "6ce0161689",
}

A1111_HIRES = (
    "a lighthouse at dusk, dramatic sky\n"
    "Negative prompt: text, watermark\n"
    "Steps: 30, Sampler: DPM++ 2M SDE, Schedule type: Exponential, CFG scale: 5, "
    "Seed: 987654321, Size: 832x1216, Model hash: 31e35c80fc, Model: sd_xl_base_1.0, "
    "Denoising strength: 0.35, Clip skip: 2, Hires upscale: 1.5, Hires steps: 12, "
    'Hires upscaler: 4x-UltraSharp, Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.10.1'
)
HIRES_EXPECTED = {
    "prompt": "a lighthouse at dusk, dramatic sky",
    "negative": "text, watermark",
    "seed": 987654321,
    "steps": 30,
    "cfg": 5.0,
    "sampler": "DPM++ 2M SDE",
    "schedule": "Exponential",
    "size": (832, 1216),
    "model": "sd_xl_base_1.0",
    "model_hash": "31e35c80fc",
    # The hires fix is read into the request; what stays beside it:
    "extras": ("Lora hashes",),
}

FORGE_TEXT = (
    "a cat astronaut floating in space\n"
    "Steps: 20, Sampler: Euler, Schedule type: Beta, CFG scale: 1, Distilled CFG Scale: 3.5, "
    "Seed: 2024, Size: 896x1152, Model hash: bea01d51bd, Model: flux1-dev-bnb-nf4-v2, "
    "Denoising strength: 0.4, Hires Module 1: Use same choices, Hires CFG Scale: 1, "
    "Hires upscale: 2, Hires steps: 10, Hires upscaler: R-ESRGAN 4x+, "
    "Version: f2.0.1v1.10.1-previous-635-gf5330788"
)

SDNEXT_TEXT = (
    "portrait of an old sailor, film grain\n"
    "Negative prompt: cartoon\n"
    "Steps: 25, Seed: 31337, Sampler: DPM++ 2M, CFG scale: 6, Size: 1024x1024, "
    "Parser: Full parser, Model: sd_xl_base_1.0, Model hash: 31e35c80fc, Backend: Diffusers, "
    "App: SD.next, Version: 8b29d7a, Operations: txt2img, Pipeline: StableDiffusionXLPipeline"
)

INVOKE3 = {
    "generation_mode": "txt2img",
    "positive_prompt": "a cozy cabin in the snow",
    "negative_prompt": "people",
    "width": 768,
    "height": 512,
    "seed": 4242,
    "rand_device": "cpu",
    "cfg_scale": 7.5,
    "cfg_rescale_multiplier": 0,
    "steps": 30,
    "scheduler": "dpmpp_2m_k",
    "model": {"model_name": "stable-diffusion-v1-5", "base_model": "sd-1", "model_type": "main"},
    "loras": [],
    "app_version": "3.6.2",
}

INVOKE2 = {
    "model": "stable diffusion",
    "model_weights": "stable-diffusion-1.5",
    "model_hash": "cc6cb27103417325ff94f52b7a5d2dde45a7515b25c255d8e396c90014281516",
    "app_id": "invoke-ai/InvokeAI",
    "app_version": "2.2.5",
    "image": {
        "prompt": [{"prompt": "a tabby cat [blurry, lowres]", "weight": 1.0}],
        "steps": 50,
        "cfg_scale": 7.5,
        "threshold": 0,
        "perlin": 0,
        "height": 512,
        "width": 512,
        "seed": 1234,
        "seamless": False,
        "hires_fix": False,
        "type": "txt2img",
        "postprocessing": None,
        "sampler": "k_lms",
        "variations": [],
    },
}
DREAM = '"a tabby cat [blurry, lowres]" -s 50 -S 1234 -W 512 -H 512 -C 7.5 -A k_lms'
INVOKE2_EXPECTED: dict[str, Any] = {
    "prompt": "a tabby cat",
    "negative": "blurry, lowres",
    "seed": 1234,
    "steps": 50,
    "cfg": 7.5,
    "sampler": "LMS",
    "schedule": "Automatic",
    "size": (512, 512),
}

COMFY_STOCK: dict[str, Any] = {
    "prompt": "a castle on a hill",
    "negative": "blurry",
    "seed": 156680208700286,
    "steps": 20,
    "cfg": 8.0,
    "sampler": "Euler",
    "schedule": "Automatic",
    "size": (512, 768),
    "model": "v1-5-pruned-emaonly",
}


LORA_PROMPT = "a castle on a hill <lora:add_detail:0.8> <lora:film:0.8>"


def lora_chain() -> comfy.Graph:
    lora = {"strength_model": 0.8, "strength_clip": 0.8}
    graph = comfy.txt2img(
        n10=comfy.node(
            "LoraLoader", lora_name="add_detail.safetensors", model=["4", 0], clip=["4", 1], **lora
        ),
        n11=comfy.node(
            "LoraLoader", lora_name="film.safetensors", model=["10", 0], clip=["10", 1], **lora
        ),
    )
    graph["3"]["inputs"]["model"] = ["11", 0]
    graph["6"]["inputs"]["clip"] = ["11", 1]
    graph["7"]["inputs"]["clip"] = ["11", 1]
    return graph


def workflow() -> dict[str, Any]:
    """ComfyUI's default graph as the editor saves it (``workflow`` only)."""

    def editor_node(node_id: int, kind: str, widgets: list[Any], inputs: list[Any]) -> dict:
        named = [{"name": name, "type": kind_, "link": link} for name, kind_, link in inputs]
        return {"id": node_id, "type": kind, "inputs": named, "widgets_values": widgets}

    nodes = [
        editor_node(4, "CheckpointLoaderSimple", ["v1-5-pruned-emaonly.safetensors"], []),
        editor_node(5, "EmptyLatentImage", [512, 768, 1], []),
        editor_node(6, "CLIPTextEncode", ["a castle on a hill"], [("clip", "CLIP", 3)]),
        editor_node(7, "CLIPTextEncode", ["blurry"], [("clip", "CLIP", 5)]),
        editor_node(
            3,
            "KSampler",
            [156680208700286, "randomize", 20, 8, "euler", "normal", 1],
            [
                ("model", "MODEL", 1),
                ("positive", "CONDITIONING", 4),
                ("negative", "CONDITIONING", 6),
                ("latent_image", "LATENT", 2),
            ],
        ),
        editor_node(8, "VAEDecode", [], [("samples", "LATENT", 7), ("vae", "VAE", 8)]),
        editor_node(9, "SaveImage", ["ComfyUI"], [("images", "IMAGE", 9)]),
    ]
    links = [
        [1, 4, 0, 3, 0, "MODEL"],
        [2, 5, 0, 3, 3, "LATENT"],
        [3, 4, 1, 6, 0, "CLIP"],
        [4, 6, 0, 3, 1, "CONDITIONING"],
        [5, 4, 1, 7, 0, "CLIP"],
        [6, 7, 0, 3, 2, "CONDITIONING"],
        [7, 3, 0, 8, 0, "LATENT"],
        [8, 4, 2, 8, 1, "VAE"],
        [9, 8, 0, 9, 0, "IMAGE"],
    ]
    return {"last_node_id": 9, "last_link_id": 9, "nodes": nodes, "links": links, "version": 0.4}


def comfy_webp(stem: Path) -> Path:
    ifd0 = {
        0x010E: "Prompt: " + json.dumps(comfy.txt2img()),
        0x010F: "Workflow: " + json.dumps(workflow()),
    }
    return write_exif(stem.with_suffix(".webp"), {}, ifd0)


FOOOCUS_JSON = {
    "adm_guidance": "(1.5, 0.8, 0.3)",
    "base_model": "juggernautXL_v8Rundiffusion.safetensors",
    "base_model_hash": "aeb7e9e689",
    "full_negative_prompt": ["unrealistic, saturated"],
    "full_prompt": ["a red sports car on a coastal road, cinematic"],
    "guidance_scale": 4.0,
    "loras": [],
    "metadata_scheme": "fooocus",
    "negative_prompt": "",
    "performance": "Speed",
    "prompt": "a red sports car on a coastal road",
    "refiner_model": "None",
    "resolution": "(1152, 896)",
    "sampler": "dpmpp_2m_sde_gpu",
    "scheduler": "karras",
    "seed": "6158429710350385742",
    "sharpness": 2.0,
    "steps": 30,
    "styles": "['Fooocus V2', 'Fooocus Enhance']",
    "version": "Fooocus v2.5.5",
}
FOOOCUS_A1111 = (
    "a red sports car on a coastal road, cinematic\n"
    "Negative prompt: unrealistic, saturated\n"
    "Steps: 30, Sampler: DPM++ 2M SDE Karras, Seed: 6158429710350385742, Size: 1152x896, "
    "CFG scale: 4, Model hash: aeb7e9e689, Model: juggernautXL_v8Rundiffusion, Sharpness: 2, "
    'ADM Guidance: "(1.5, 0.8, 0.3)", Performance: Speed, Refiner Switch: 0.8, '
    "Version: Fooocus v2.5.5"
)
FOOOCUS_EXPECTED: dict[str, Any] = {
    "prompt": "a red sports car on a coastal road, cinematic",
    "negative": "unrealistic, saturated",
    "seed": 6158429710350385742,
    "steps": 30,
    "cfg": 4.0,
    "sampler": "DPM++ 2M SDE",
    "schedule": "Karras",
    "size": (1152, 896),
    "model": "juggernautXL_v8Rundiffusion",
    "model_hash": "aeb7e9e689",
}

RUINED = {
    "Prompt": "a knight in a misty forest",
    "Negative": "blurry",
    "steps": 24,
    "cfg": 7.0,
    "width": 1024,
    "height": 1024,
    "seed": 77,
    "sampler_name": "dpmpp_2m",
    "scheduler": "karras",
    "base_model_name": "sd_xl_base_1.0.safetensors",
    "base_model_hash": "31e35c80fc",
    "loras": [],
    "start_step": 0,
    "denoise": None,
    "clip_skip": 1,
    "software": "RuinedFooocus",
}

NOVELAI_BASE: dict[str, Any] = {
    "prompt": NOVELAI_COMMENT["prompt"],
    "negative": NOVELAI_COMMENT["uc"],
    "seed": NOVELAI_COMMENT["seed"],
    "steps": 28,
    "cfg": 5.5,
    "sampler": "DPM++ 2M",
    "schedule": "Karras",
    "size": (832, 1216),
    "model": NOVELAI_SOURCE,
}
NOVELAI_V4 = {
    **NOVELAI_COMMENT,
    "prompt": "2girls, library, warm light",
    "uc": "lowres",
    "v4_prompt": {
        "caption": {
            "base_caption": "2girls, library, warm light",
            "char_captions": [
                {"char_caption": "girl, red hair", "centers": [{"x": 0.3, "y": 0.5}]},
                {"char_caption": "girl, glasses", "centers": [{"x": 0.7, "y": 0.5}]},
            ],
        },
        "use_coords": True,
        "use_order": True,
    },
    "v4_negative_prompt": {"caption": {"base_caption": "lowres", "char_captions": []}},
}

SWARM = json.dumps(
    {
        "sui_image_params": SWARM_PARAMS,
        "sui_models": [
            {
                "name": "sd_xl_base_1.0.safetensors",
                "param": "model",
                "hash": "0x31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b",
            }
        ],
    }
)
SWARM_EXPECTED: dict[str, Any] = {
    "prompt": SWARM_PARAMS["prompt"],
    "negative": "blurry",
    "seed": 42424242,
    "steps": 35,
    "cfg": 6.0,
    "sampler": "DPM++ 2M SDE",
    "schedule": "Karras",
    "size": (1152, 896),
    "model": "sd_xl_base_1.0",
    "model_hash": "31e35c80fc",
}

STABILITY_MATRIX = {
    "parameters": A1111_TEXT,
    "parameters-json": json.dumps(
        {
            "PositivePrompt": A1111["prompt"],
            "NegativePrompt": A1111["negative"],
            "Steps": 28,
            "Sampler": "DPM++ 2M",
            "Scheduler": "Karras",
            "CfgScale": 6.5,
            "Seed": 1234567890,
            "Width": 512,
            "Height": 768,
            "ModelHash": "6ce0161689",
            "ModelName": "v1-5-pruned-emaonly",
        }
    ),
    "smproj": json.dumps({"Version": 1, "ProjectType": "Inference"}),
}

TENSORART_GRAPH = comfy.txt2img(
    n4=comfy.node("ECHOCheckpointLoaderSimple", ckpt_name="EMS-229370-EMS.safetensors")
)
TENSORART = {
    "generation_data": json.dumps(
        {
            "prompt": "a castle on a hill",
            "negativePrompt": "blurry",
            "width": 512,
            "height": 768,
            "seed": "156680208700286",
            "steps": 20,
            "cfgScale": 8,
            "clipSkip": 2,
            "baseModel": {"modelFileName": "dreamshaper_8", "hash": "879db523c3"},
        }
    ),
    "prompt": json.dumps(TENSORART_GRAPH),
}

CIVITAI_TEXT = A1111_TEXT.replace(
    ", Version: v1.10.1",
    ', Civitai resources: [{"type":"checkpoint","modelVersionId":128713}], Civitai metadata: {}',
)

WEB_DEMO = {
    "prompt": "an astronaut riding a horse",
    "negative_prompt": "low quality",
    "seed": 12345,
    "num_inference_steps": 25,
    "guidance_scale": 7.5,
    "width": 1024,
    "height": 768,
    "model": "stabilityai/stable-diffusion-xl-base-1.0",
    "scheduler": "EulerDiscreteScheduler",
}

BIG_SEED = A1111_TEXT.replace("Seed: 1234567890", "Seed: 18446744073709551615")
JAPANESE = A1111_TEXT.replace(
    "masterpiece, (a red boat:1.2) on a lake, <lora:add_detail:0.8>", "桜の木の下の猫、夕焼け"
)
