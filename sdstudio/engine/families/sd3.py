"""Stable Diffusion 3 and 3.5 (Medium, Large, Large Turbo): a flow-matching MMDiT with
two CLIP text encoders and T5, 16-channel latents."""

from __future__ import annotations

from sdstudio.engine.families.base import ModelFamily, Prompting, SplitLayout, TextSlot
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
    split=SplitLayout(
        "StableDiffusion3Pipeline",
        (
            TextSlot("text_encoder", "clip", "CLIPTextModelWithProjection", "tokenizer"),
            TextSlot(
                "text_encoder_2",
                "clip",
                "CLIPTextModelWithProjection",
                "tokenizer_2",
                second_clip=True,
            ),
            TextSlot(
                "text_encoder_3",
                "t5",
                "T5EncoderModel",
                "tokenizer_3",
                optional=True,
                width=lambda config: config.get("joint_attention_dim"),
            ),
        ),
        vae="kl16",
        configs={"": "sd3"},
        arguments={"image_encoder": None, "feature_extractor": None},
    ),
)
