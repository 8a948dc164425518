"""ComfyUI graphs built in code, as ComfyUI writes them into the ``prompt`` chunk."""

from __future__ import annotations

from typing import Any

Graph = dict[str, dict[str, Any]]


def node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def txt2img(**changes: dict[str, Any]) -> Graph:
    """ComfyUI's default text-to-image graph; ``changes`` replace or add nodes (``n7=...``)."""
    graph: Graph = {
        "3": node(
            "KSampler",
            seed=156680208700286,
            steps=20,
            cfg=8.0,
            sampler_name="euler",
            scheduler="normal",
            denoise=1.0,
            model=["4", 0],
            positive=["6", 0],
            negative=["7", 0],
            latent_image=["5", 0],
        ),
        "4": node("CheckpointLoaderSimple", ckpt_name="v1-5-pruned-emaonly.safetensors"),
        "5": node("EmptyLatentImage", width=512, height=768, batch_size=1),
        "6": node("CLIPTextEncode", text="a castle on a hill", clip=["4", 1]),
        "7": node("CLIPTextEncode", text="blurry", clip=["4", 1]),
        "8": node("VAEDecode", samples=["3", 0], vae=["4", 2]),
        "9": node("SaveImage", filename_prefix="ComfyUI", images=["8", 0]),
    }
    for node_id, changed in changes.items():
        graph[node_id.removeprefix("n")] = changed
    return graph


def sdxl() -> Graph:
    """SDXL with ``CLIPTextEncodeSDXL`` prompts and an ``EmptySD3LatentImage``-like size."""
    encode = {"width": 4096, "height": 4096, "crop_w": 0, "crop_h": 0, "clip": ["4", 1]}
    return txt2img(
        n4=node("CheckpointLoaderSimple", ckpt_name="sd_xl_base_1.0.safetensors"),
        n5=node("EmptyLatentImage", width=1024, height=1024, batch_size=1),
        n6=node("CLIPTextEncodeSDXL", text_g="a fox", text_l="a fox", **encode),
        n7=node("CLIPTextEncodeSDXL", text_g="ugly", text_l="ugly", **encode),
    )


def custom_advanced() -> Graph:
    """A ``SamplerCustomAdvanced`` graph (Flux and SD3 templates use this shape)."""
    return {
        "10": node(
            "SamplerCustomAdvanced",
            noise=["11", 0],
            guider=["12", 0],
            sampler=["13", 0],
            sigmas=["14", 0],
            latent_image=["15", 0],
        ),
        "11": node("RandomNoise", noise_seed=42),
        "12": node("CFGGuider", cfg=4.5, model=["16", 0], positive=["17", 0], negative=["18", 0]),
        "13": node("KSamplerSelect", sampler_name="dpmpp_2m"),
        "14": node("BasicScheduler", scheduler="karras", steps=28, denoise=1.0, model=["16", 0]),
        "15": node("EmptySD3LatentImage", width=1152, height=896, batch_size=1),
        "16": node("CheckpointLoaderSimple", ckpt_name="sd3.5_medium.safetensors"),
        "17": node("CLIPTextEncode", text="a red kite", clip=["16", 1]),
        "18": node("CLIPTextEncode", text="", clip=["16", 1]),
    }


def two_pass(upscale: str = "latent") -> Graph:
    """A base pass at 512x768, then a hires pass (12 steps, denoise 0.5) on its upscaled output.

    ``upscale``: ``"latent"`` (LatentUpscaleBy 1.5), ``"size"`` (LatentUpscale to
    768x1152) or ``"model"`` (VAEDecode, an upscale model, ImageScaleBy, VAEEncode).
    """
    hires = {**txt2img()["3"]["inputs"], "steps": 12, "denoise": 0.5, "latent_image": ["20", 0]}
    if upscale == "latent":
        nodes = {
            "n20": node(
                "LatentUpscaleBy", upscale_method="nearest-exact", samples=["3", 0], scale_by=1.5
            )
        }
    elif upscale == "size":
        nodes = {
            "n20": node(
                "LatentUpscale",
                upscale_method="bilinear",
                width=768,
                height=1152,
                crop="disabled",
                samples=["3", 0],
            )
        }
    else:
        nodes = {
            "n20": node("VAEEncode", pixels=["23", 0], vae=["4", 2]),
            "n21": node("UpscaleModelLoader", model_name="4x-UltraSharp.pth"),
            "n22": node("ImageUpscaleWithModel", upscale_model=["21", 0], image=["8", 0]),
            "n23": node("ImageScaleBy", upscale_method="lanczos", scale_by=0.375, image=["22", 0]),
        }
    # The hires sampler has the lower id, so id order alone would pick it.
    return txt2img(n2=node("KSampler", **hires), **nodes)
