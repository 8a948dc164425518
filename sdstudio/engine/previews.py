"""Cheap previews of the image as it forms.

A linear projection of the latent channels onto RGB gives a recognisable
picture at 1/8 of the final size for almost no cost and no extra weights; it
runs at every denoising step. The 16-channel latents of SD 3 and Flux.1 have
factors of their own (fitted by ComfyUI), as have the 32 channels of Flux.2's;
the Flux pipelines pass their latents packed in 2x2 patches, which are unpacked first.
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


SD3_LATENT_RGB = (
    (-0.0645, 0.0177, 0.1052),
    (0.0028, 0.0312, 0.0650),
    (0.1848, 0.0762, 0.0360),
    (0.0944, 0.0360, 0.0889),
    (0.0897, 0.0506, -0.0364),
    (-0.0020, 0.1203, 0.0284),
    (0.0855, 0.0118, 0.0283),
    (-0.0539, 0.0658, 0.1047),
    (-0.0057, 0.0116, 0.0700),
    (-0.0412, 0.0281, -0.0039),
    (0.1106, 0.1171, 0.1220),
    (-0.0248, 0.0682, -0.0481),
    (0.0815, 0.0846, 0.1207),
    (-0.0120, -0.0055, -0.0867),
    (-0.0749, -0.0634, -0.0456),
    (-0.1418, -0.1457, -0.1259),
)
FLUX_LATENT_RGB = (
    (-0.0346, 0.0244, 0.0681),
    (0.0034, 0.0210, 0.0687),
    (0.0275, -0.0668, -0.0433),
    (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329),
    (0.0004, 0.0383, 0.0115),
    (0.0405, 0.0861, 0.0915),
    (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180),
    (0.1008, 0.0755, -0.0421),
    (-0.0515, 0.0201, 0.0011),
    (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749),
    (-0.1264, -0.0522, -0.1103),
    (-0.0280, -0.0881, -0.0499),
    (-0.1262, -0.0982, -0.0778),
)
FLUX_LATENT_BIAS = (-0.0329, -0.0718, -0.0851)
FLUX2_LATENT_RGB = (
    (0.0058, 0.0113, 0.0073),
    (0.0495, 0.0443, 0.0836),
    (-0.0099, 0.0096, 0.0644),
    (0.2144, 0.3009, 0.3652),
    (0.0166, -0.0039, -0.0054),
    (0.0157, 0.0103, -0.0160),
    (-0.0398, 0.0902, -0.0235),
    (-0.0052, 0.0095, 0.0109),
    (-0.3527, -0.2712, -0.1666),
    (-0.0301, -0.0356, -0.0180),
    (-0.0107, 0.0078, 0.0013),
    (0.0746, 0.0090, -0.0941),
    (0.0156, 0.0169, 0.0070),
    (-0.0034, -0.0040, -0.0114),
    (0.0032, 0.0181, 0.0080),
    (-0.0939, -0.0008, 0.0186),
    (0.0018, 0.0043, 0.0104),
    (0.0284, 0.0056, -0.0127),
    (-0.0024, -0.0022, -0.0030),
    (0.1207, -0.0026, 0.0065),
    (0.0128, 0.0101, 0.0142),
    (0.0137, -0.0072, -0.0007),
    (0.0095, 0.0092, -0.0059),
    (0.0000, -0.0077, -0.0049),
    (-0.0465, -0.0204, -0.0312),
    (0.0095, 0.0012, -0.0066),
    (0.0290, -0.0034, 0.0025),
    (0.0220, 0.0169, -0.0048),
    (-0.0332, -0.0457, -0.0468),
    (-0.0085, 0.0389, 0.0609),
    (-0.0076, 0.0003, -0.0043),
    (-0.0111, -0.0460, -0.0614),
)
FLUX2_LATENT_BIAS = (-0.0329, -0.0718, -0.0851)
WAN_LATENT_RGB = (
    (-0.1299, -0.1692, 0.2932),
    (0.0671, 0.0406, 0.0442),
    (0.3568, 0.2548, 0.1747),
    (0.0372, 0.2344, 0.1420),
    (0.0313, 0.0189, -0.0328),
    (0.0296, -0.0956, -0.0665),
    (-0.3477, -0.4059, -0.2925),
    (0.0166, 0.1902, 0.1975),
    (-0.0412, 0.0267, -0.1364),
    (-0.1293, 0.0740, 0.1636),
    (0.0680, 0.3019, 0.1128),
    (0.0032, 0.0581, 0.0639),
    (-0.1251, 0.0927, 0.1699),
    (0.0060, -0.0633, 0.0005),
    (0.3477, 0.2275, 0.2950),
    (0.1984, 0.0913, 0.1861),
)
WAN_LATENT_BIAS = (-0.1835, -0.0868, -0.3360)


def latent_preview(latents: torch.Tensor, index: int = 0) -> Image.Image | None:
    """An RGB preview of image ``index`` of a batch of 4-channel latents.

    Returns ``None`` for latents this projection does not know.
    """
    return project(latents, SD1_LATENT_RGB, index=index)


def project(
    latents: torch.Tensor,
    factors: tuple[tuple[float, float, float], ...],
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0),
    *,
    index: int = 0,
) -> Image.Image | None:
    """Image ``index`` of a batch of (batch, channels, height, width) latents projected
    onto RGB by one factor row per channel; ``None`` when the channels do not match."""
    import torch

    if latents.ndim != 4 or latents.shape[1] != len(factors):
        return None
    with torch.no_grad():
        sample = latents[index].detach().to(device="cpu", dtype=torch.float32)
        matrix = torch.tensor(factors, dtype=torch.float32)
        rgb = torch.einsum("chw,cr->hwr", sample, matrix) + torch.tensor(bias)
        pixels = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)


def sd3_preview(latents: torch.Tensor, width: int, height: int) -> Image.Image | None:
    """A preview of SD 3 latents (16 channels)."""
    return project(latents, SD3_LATENT_RGB)


def flux_preview(latents: torch.Tensor, width: int, height: int) -> Image.Image | None:
    """A preview of Flux.1 latents (also Z-Image's): packed (batch, patches, 64) for
    ``width`` x ``height`` pixels, or (batch, 16, height/8, width/8)."""
    return _packed_preview(latents, width, height, FLUX_LATENT_RGB, FLUX_LATENT_BIAS)


def wan_preview(latents: torch.Tensor, width: int, height: int) -> Image.Image | None:
    """A preview of latents of a Wan-style VAE (Qwen-Image), packed as Flux.1's are."""
    return _packed_preview(latents, width, height, WAN_LATENT_RGB, WAN_LATENT_BIAS)


def flux2_preview(latents: torch.Tensor, width: int, height: int) -> Image.Image | None:
    """A preview of Flux.2 latents: 32 channels in 2x2 patches, (batch, patches, 128)."""
    return _packed_preview(latents, width, height, FLUX2_LATENT_RGB, FLUX2_LATENT_BIAS)


def _packed_preview(
    latents: torch.Tensor,
    width: int,
    height: int,
    factors: tuple[tuple[float, float, float], ...],
    bias: tuple[float, float, float],
) -> Image.Image | None:
    if latents.ndim == 3:
        unpacked = unpack_patches(latents, width, height)
        if unpacked is None:
            return None
        latents = unpacked
    return project(latents, factors, bias)


def unpack_patches(latents: torch.Tensor, width: int, height: int) -> torch.Tensor | None:
    """(batch, (h/2)*(w/2), channels*4) latents packed in 2x2 patches, as Flux's
    pipelines hold them, back to (batch, channels, h, w) with h, w the size / 8."""
    rows, columns = 2 * (height // 16), 2 * (width // 16)
    batch, patches, packed = latents.shape
    if patches != (rows // 2) * (columns // 2) or packed % 4:
        return None
    grid = latents.view(batch, rows // 2, columns // 2, packed // 4, 2, 2)
    return grid.permute(0, 3, 1, 4, 2, 5).reshape(batch, packed // 4, rows, columns)
