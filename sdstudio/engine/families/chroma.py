"""Chroma (lodestones' Chroma1-HD, Chroma1-Base): Flux.1 schnell's transformer pruned
and retrained, with a T5 text encoder alone and Flux.1's VAE (16-channel latents packed
in 2x2 patches).

Its modulations come from a small network of its own (``distilled_guidance_layer``)
instead of a CLIP embedding and a guidance embedding, so it has no distilled guidance:
it is guided by real classifier-free guidance with the negative prompt, which diffusers'
Chroma pipelines take as ``guidance_scale``. The model card and ComfyUI's workflow use 26
to 40 steps and CFG 3 to 5.
"""

from __future__ import annotations

from typing import Any

from sdstudio.engine.families.base import ModelFamily, Prompting, SplitLayout, TextSlot
from sdstudio.engine.previews import flux_preview


def _with_guidance_flag(pipe: Any) -> Any:
    """The pipeline with ``guidance_embeds=False`` in its transformer's config: diffusers'
    ``ChromaInpaintPipeline`` (0.42) reads that value, which Chroma's config lacks."""
    transformer = getattr(pipe, "transformer", None)
    if transformer is not None and "guidance_embeds" not in transformer.config:
        transformer.register_to_config(guidance_embeds=False)
    return pipe


CHROMA = ModelFamily(
    "chroma",
    "Chroma",
    frozenset({"ChromaPipeline", "ChromaImg2ImgPipeline", "ChromaInpaintPipeline"}),
    native_size=1024,
    flow=True,
    prompting=Prompting.PLAIN,
    latent_masking=False,
    derived={"img2img": "ChromaImg2ImgPipeline", "inpaint": "ChromaInpaintPipeline"},
    size_multiple=16,
    default_steps=30,
    default_guidance=4.0,
    preview=flux_preview,
    split=SplitLayout(
        "ChromaPipeline",
        (
            TextSlot(
                "text_encoder",
                "t5",
                "T5EncoderModel",
                "tokenizer",
                width=lambda config: config.get("joint_attention_dim"),
            ),
        ),
        vae="kl16",
        configs={"": "chroma"},
        arguments={"image_encoder": None, "feature_extractor": None},
    ),
    prepare=_with_guidance_flag,
)
