"""Flux.1 (dev, schnell, Krea, Fill): flow-matching transformers with CLIP-L and T5
text encoders, 16-channel latents packed in 2x2 patches.

Flux.1 dev takes its guidance as an embedding (Forge's "Distilled CFG Scale",
3.5 by default); real classifier-free guidance (CFG above 1, with the negative
prompt) comes on top and doubles the work of each step.

Flux.1 Fill is dev's inpainting model: its transformer takes the masked image and the
mask beside the latents (384 input values a patch instead of 64) and runs in
``FluxFillPipeline``, which has no negative prompt and no real CFG; its distilled
guidance is about 30. Like a 9-channel SD inpainting model it takes every job as
inpainting: text to image repaints a fully masked canvas (the model was trained with
masks up to the whole picture, so this gives an image from the prompt alone), and image
to image repaints the whole source at the request's strength.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sdstudio.engine.families.base import ModelFamily, Prompting, SplitLayout, TextSlot
from sdstudio.engine.previews import flux_preview

FILL_CHANNELS = 384
"""The input values of a Flux.1 Fill transformer's patch: 64 of latents, 64 of the
masked image's latents, 256 of the mask (8 x 8 pixels a latent, 2 x 2 latents a patch)."""
FILL_PIPELINE = "FluxFillPipeline"


def is_fill(config: Any) -> bool:
    """Whether a Flux.1 transformer's config is Flux.1 Fill's (by its input width)."""
    return getattr(config, "in_channels", None) == FILL_CHANNELS


def _with_fill_pipeline(pipe: Any) -> Any:
    """Flux.1 Fill's own pipeline, sharing every component, for a pipeline that holds a
    Fill transformer (a transformer file is assembled as ``FluxPipeline``)."""
    transformer = getattr(pipe, "transformer", None)
    if transformer is None or not is_fill(transformer.config):
        return pipe
    import diffusers

    from sdstudio.engine.pipeline_sharing import share_pipeline

    return share_pipeline(getattr(diffusers, FILL_PIPELINE), pipe)


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
    prepare=_with_fill_pipeline,
)

FLUX1_FILL = dataclasses.replace(
    FLUX1,
    label="Flux.1 Fill",
    pipelines=frozenset({FILL_PIPELINE}),
    negative_prompt=False,
    own_inpainting=True,
    prepare=None,
)
"""A loaded Flux.1 Fill model: the Flux.1 family (same id, files and settings) run
through its own inpainting pipeline."""
