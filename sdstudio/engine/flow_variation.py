"""Variation seeds and "Seed resize from" on the flow-matching families (Flux.1, Flux.2
Klein, SD 3.x, Qwen-Image, Z-Image, Chroma), whose pipelines draw their own noise.

Each pipeline draws its noise as it always does (its ``prepare_latents``, with the
image's generator, in its own dtype and on its own device), so a strength of 0 without a
resize changes nothing, bit for bit. The noise is then varied in the VAE's latent layout
(``(B, C, H/8, W/8)``) by :class:`~sdstudio.engine.variation_noise.NoiseVariation`, as a
UNet model's is, and handed on in the pipeline's own layout:

* Flux.1, Chroma and Qwen-Image pack 2x2 latents into one token (Qwen-Image's noise has
  a frame axis besides, ``(B, 1, C, H, W)``); the pipeline's own ``_pack_latents`` packs
  the varied noise again;
* Flux.2 draws its noise already folded into 2x2 patches (``(B, 4C, H/2, W/2)``) and
  packs that; its ``_unpatchify_latents`` and ``_patchify_latents`` go between the two;
* SD 3.x and Z-Image draw the latents as they are.

Text to image varies what ``prepare_latents`` returns; image to image and inpainting vary
the noise the scheduler's ``scale_noise`` mixes into the start latents (and, in
inpainting, into the kept area at every step, where it comes packed).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.variation_noise import NoiseVariation, draw_noise


def _patched(pipe: Any) -> bool:
    """Whether the pipeline folds 2x2 latents into its channels (Flux.2)."""
    return hasattr(pipe, "_unpatchify_latents")


def latent_size(pipe: Any, width: int, height: int) -> tuple[int, int]:
    """The (height, width) of the pipeline's latents for an image of ``width`` x ``height``
    pixels, as a packing pipeline rounds them (down to an even number)."""
    factor = pipe.vae_scale_factor
    return 2 * (int(height) // (factor * 2)), 2 * (int(width) // (factor * 2))


def to_latent(pipe: Any, noise: Any, width: int, height: int) -> Any:
    """``noise`` in the pipeline's layout as ``(B, C, H, W)`` latents."""
    if noise.dim() == 5:  # Qwen-Image: (B, 1, C, H, W)
        return noise[:, 0]
    if noise.dim() == 4:
        return pipe._unpatchify_latents(noise) if _patched(pipe) else noise
    batch, _, values = noise.shape
    h, w = latent_size(pipe, width, height)
    if _patched(pipe):
        folded = noise.permute(0, 2, 1).reshape(batch, values, h // 2, w // 2)
        return pipe._unpatchify_latents(folded)
    channels = values // 4
    unpacked = noise.view(batch, h // 2, w // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return unpacked.reshape(batch, channels, h, w)


def from_latent(pipe: Any, latent: Any, like: Any) -> Any:
    """``(B, C, H, W)`` latents in the layout of ``like`` (the noise they were made from)."""
    if like.dim() == 5:
        return latent.unsqueeze(1)
    if like.dim() == 4:
        return pipe._patchify_latents(latent) if _patched(pipe) else latent
    if _patched(pipe):
        return pipe._pack_latents(pipe._patchify_latents(latent))
    batch, channels, h, w = latent.shape
    return pipe._pack_latents(latent, batch, channels, h, w)


def _drawer(pipe: Any) -> Callable[[int, tuple[int, ...], Any], Any]:
    """Draws the noise of a seed at a latent shape ``(C, H, W)`` as the pipeline draws it:
    Flux.2 draws 2x2 patches (so the shape is rounded down to even sizes)."""
    if not _patched(pipe):
        return draw_noise

    def draw(seed: int, shape: tuple[int, ...], dtype: Any) -> Any:
        channels, h, w = shape
        folded = draw_noise(seed, (channels * 4, h // 2, w // 2), dtype)
        return pipe._unpatchify_latents(folded.unsqueeze(0))[0]

    return draw


def vary(pipe: Any, variation: NoiseVariation, noise: Any, width: int, height: int) -> Any:
    """The seed's noise ``noise``, as the pipeline drew it (in its layout), varied."""
    import torch

    latent = to_latent(pipe, noise, width, height)
    varied = [
        variation.apply(latent[i : i + 1], pipe.vae_scale_factor, _drawer(pipe))
        for i in range(latent.shape[0])
    ]
    return from_latent(pipe, torch.cat(varied), noise)


@contextmanager
def varied_start(pipe: Any, variation: NoiseVariation | None) -> Iterator[None]:
    """While it lasts, ``pipe``'s text-to-image ``prepare_latents`` hands back the noise it
    draws varied by ``variation`` (nothing changes for ``None``, or latents given)."""
    if variation is None:
        yield
        return
    prepare = pipe.prepare_latents
    signature = inspect.signature(prepare)

    def varied_prepare(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        result = prepare(*args, **kwargs)
        if bound.arguments.get("latents") is not None:
            return result
        width, height = bound.arguments["width"], bound.arguments["height"]
        if isinstance(result, tuple):
            return (vary(pipe, variation, result[0], width, height), *result[1:])
        return vary(pipe, variation, result, width, height)

    pipe.prepare_latents = varied_prepare
    try:
        yield
    finally:
        del pipe.prepare_latents


def vary_flow_call(pipe: Any, kwargs: dict[str, Any], variation: NoiseVariation | None) -> None:
    """Make the call's scheduler (this image's own) mix ``variation``'s noise into the start
    latents of image to image or inpainting, and in inpainting into the kept area at every
    step (given there packed: it is varied alike, once)."""
    if variation is None:
        return
    check_flow_call(pipe, kwargs)
    scheduler = pipe.scheduler
    scale_noise = scheduler.scale_noise
    width, height = _size(kwargs)
    seen: list[tuple[Any, Any]] = []  # (noise given, noise varied), in each layout

    def varied_scale_noise(sample: Any, timestep: Any, noise: Any = None) -> Any:
        if noise is None:
            return scale_noise(sample, timestep, noise)
        for given, varied in seen:
            if given is noise:
                return scale_noise(sample, timestep, varied)
        varied = vary(pipe, variation, noise, width, height)
        seen.append((noise, varied))
        return scale_noise(sample, timestep, varied)

    scheduler.scale_noise = varied_scale_noise


def _size(kwargs: dict[str, Any]) -> tuple[int, int]:
    """The call's size in pixels: its ``width`` and ``height``, else its image's."""
    if "width" in kwargs and "height" in kwargs:
        return int(kwargs["width"]), int(kwargs["height"])
    image = kwargs["image"]
    size = getattr(image, "size", None)
    if isinstance(size, tuple):
        return int(size[0]), int(size[1])
    return int(image.shape[-1]), int(image.shape[-2])


def check_flow_call(pipe: Any, kwargs: dict[str, Any]) -> None:
    """Refuse a call whose noise cannot be varied: inpainting at full strength with a
    pipeline that starts from its noise as drawn (SD 3.x's), never through ``scale_noise``."""
    if "mask_image" in kwargs and kwargs.get("strength", 0) >= 1.0 and _starts_from_noise(pipe):
        raise InvalidRequest(
            "This model's inpainting starts from its noise unmixed at denoising strength 1, "
            "which a variation seed cannot reach: lower the denoising strength below 1, or "
            "set the variation strength to 0 and Seed resize from to off."
        )


def _starts_from_noise(pipe: Any) -> bool:
    """Whether the pipeline's inpainting takes its noise as the start latents at full
    strength instead of mixing it in by ``scale_noise`` (SD 3.x's ``is_strength_max``)."""
    return "is_strength_max" in inspect.signature(pipe.prepare_latents).parameters
