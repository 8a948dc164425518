"""Stable Diffusion 3 and 3.5 (Medium, Large, Large Turbo): a flow-matching MMDiT with
two CLIP text encoders and T5, 16-channel latents."""

from __future__ import annotations

from sdstudio.engine.families.base import ModelFamily, Prompting
from sdstudio.engine.previews import sd3_preview

SD3 = ModelFamily(
    "sd3",
    "SD 3.x",
    frozenset(
        {
            "StableDiffusion3Pipeline",
            "StableDiffusion3Img2ImgPipeline",
            "StableDiffusion3InpaintPipeline",
        }
    ),
    native_size=1024,
    flow=True,
    prompting=Prompting.PLAIN,
    latent_masking=False,
    size_multiple=16,
    default_steps=28,
    default_guidance=4.5,
    preview=sd3_preview,
)
