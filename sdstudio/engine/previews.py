"""Cheap previews of the image as it forms.

A linear projection of the four latent channels onto RGB gives a recognisable
picture at 1/8 of the final size for almost no cost and no extra weights; it
runs at every denoising step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:
    import torch

# Least-squares fit of SD 1.x/2.x VAE latents to RGB in [-1, 1], as used by
# AUTOMATIC1111 and ComfyUI.
SD1_LATENT_RGB = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)


def latent_preview(latents: torch.Tensor, index: int = 0) -> Image.Image | None:
    """An RGB preview of image ``index`` of a batch of 4-channel latents.

    Returns ``None`` for latents this projection does not know.
    """
    import torch

    if latents.ndim != 4 or latents.shape[1] != len(SD1_LATENT_RGB):
        return None
    with torch.no_grad():
        sample = latents[index].detach().to(device="cpu", dtype=torch.float32)
        factors = torch.tensor(SD1_LATENT_RGB, dtype=torch.float32)
        rgb = torch.einsum("chw,cr->hwr", sample, factors)
        pixels = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)
