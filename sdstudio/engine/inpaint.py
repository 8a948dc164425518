"""Inpainting as AUTOMATIC1111 and InvokeAI do it: a blurred mask, the masked area
alone repainted at full resolution, what the masked area starts from, and the
result pasted back so that every pixel outside the (blurred) mask is the source's.

The pipeline decodes the whole picture from latents, which shifts colours and
softens detail everywhere; pasting back keeps the source exactly where nothing
was asked to change, however many times an image is inpainted.
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageFilter

from sdstudio.engine.request import MaskedContent

Box = tuple[int, int, int, int]


def blur_mask(mask: Image.Image, radius: int) -> Image.Image:
    """The mask (``L``, white = repaint) softened by a Gaussian blur of ``radius`` pixels."""
    if radius <= 0:
        return mask
    return mask.filter(ImageFilter.GaussianBlur(radius))


def crop_region(mask: Image.Image, padding: int, size: tuple[int, int]) -> Box:
    """The part of the picture "only masked" repaints: the masked pixels' bounding box
    grown by ``padding`` on every side, then to the shape of ``size`` (so the crop is
    not distorted when it is scaled to ``size``), within the picture.

    An empty mask gives the whole picture.
    """
    width, height = mask.size
    box = mask.getbbox()
    if box is None:
        return (0, 0, width, height)
    left, top, right, bottom = box
    left, top = max(0, left - padding), max(0, top - padding)
    right, bottom = min(width, right + padding), min(height, bottom + padding)
    target = size[0] / size[1]
    if (right - left) / (bottom - top) < target:
        left, right = _grown(left, right, round((bottom - top) * target), width)
    else:
        top, bottom = _grown(top, bottom, round((right - left) / target), height)
    return (left, top, right, bottom)


def _grown(start: int, end: int, length: int, limit: int) -> tuple[int, int]:
    """The span ``start..end`` grown to ``length`` around its centre, kept in ``0..limit``."""
    length = min(limit, max(length, end - start))
    start -= (length - (end - start)) // 2
    start = min(max(0, start), limit - length)
    return start, start + length


def masked_crop(
    source: Image.Image, overlay: Image.Image, padding: int, size: tuple[int, int]
) -> tuple[Box, Image.Image, Image.Image]:
    """A1111's "Only masked": the region :func:`crop_region` gives for ``overlay`` (the
    blurred mask at the source's size), and the source and the overlay cut to it and scaled to
    ``size``, as the pipeline repaints them (:func:`paste_back` puts the result back)."""
    box = crop_region(overlay, padding, size)
    image = source.crop(box).resize(size, Image.Resampling.LANCZOS)
    mask = overlay.crop(box).resize(size, Image.Resampling.BILINEAR)
    return box, image, mask


def paste_back(
    source: Image.Image, result: Image.Image, overlay: Image.Image, box: Box | None = None
) -> Image.Image:
    """``result`` laid over ``source`` through ``overlay`` (the blurred mask at the
    source's size): where the overlay is black the source's pixels are kept as they are.

    ``box`` is where a crop-only result goes (it is scaled to the box first).
    """
    result = result.convert("RGB")
    if box is None:
        if result.size != source.size:
            result = result.resize(source.size, Image.Resampling.LANCZOS)
        return Image.composite(result, source, overlay)
    region = (box[2] - box[0], box[3] - box[1])
    if result.size != region:
        result = result.resize(region, Image.Resampling.LANCZOS)
    pasted = source.copy()
    pasted.paste(result, box[:2], overlay.crop(box))
    return pasted


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Masked content "fill": the masked area painted with the colours around it."""
    from sdstudio.engine.outpaint import fill_from_surroundings

    return fill_from_surroundings(image, mask.point(lambda value: 255 if value >= 128 else 0))


def latent_arguments(
    pipe: Any, image: Image.Image, mask: Image.Image, content: MaskedContent, seed: int
) -> dict[str, Any]:
    """Pipeline arguments that start the masked area from latent noise or from zeros.

    The image goes in already encoded, with its masked latents replaced; the
    masked image that 9-channel inpainting models also take goes in encoded too.
    The noise comes from a generator of its own, so the sampler's noise is what
    the seed gives without it.
    """
    import torch

    width, height = image.size
    pixels = pipe.image_processor.preprocess(image, height=height, width=width)
    repaint = pipe.mask_processor.preprocess(mask, height=height, width=width)
    latents = _encode(pipe, pixels)
    where = torch.nn.functional.interpolate(repaint, size=latents.shape[-2:], mode="nearest")
    if content is MaskedContent.LATENT_NOISE:
        generator = torch.Generator("cpu").manual_seed(seed)
        filler = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
    else:
        filler = torch.zeros(latents.shape, dtype=torch.float32)
    start = latents * (1 - where) + filler.to(latents.dtype) * where
    return {
        "image": start,
        "masked_image_latents": _encode(pipe, pixels * (repaint < 0.5)),
    }


def _encode(pipe: Any, pixels: Any) -> Any:
    """Latents of ``pixels`` (-1..1), scaled as the pipeline's own encoder scales them.

    The pipeline's encoder is used where it has one: it runs a VAE that overflows
    in half precision (SDXL's) in float32. The posterior's mean is taken, so the
    latents depend on the pixels alone.
    """
    import torch

    vae = pipe.vae
    upcast = bool(getattr(vae.config, "force_upcast", False)) and vae.dtype == torch.float16
    dtype = torch.float32 if upcast else vae.dtype
    with torch.no_grad():
        if upcast:
            vae.to(dtype=torch.float32)
        try:
            encoded = vae.encode(pixels.to(device=vae.device, dtype=dtype)).latent_dist.mode()
        finally:
            if upcast:
                vae.to(dtype=torch.float16)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((encoded - shift) * vae.config.scaling_factor).to(torch.float32)
