"""Z-Image (Turbo, Base): a single-stream flow-matching transformer with a Qwen3 text
encoder and Flux.1's VAE (16-channel latents, not packed)."""

from __future__ import annotations

from sdstudio.engine.families.base import ModelFamily, Prompting, SplitLayout, TextSlot
from sdstudio.engine.previews import flux_preview

ZIMAGE = ModelFamily(
    "zimage",
    "Z-Image",
    frozenset({"ZImagePipeline", "ZImageImg2ImgPipeline", "ZImageInpaintPipeline"}),
    native_size=1024,
    flow=True,
    prompting=Prompting.PLAIN,
    latent_masking=False,
    size_multiple=16,
    default_steps=28,
    default_guidance=4.0,
    few_steps=9,
    few_guidance=0.0,
    preview=flux_preview,
    split=SplitLayout(
        "ZImagePipeline",
        (
            TextSlot(
                "text_encoder",
                "qwen3",
                "Qwen3Model",
                "tokenizer",
                width=lambda config: config.get("cap_feat_dim"),
            ),
        ),
        vae="kl16",
        configs={"": "zimage"},
    ),
)
