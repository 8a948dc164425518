"""Flux.1 (dev, schnell, Krea) and Chroma: flow-matching transformers with a T5 text
encoder (and CLIP-L for Flux), 16-channel latents packed in 2x2 patches.

Flux.1 dev takes its guidance as an embedding (Forge's "Distilled CFG Scale",
3.5 by default); real classifier-free guidance (CFG above 1, with the negative
prompt) comes on top and doubles the work of each step.
"""

from __future__ import annotations

from sdstudio.engine.families.base import ModelFamily, Prompting, SplitLayout, TextSlot
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
    split=SplitLayout(
        "FluxPipeline",
        (
            TextSlot(
                "text_encoder",
                "clip",
                "CLIPTextModel",
                "tokenizer",
                width=lambda config: config.get("pooled_projection_dim"),
            ),
            TextSlot(
                "text_encoder_2",
                "t5",
                "T5EncoderModel",
                "tokenizer_2",
                width=lambda config: config.get("joint_attention_dim"),
            ),
        ),
        vae="kl16",
        configs={"": "flux1-dev", "dev": "flux1-dev", "schnell": "flux1-schnell"},
        arguments={"image_encoder": None, "feature_extractor": None},
    ),
)
