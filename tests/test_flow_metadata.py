"""Metadata of flow models: Forge's Module N and Distilled CFG Scale, ComfyUI's Flux graph
(UNETLoader, DualCLIPLoader, VAELoader, FluxGuidance, ModelSampling*)."""

from __future__ import annotations

import json

from sdstudio.engine.metadata.a1111 import format_parameters, read_parameters
from sdstudio.engine.metadata.comfyui import read_comfyui
from sdstudio.engine.request import GenerationRequest

FORGE = (
    "a red fox in snow\n"
    "Steps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3.5, "
    "Seed: 42, Size: 896x1152, Model hash: 9a1ef0f2ff, Model: flux1-dev-Q8_0, "
    "Module 1: ae, Module 2: clip_l, Module 3: t5xxl_fp16, Version: f2.0.1v1.10.1"
)


def _graph(**changes: object) -> dict[str, dict[str, object]]:
    graph: dict[str, dict[str, object]] = {
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["11", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": ["10", 0]}},
        "10": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "11": {
            "class_type": "DualCLIPLoader",
            "inputs": {
                "clip_name1": "t5xxl_fp16.safetensors",
                "clip_name2": "clip_l.safetensors",
                "type": "flux",
            },
        },
        "12": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"},
        },
        "13": {
            "class_type": "SamplerCustomAdvanced",
            "inputs": {
                "noise": ["25", 0],
                "guider": ["22", 0],
                "sampler": ["16", 0],
                "sigmas": ["17", 0],
                "latent_image": ["27", 0],
            },
        },
        "16": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "17": {
            "class_type": "BasicScheduler",
            "inputs": {"scheduler": "simple", "steps": 20, "denoise": 1, "model": ["30", 0]},
        },
        "22": {
            "class_type": "BasicGuider",
            "inputs": {"model": ["30", 0], "conditioning": ["26", 0]},
        },
        "25": {"class_type": "RandomNoise", "inputs": {"noise_seed": 123456}},
        "26": {"class_type": "FluxGuidance", "inputs": {"guidance": 2.5, "conditioning": ["6", 0]}},
        "27": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": 1024, "height": 768, "batch_size": 1},
        },
        "30": {
            "class_type": "ModelSamplingFlux",
            "inputs": {"max_shift": 1.15, "base_shift": 0.5, "model": ["12", 0]},
        },
    }
    for node_id, node in changes.items():
        graph[node_id] = node  # type: ignore[assignment]
    return graph


def test_forge_modules_and_distilled_cfg_are_read() -> None:
    parsed = read_parameters(FORGE)
    request = parsed.request
    assert request.model == "flux1-dev-Q8_0"
    assert request.text_encoders == ("ae", "clip_l", "t5xxl_fp16")
    assert request.distilled_guidance == 3.5
    assert request.guidance_scale == 1.0
    assert {"text_encoders", "distilled_guidance"} <= parsed.read
    assert not any(key.startswith("Module") for key in parsed.extras)


def test_modules_are_written_as_forge_writes_them() -> None:
    request = GenerationRequest("flux1-dev", "a fox", seed=1, text_encoders=("clip_l.safetensors",))
    text = format_parameters(
        request,
        model_name="flux1-dev",
        extra={"modules": ["ae", "clip_l", "t5xxl_fp16"], "distilled_guidance": True},
    )
    assert "Module 1: ae, Module 2: clip_l, Module 3: t5xxl_fp16" in text
    assert "Distilled CFG Scale: 3.5" in text
    assert read_parameters(text).request.text_encoders == ("ae", "clip_l", "t5xxl_fp16")


def test_modules_stop_at_the_first_gap() -> None:
    text = FORGE.replace("Module 2: clip_l", "Module 4: clip_l")
    assert read_parameters(text).request.text_encoders == ("ae",)


def test_comfyui_flux_graph_reads_parts_and_guidance() -> None:
    parsed = read_comfyui({"prompt": json.dumps(_graph())})
    request = parsed.request
    assert request.model == "flux1-dev"
    assert request.text_encoders == ("t5xxl_fp16.safetensors", "clip_l.safetensors")
    assert request.vae == "ae.safetensors"
    assert request.distilled_guidance == 2.5
    assert request.guidance_scale == 1.0  # BasicGuider: no classifier-free guidance
    assert (request.sampler, request.steps, request.seed) == ("Euler", 20, 123456)
    assert (request.width, request.height) == (1024, 768)
    assert "distilled_guidance" in parsed.read
    assert not parsed.extras  # the model sampling is Flux's own


def test_comfyui_checkpoint_graph_names_no_text_encoders() -> None:
    loader = {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "flux1-dev-fp8.safetensors"},
    }
    parsed = read_comfyui({"prompt": json.dumps(_graph(**{"12": loader}))})
    assert parsed.request.model == "flux1-dev-fp8"
    assert parsed.request.text_encoders == ()


def test_comfyui_triple_clip_and_shift_kept_as_extra() -> None:
    triple = {
        "class_type": "TripleCLIPLoader",
        "inputs": {
            "clip_name1": "clip_l.safetensors",
            "clip_name2": "clip_g.safetensors",
            "clip_name3": "t5xxl_fp8_e4m3fn.safetensors",
        },
    }
    sampling = {"class_type": "ModelSamplingSD3", "inputs": {"shift": 6.0, "model": ["12", 0]}}
    parsed = read_comfyui({"prompt": json.dumps(_graph(**{"11": triple, "30": sampling}))})
    assert parsed.request.text_encoders == (
        "clip_l.safetensors",
        "clip_g.safetensors",
        "t5xxl_fp8_e4m3fn.safetensors",
    )
    assert parsed.extras == {"ModelSamplingSD3 shift": "6.0"}
    assert any("ModelSamplingSD3 shift" in note for note in parsed.notes)
