"""Pipelines built on a loaded model's components keep each component's precision and
share the very same modules (diffusers' ``from_pipe`` would cast them all to float32)."""

from __future__ import annotations

from pathlib import Path

import torch

from sdstudio.engine.control.controlnets import control_pipeline
from sdstudio.engine.pipeline_sharing import share_pipeline
from sdstudio.testing.tiny_control import build_tiny_controlnet


def test_shared_pipelines_keep_each_components_precision(tiny_model: Path) -> None:
    import diffusers

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        tiny_model, torch_dtype=torch.bfloat16, local_files_only=True
    )
    pipe.vae.to(torch.float32)  # a model whose parts differ in precision
    controlnet = build_tiny_controlnet(tiny_model).to(torch.bfloat16)
    guided = control_pipeline(pipe, "txt2img", [controlnet])
    assert guided.unet is pipe.unet and guided.text_encoder is pipe.text_encoder
    assert pipe.unet.dtype == torch.bfloat16 and pipe.vae.dtype == torch.float32
    repaint = share_pipeline(diffusers.StableDiffusionImg2ImgPipeline, pipe)
    assert repaint.vae is pipe.vae and repaint.unet.dtype == torch.bfloat16
    assert repaint.config.requires_safety_checker == pipe.config.requires_safety_checker
