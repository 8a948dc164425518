"""Qwen-Image: a flow-matching MMDiT with a Qwen2.5-VL text encoder and a Wan-style VAE
(16-channel latents packed in 2x2 patches, normalised per channel).

Real CFG is its ``true_cfg_scale`` with the negative prompt; its Lightning
versions take 8 steps without it.
"""

from __future__ import annotations

from sdstudio.engine.families.base import ModelFamily, Prompting, SplitLayout, TextSlot
from sdstudio.engine.previews import wan_preview

QWEN_IMAGE = ModelFamily(
    "qwen-image",
    "Qwen-Image",
    frozenset({"QwenImagePipeline", "QwenImageImg2ImgPipeline", "QwenImageInpaintPipeline"}),
    native_size=1328,
    flow=True,
    prompting=Prompting.PLAIN,
    true_cfg=True,
    latent_masking=False,
    size_multiple=16,
    default_steps=50,
    default_guidance=4.0,
    few_steps=8,
    few_guidance=1.0,
    preview=wan_preview,
    split=SplitLayout(
        "QwenImagePipeline",
        (
            TextSlot(
                "text_encoder",
                "qwen2.5-vl",
                "Qwen2_5_VLForConditionalGeneration",
                "tokenizer",
                width=lambda config: config.get("joint_attention_dim"),
            ),
        ),
        vae="qwen-image",
        configs={"": "qwen-image"},
    ),
)
