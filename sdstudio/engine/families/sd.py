"""Stable Diffusion 1.x, 2.x and XL: UNet models with CLIP text encoders."""

from __future__ import annotations

from typing import Any

from PIL import Image

from sdstudio.engine.families.base import ModelFamily
from sdstudio.engine.previews import latent_preview


def _preview(latents: Any, width: int, height: int) -> Image.Image | None:
    return latent_preview(latents)


_SD_PIPELINES = frozenset(
    {"StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline"}
)
_XL_PIPELINES = frozenset(
    {
        "StableDiffusionXLPipeline",
        "StableDiffusionXLImg2ImgPipeline",
        "StableDiffusionXLInpaintPipeline",
    }
)

SD1 = ModelFamily("sd1", "SD 1.x", _SD_PIPELINES, native_size=512, preview=_preview)
SD2 = ModelFamily("sd2", "SD 2.x", native_size=768, preview=_preview)
"""SD 2.x folders name the same pipeline classes as SD 1.x; their UNet tells them apart."""
SDXL = ModelFamily(
    "sdxl", "SDXL", _XL_PIPELINES, native_size=1024, default_steps=25, preview=_preview
)
SDXL_REFINER = ModelFamily("sdxl-refiner", "SDXL refiner", native_size=1024, preview=_preview)

FAMILIES = (SD1, SD2, SDXL, SDXL_REFINER)
