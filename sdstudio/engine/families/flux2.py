"""Flux.2 Klein (4B, 9B): a flow-matching transformer with a Qwen3 text encoder and a
32-channel VAE, latents packed in 2x2 patches (128 values per patch).

Its own pipeline takes images as references to edit from, not as an image-to-image
start with a strength, so it offers text to image and inpainting. The distilled
versions take 4 steps without guidance; it takes no negative prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sdstudio.engine.families.base import ModelFamily, Prompting, SplitLayout, TextSlot
from sdstudio.engine.previews import flux2_preview

OUT_LAYERS = 3
"""The pipeline gives the transformer three of the text encoder's hidden layers, stacked."""


def _qwen_width(config: Mapping[str, Any]) -> int | None:
    """The Qwen3 width a Klein transformer takes: its text width over the stacked layers."""
    width = config.get("joint_attention_dim")
    return width // OUT_LAYERS if isinstance(width, int) else None


def _named_arguments(stem: str) -> dict[str, Any]:
    """Klein's base (undistilled) models apply CFG; their files are named "...base...",
    as Black Forest Labs publishes them."""
    return {"is_distilled": "base" not in stem.lower()}


FLUX2_KLEIN = ModelFamily(
    "flux2-klein",
    "Flux.2 Klein",
    frozenset({"Flux2KleinPipeline", "Flux2KleinInpaintPipeline"}),
    native_size=1024,
    flow=True,
    prompting=Prompting.PLAIN,
    latent_masking=False,
    img2img=False,
    negative_prompt=False,
    derived={"inpaint": "Flux2KleinInpaintPipeline"},
    size_multiple=16,
    default_steps=4,
    default_guidance=1.0,
    few_steps=4,
    few_guidance=1.0,
    preview=flux2_preview,
    split=SplitLayout(
        "Flux2KleinPipeline",
        (
            TextSlot(
                "text_encoder",
                "qwen3",
                "Qwen3ForCausalLM",
                "tokenizer",
                width=_qwen_width,
            ),
        ),
        vae="flux2",
        configs={"": "flux2-klein"},
        named_arguments=_named_arguments,
    ),
)
