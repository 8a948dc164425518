"""AUTOMATIC1111's variation seeds and "Seed resize from", on sdstudio's own noise.

A1111 (``modules/rng.py``, ``ImageRNG.first``) makes an image's starting noise thus:

* the seed's noise and the variation seed's noise are drawn alike, and mixed by
  spherical interpolation (``slerp``) at the variation strength: 0 is the seed's
  noise, 1 the variation seed's;
* with "Seed resize from" W x H, both are drawn at that size's latent shape, mixed,
  and their centre is written into the seed's noise at the requested size (A1111's
  exact offsets: a larger resize-from size is cropped to its centre, a smaller one
  is placed in the middle of the seed's own full-size noise);
* in a batch every image keeps the seed and image *i* takes ``variation_seed + i``
  (``processing.py``: ``all_seeds = seed + (x if subseed_strength == 0 else 0)``).

The noise here is drawn as sdstudio draws it: the seed's full-size noise comes from the
image's own generator (which the sampler goes on drawing from, as before), every other
draw from a CPU generator of its own seeded with its seed, in the same dtype as the
seed's noise. So strength 0 without a resize changes nothing, bit for bit.

Where a pipeline draws its own noise (image-to-image, inpainting, the hires pass: the
noise added to the start latents), A1111 also takes it from the same seeds and variation
seeds; :func:`vary_scheduler` makes the scheduler add the varied noise instead. The
"latent noise" masked content is drawn from the seed alone, as A1111 draws it
(``create_random_tensors(..., all_seeds)`` without variation seeds).

The flow-matching families' pipelines draw and pack their noise themselves; how it is
varied there is in :mod:`sdstudio.engine.flow_variation`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.request import MAX_SEED, GenerationRequest, Mode

# A1111's slerp falls back to a straight mix when the two noises are this close.
_ALMOST_PARALLEL = 0.9995


def is_used(request: GenerationRequest) -> bool:
    """Whether the request's noise is changed by a variation seed or a seed resize."""
    return request.variation_strength > 0 or request.seed_resize_from != (0, 0)


def image_seeds(request: GenerationRequest) -> list[tuple[int, int]]:
    """The (seed, variation seed) of each image of the batch.

    Without a variation the seeds are ``s, s+1, ...`` and the variation seed stays as
    given; with one, every image keeps the seed and takes ``v, v+1, ...`` (A1111's rule).
    """
    if request.variation_strength <= 0:
        return [(seed, request.variation_seed) for seed in request.seeds()]
    return [
        (request.seeds()[0], (request.variation_seed + i) % (MAX_SEED + 1))
        for i in range(request.batch_size)
    ]


def check_request(request: GenerationRequest) -> None:
    """Refuse, before a model loads, the passes that cannot take a varied noise."""
    if not is_used(request):
        return
    if request.upscale is not None:
        raise InvalidRequest(
            "SD upscale repaints its tiles each from the seed alone: set the variation "
            "strength to 0 and Seed resize from to off for it."
        )


def check_pipeline(pipe: Any, family_name: str, request: GenerationRequest) -> None:
    """Refuse a pipeline whose noise cannot be varied: one that neither has a UNet nor
    draws its latents through ``prepare_latents`` (see :mod:`.flow_variation`), and the
    calls of a flow-matching pipeline that never mix their noise in (see
    :func:`.flow_variation.check_flow_call`)."""
    factor = getattr(pipe, "vae_scale_factor", None)
    if not isinstance(factor, int) or not (
        getattr(pipe, "unet", None) is not None or hasattr(pipe, "prepare_latents")
    ):
        raise InvalidRequest(
            f"Variation seeds and Seed resize from cannot reach the noise of {family_name} "
            "models. Set the variation strength to 0 and Seed resize from to off."
        )
    if getattr(pipe, "unet", None) is None and request.mode is not Mode.TXT2IMG:
        from sdstudio.engine.flow_variation import check_flow_call

        masked = {"mask_image": True} if request.mode is Mode.INPAINT else {}
        check_flow_call(pipe, {**masked, "strength": request.strength})


@dataclass(frozen=True, slots=True)
class NoiseVariation:
    """How one image's noise is varied: its seed, variation seed and strength, and the
    size (in pixels; (0, 0): off) its noise is drawn at."""

    seed: int
    variation_seed: int
    strength: float
    resize_from: tuple[int, int] = (0, 0)

    @classmethod
    def of(
        cls, request: GenerationRequest, seed: int, variation_seed: int
    ) -> NoiseVariation | None:
        """The variation of an image of ``request`` (``None`` when there is none)."""
        if not is_used(request):
            return None
        return cls(seed, variation_seed, request.variation_strength, request.seed_resize_from)

    def apply(self, noise: Any, factor: int, draw: Callable[..., Any] | None = None) -> Any:
        """The seed's noise ``noise`` (``(1, C, H, W)`` or ``(C, H, W)``, drawn from the
        seed) varied; ``factor`` is the pipeline's pixels per latent. ``draw`` draws the
        noise of a seed at a shape ``(C, H, W)`` and dtype (:func:`draw_noise` by default;
        a pipeline that draws its noise in another layout gives its own)."""
        import torch

        draw = draw or draw_noise

        batched = noise.dim() == 4
        full = noise[0] if batched else noise
        shape = tuple(full.shape)
        width, height = self.resize_from
        resized = width > 0 and height > 0
        small = (shape[0], height // factor, width // factor) if resized else shape
        own = draw(self.seed, small, full.dtype) if resized else full.to("cpu")
        if self.strength > 0:
            other = draw(self.variation_seed, small, full.dtype)
            own = slerp(self.strength, own.float(), other.float()).to(full.dtype)
        if resized:
            own = place_centred(own, full.to("cpu").clone())
        own = own.to(device=noise.device, dtype=noise.dtype)
        return own.unsqueeze(0) if batched else torch.as_tensor(own)


def draw_noise(seed: int, shape: tuple[int, ...], dtype: Any) -> Any:
    """Noise drawn as sdstudio draws it: on the CPU from a generator seeded with ``seed``."""
    import torch

    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn((1, *shape), generator=generator, dtype=dtype, device="cpu")[0]


def slerp(value: float, low: Any, high: Any) -> Any:
    """A1111's spherical interpolation of two noises of shape ``(C, H, W)``: taken along
    the height (dim 1) for each channel and column, as A1111 does on an image's noise.

    Where the two are almost parallel the mix is straight: ``low * (1 - value) + high *
    value`` (A1111 writes the two weights the other way round, a slip that only shows
    for two noises that are all but equal).
    """
    import torch

    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > _ALMOST_PARALLEL:
        return low * (1 - value) + high * value
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - value) * omega) / so).unsqueeze(1) * low + (
        torch.sin(value * omega) / so
    ).unsqueeze(1) * high


def place_centred(small: Any, large: Any) -> Any:
    """``large`` (``(C, H, W)``) with the centre of ``small`` written into its middle,
    with A1111's offsets (a floor halving of the difference) and clipping."""
    dx = (large.shape[2] - small.shape[2]) // 2
    dy = (large.shape[1] - small.shape[1]) // 2
    w = small.shape[2] if dx >= 0 else small.shape[2] + 2 * dx
    h = small.shape[1] if dy >= 0 else small.shape[1] + 2 * dy
    tx, ty = max(dx, 0), max(dy, 0)
    sx, sy = max(-dx, 0), max(-dy, 0)
    large[:, ty : ty + h, tx : tx + w] = small[:, sy : sy + h, sx : sx + w]
    return large


def vary_scheduler(scheduler: Any, variation: NoiseVariation | None, factor: int) -> None:
    """Make ``scheduler`` add ``variation``'s noise where a pipeline adds the seed's noise
    to its start latents (image-to-image, inpainting below full strength, the hires pass).

    The pipeline draws the seed's noise from the image's generator and hands it to
    ``add_noise``; it is varied there, once (inpainting hands the same noise again at
    every step).
    """
    if variation is None or not hasattr(scheduler, "add_noise"):
        return
    add_noise = scheduler.add_noise
    last: list[Any] = []  # [noise given, noise varied]

    def varied_add_noise(samples: Any, noise: Any, timesteps: Any) -> Any:
        if not last or last[0] is not noise:
            last[:] = [noise, variation.apply(noise, factor)]
        return add_noise(samples, last[1], timesteps)

    scheduler.add_noise = varied_add_noise


def full_strength_latents(
    pipe: Any, kwargs: dict[str, Any], variation: NoiseVariation | None, generator: Any
) -> Any | None:
    """For an inpainting call at full strength, whose pipeline starts from its noise as it
    is (no ``add_noise``): the varied noise as ``latents``, drawn first from ``generator``
    as the pipeline would draw it (``None`` for any other call)."""
    import torch

    if variation is None or "mask_image" not in kwargs or kwargs.get("strength", 0) < 1.0:
        return None
    factor = pipe.vae_scale_factor
    size = (kwargs["height"] // factor, kwargs["width"] // factor)
    shape = (1, pipe.vae.config.latent_channels, *size)
    noise = torch.randn(shape, generator=generator, dtype=pipe.unet.dtype, device="cpu")
    return variation.apply(noise, factor)


def vary_call(pipe: Any, kwargs: dict[str, Any], variation: NoiseVariation | None) -> None:
    """Vary the noise of a pipeline call that draws its own (image-to-image, inpainting,
    the hires pass): as ``latents`` at full inpainting strength, else where the scheduler
    adds it (the call's scheduler must be this image's own, made for it). A flow-matching
    pipeline's is varied where its scheduler mixes it in (see :mod:`.flow_variation`)."""
    if variation is None:
        return
    if getattr(pipe, "unet", None) is None:
        from sdstudio.engine.flow_variation import vary_flow_call

        vary_flow_call(pipe, kwargs, variation)
        return
    latents = full_strength_latents(pipe, kwargs, variation, kwargs["generator"])
    if latents is not None:
        kwargs["latents"] = latents
    else:
        vary_scheduler(pipe.scheduler, variation, pipe.vae_scale_factor)


VARY_BATCH = 4
VARY_STRENGTH = 0.25
""""Vary" makes a batch of :data:`VARY_BATCH` images at this strength: close enough to keep
the picture's composition, far enough for the four to differ visibly."""


def vary_request(request: GenerationRequest, rng: Any = None) -> GenerationRequest:
    """ "Vary": ``request`` (an image's, its seed resolved) as a batch of four variations,
    from a random variation seed at strength :data:`VARY_STRENGTH`."""
    import random

    from sdstudio.engine.request import MAX_RANDOM_SEED

    if request.mode is Mode.UPSCALE or request.upscale is not None:
        raise InvalidRequest(
            "An upscaled image has no noise of its own to vary: vary the image it was "
            "upscaled from."
        )
    seed = (rng or random.SystemRandom()).randint(0, MAX_RANDOM_SEED)
    return request.replace(
        variation_seed=seed, variation_strength=VARY_STRENGTH, batch_size=VARY_BATCH
    )
