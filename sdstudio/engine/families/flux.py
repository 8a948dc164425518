"""Flux.1 (dev, schnell, Krea) and Chroma: flow-matching transformers with a T5 text
encoder (and CLIP-L for Flux), 16-channel latents packed in 2x2 patches.

Flux.1 dev takes its guidance as an embedding (Forge's "Distilled CFG Scale",
3.5 by default); real classifier-free guidance (CFG above 1, with the negative
prompt) comes on top and doubles the work of each step.
"""

from __future__ import annotations

from sdstudio.engine.families.base import ModelFamily, Prompting
from sdstudio.engine.previews import flux_preview

FLUX1 = ModelFamily(
    "flux1",
    "Flux.1",
    frozenset({"FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline"}),
    native_size=1024,
    flow=True,
    prompting=Prompting.PLAIN,
    distilled_guidance=True,
    true_cfg=True,
    latent_masking=False,
    size_multiple=16,
    default_steps=20,
    default_guidance=1.0,
    preview=flux_preview,
)
