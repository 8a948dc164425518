"""Variation seeds and "Seed resize from" on the flow-matching families: the noise each
pipeline draws, varied in the VAE's latent layout and handed back in the pipeline's own;
text to image, image to image and inpainting; the batch rule and the refusals."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import diffusers
import numpy as np
import pytest
import torch

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.flow_variation import from_latent, to_latent, vary, vary_flow_call
from sdstudio.engine.generation import Engine
from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.engine.variation_noise import NoiseVariation, check_pipeline, draw_noise
from tests.test_flow_families import flow_request

SAVERS = {
    "flux": "save_tiny_flux",
    "chroma": "save_tiny_chroma",
    "sd3": "save_tiny_sd3",
    "zimage": "save_tiny_zimage",
    "qwen": "save_tiny_qwen_image",
    "klein": "save_tiny_flux2_klein",
    "fill": "save_tiny_flux",
}
"""The tiny model of each family (:mod:`sdstudio.testing.tiny_flow`)."""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny model folder of a family, saved once for the module."""
    from sdstudio.testing import tiny_flow

    saved: dict[str, Path] = {}

    def model(name: str) -> Path:
        if name not in saved:
            folder = tmp_path_factory.mktemp("models") / f"tiny-{name}"
            options = {"fill": True} if name == "fill" else {}
            saved[name] = getattr(tiny_flow, SAVERS[name])(folder, **options)
        return saved[name]

    return model


def job(model: Path, **changes: Any) -> GenerationRequest:
    """The flow families' tests' request, with a variation seed to vary towards."""
    return flow_request(model, **{"variation_seed": 99, **changes})


def pixels(engine: Engine, request: GenerationRequest) -> np.ndarray:
    [result] = engine.generate(request)
    return np.asarray(result.image.convert("RGB")).astype(int)


def assert_varies_its_drawn_noise(engine: Engine, start: GenerationRequest) -> None:
    """A pass whose pipeline draws its noise after encoding the image (so the seed's noise
    is drawn again): a tiny strength barely moves it, a middle one varies it, exactly again
    on a re-run."""
    plain = pixels(engine, start)
    assert np.abs(pixels(engine, start.replace(variation_strength=1e-3)) - plain).max() <= 2
    [middle] = engine.generate(start.replace(variation_strength=0.5))
    varied = np.asarray(middle.image.convert("RGB")).astype(int)
    assert not np.array_equal(varied, plain)
    assert np.array_equal(pixels(engine, middle.record.request), varied)


# The layouts, on the pipelines' own packing functions.

FLUX = SimpleNamespace(vae_scale_factor=8, _pack_latents=diffusers.FluxPipeline._pack_latents)
QWEN = SimpleNamespace(vae_scale_factor=8, _pack_latents=diffusers.QwenImagePipeline._pack_latents)
KLEIN = SimpleNamespace(
    vae_scale_factor=8,
    _pack_latents=diffusers.Flux2KleinPipeline._pack_latents,
    _patchify_latents=diffusers.Flux2KleinPipeline._patchify_latents,
    _unpatchify_latents=diffusers.Flux2KleinPipeline._unpatchify_latents,
)
PLAIN = SimpleNamespace(vae_scale_factor=8)


def _drawn(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_packed_noise_unpacks_as_the_pipelines_unpack_it_and_packs_back_exactly() -> None:
    latent = _drawn(1, (1, 16, 8, 12))  # 64 x 96 pixels
    packed = FLUX._pack_latents(latent, 1, 16, 8, 12)
    assert torch.equal(to_latent(FLUX, packed, 96, 64), latent)
    assert torch.equal(
        to_latent(FLUX, packed, 96, 64), diffusers.FluxPipeline._unpack_latents(packed, 64, 96, 8)
    )
    assert torch.equal(from_latent(FLUX, latent, packed), packed)
    framed = latent.unsqueeze(1)  # Qwen-Image draws (B, 1, C, H, W)
    qwen_packed = QWEN._pack_latents(framed, 1, 16, 8, 12)
    assert torch.equal(to_latent(QWEN, framed, 96, 64), latent)
    assert torch.equal(from_latent(QWEN, latent, framed), framed)
    assert torch.equal(to_latent(QWEN, qwen_packed, 96, 64), latent)
    assert torch.equal(from_latent(QWEN, latent, qwen_packed), qwen_packed)
    folded = _drawn(2, (1, 128, 4, 6))  # Flux.2 draws 2x2 patches
    klein_packed = KLEIN._pack_latents(folded)
    unfolded = KLEIN._unpatchify_latents(folded)
    assert unfolded.shape == (1, 32, 8, 12)
    assert torch.equal(to_latent(KLEIN, folded, 96, 64), unfolded)
    assert torch.equal(to_latent(KLEIN, klein_packed, 96, 64), unfolded)
    assert torch.equal(from_latent(KLEIN, unfolded, klein_packed), klein_packed)
    assert torch.equal(from_latent(KLEIN, unfolded, folded), folded)
    assert torch.equal(to_latent(PLAIN, latent, 96, 64), latent)


@pytest.mark.parametrize("pipe", [FLUX, QWEN, KLEIN, PLAIN], ids=["2x2", "frame", "patch", "plain"])
def test_strength_0_keeps_the_noise_and_1_gives_the_variation_seeds(pipe: Any) -> None:
    shape = (1, 128, 4, 4) if pipe is KLEIN else (1, 16, 8, 8)
    seed_noise, other_noise = _drawn(5, shape), _drawn(6, shape)
    if pipe is QWEN:
        seed_noise, other_noise = seed_noise.unsqueeze(1), other_noise.unsqueeze(1)
    if pipe is not PLAIN:
        seed_noise = from_latent(pipe, to_latent(pipe, seed_noise, 64, 64), _packed(pipe))
        other_noise = from_latent(pipe, to_latent(pipe, other_noise, 64, 64), _packed(pipe))
    same = vary(pipe, NoiseVariation(5, 6, 0.0, (64, 64)), seed_noise, 64, 64)
    assert torch.equal(same, seed_noise)  # drawn again at its own size: bit for bit
    other = vary(pipe, NoiseVariation(5, 6, 1.0), seed_noise, 64, 64)
    assert torch.allclose(other, other_noise, atol=1e-5)
    middle = vary(pipe, NoiseVariation(5, 6, 0.4), seed_noise, 64, 64)
    assert not torch.allclose(middle, seed_noise, atol=1e-2)
    assert not torch.allclose(middle, other_noise, atol=1e-2)


def _packed(pipe: Any) -> torch.Tensor:
    """A tensor of the pipeline's packed layout, for 64 x 64 pixels."""
    return torch.zeros((1, 16, 128 if pipe is KLEIN else 64))


@pytest.mark.parametrize("pipe", [FLUX, KLEIN, PLAIN], ids=["2x2", "patch", "plain"])
def test_seed_resize_keeps_the_centre_of_the_noise_of_that_size(pipe: Any) -> None:
    def latent_noise(seed: int, size: int) -> torch.Tensor:
        side = size // 8
        if pipe is KLEIN:
            return KLEIN._unpatchify_latents(
                draw_noise(seed, (128, side // 2, side // 2), torch.float32)[None]
            )
        return draw_noise(seed, (16, side, side), torch.float32)[None]

    own = latent_noise(5, 64)  # 8 x 8 latents
    drawn = own if pipe is not KLEIN else KLEIN._patchify_latents(own)
    cropped = to_latent(
        pipe, vary(pipe, NoiseVariation(5, 0, 0.0, (128, 128)), drawn, 64, 64), 64, 64
    )
    assert torch.equal(cropped, latent_noise(5, 128)[:, :, 4:12, 4:12])
    placed = to_latent(pipe, vary(pipe, NoiseVariation(5, 0, 0.0, (32, 32)), drawn, 64, 64), 64, 64)
    assert torch.equal(placed[:, :, 2:6, 2:6], latent_noise(5, 32))
    assert torch.equal(placed[:, :, :2], own[:, :, :2])  # the rest stays the seed's own


def test_inpainting_varies_the_noise_and_its_packed_copy_alike() -> None:
    class Scheduler:
        def scale_noise(self, sample, timestep, noise=None):
            return noise

    pipe = SimpleNamespace(
        vae_scale_factor=8,
        _pack_latents=diffusers.FluxPipeline._pack_latents,
        scheduler=Scheduler(),
        prepare_latents=lambda image, latents=None: None,
    )
    variation = NoiseVariation(3, 9, 0.5)
    kwargs = {"width": 64, "height": 64, "mask_image": object(), "strength": 0.7}
    vary_flow_call(pipe, kwargs, variation)
    noise = _drawn(3, (1, 16, 8, 8))
    packed = FLUX._pack_latents(noise, 1, 16, 8, 8)
    first = pipe.scheduler.scale_noise(None, 0, noise)
    assert not torch.allclose(first, noise, atol=1e-2)
    assert torch.equal(pipe.scheduler.scale_noise(None, 1, noise), first)
    assert torch.equal(
        pipe.scheduler.scale_noise(None, 1, packed), FLUX._pack_latents(first, 1, 16, 8, 8)
    )


def test_a_pipeline_that_draws_no_latents_of_its_own_is_refused() -> None:
    request = GenerationRequest(model="m", prompt="p", variation_strength=0.3)
    with pytest.raises(InvalidRequest, match="cannot reach the noise of Odd models"):
        check_pipeline(SimpleNamespace(vae_scale_factor=8), "Odd", request)
    flow = SimpleNamespace(vae_scale_factor=8, prepare_latents=lambda latents=None: None)
    check_pipeline(flow, "Flow", request)

    def prepare_latents(image, latents=None, is_strength_max=True):  # SD 3.x's inpainting
        return latents

    sd3 = SimpleNamespace(vae_scale_factor=8, prepare_latents=prepare_latents)
    inpaint = request.replace(mode=Mode.INPAINT, init_image="i.png", mask="m.png", strength=1.0)
    with pytest.raises(InvalidRequest, match="lower the denoising strength below 1"):
        check_pipeline(sd3, "SD 3.x", inpaint)
    check_pipeline(sd3, "SD 3.x", inpaint.replace(strength=0.9))
    check_pipeline(sd3, "SD 3.x", request)  # text to image draws through prepare_latents


# Whole generations with the tiny models.

FAST = {"flux"}


def _families(*names: str) -> list[Any]:
    return [
        pytest.param(name, marks=() if name in FAST else pytest.mark.slow, id=name)
        for name in names
    ]


@pytest.mark.parametrize("family", _families("flux", "chroma", "sd3", "zimage", "qwen", "klein"))
@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_txt2img_variation(engine: Engine, models: Any, family: str) -> None:
    model = models(family)
    plain = pixels(engine, job(model))
    # Strength 0 through the whole path (the seed's noise drawn again at its own size).
    assert np.array_equal(pixels(engine, job(model, seed_resize_from=(64, 64))), plain)
    # Strength 1: the variation seed's noise, so the variation seed's own image.
    own = pixels(engine, job(model, seed=99))
    assert np.abs(pixels(engine, job(model, variation_strength=1.0)) - own).max() <= 1
    [middle] = engine.generate(job(model, variation_strength=0.4))
    varied = np.asarray(middle.image.convert("RGB")).astype(int)
    assert not np.array_equal(varied, plain) and not np.array_equal(varied, own)
    assert middle.record.request.variation_strength == 0.4
    assert np.array_equal(pixels(engine, middle.record.request), varied)


def test_a_batch_keeps_the_seed_and_steps_the_variation_seed(engine: Engine, models: Any) -> None:
    model = models("flux")
    results = list(engine.generate(job(model, variation_strength=0.5, batch_size=2)))
    records = [r.record.request for r in results]
    assert [(r.seed, r.variation_seed) for r in records] == [(7, 99), (7, 100)]
    second = np.asarray(results[1].image.convert("RGB")).astype(int)
    assert np.array_equal(
        pixels(engine, job(model, variation_strength=0.5, variation_seed=100)), second
    )
    assert not np.array_equal(np.asarray(results[0].image.convert("RGB")).astype(int), second)


def test_seed_resize_from_changes_the_image_and_reruns(engine: Engine, models: Any) -> None:
    model = models("flux")
    plain = pixels(engine, job(model))
    [resized] = engine.generate(job(model, seed_resize_from=(96, 128)))
    image = np.asarray(resized.image.convert("RGB")).astype(int)
    assert image.shape == plain.shape and not np.array_equal(image, plain)
    assert resized.record.request.seed_resize_from == (96, 128)
    assert np.array_equal(pixels(engine, resized.record.request), image)


def test_the_hires_pass_adds_the_varied_noise_too(
    engine: Engine, models: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sdstudio.engine import flow_variation
    from sdstudio.engine.refine.hires_settings import HiresFix

    varied_noise: list[tuple[int, int]] = []
    vary_noise = flow_variation.vary

    def recording(pipe, variation, noise, width, height):
        varied_noise.append((width, height))
        return vary_noise(pipe, variation, noise, width, height)

    monkeypatch.setattr(flow_variation, "vary", recording)
    start = job(models("flux"), steps=2, hires=HiresFix(upscaler="Latent", steps=2, denoise=0.6))
    [varied] = engine.generate(start.replace(variation_strength=0.5))
    assert varied_noise == [(64, 64), (128, 128)]  # the first pass's noise, then the hires pass's
    image = np.asarray(varied.image.convert("RGB")).astype(int)
    assert image.shape == (128, 128, 3)
    assert not np.array_equal(image, pixels(engine, start))
    assert np.array_equal(pixels(engine, varied.record.request), image)


@pytest.mark.parametrize("family", _families("flux", "chroma", "sd3", "zimage", "qwen"))
def test_img2img_variation(engine: Engine, models: Any, family: str, init_image: Path) -> None:
    model = models(family)
    start = job(model, mode=Mode.IMG2IMG, init_image=str(init_image), strength=0.7)
    assert_varies_its_drawn_noise(engine, start)


@pytest.mark.parametrize("family", _families("flux", "qwen", "zimage", "klein", "sd3"))
def test_inpainting_variation(
    engine: Engine, models: Any, family: str, init_image: Path, mask_image: Path
) -> None:
    model = models(family)
    start = job(
        model,
        mode=Mode.INPAINT,
        init_image=str(init_image),
        mask=str(mask_image),
        strength=0.8,
    )
    assert_varies_its_drawn_noise(engine, start)


@pytest.mark.slow
def test_flux_fill_varies_text_to_image_through_its_inpainting(engine: Engine, models: Any) -> None:
    start = job(models("fill"), distilled_guidance=30.0)
    assert_varies_its_drawn_noise(engine, start)


@pytest.mark.slow
def test_sd3_inpainting_at_full_strength_is_refused(
    engine: Engine, models: Any, init_image: Path, mask_image: Path
) -> None:
    full = job(
        models("sd3"),
        mode=Mode.INPAINT,
        init_image=str(init_image),
        mask=str(mask_image),
        strength=1.0,
        variation_strength=0.3,
    )
    with pytest.raises(InvalidRequest, match="lower the denoising strength below 1"):
        list(engine.generate(full))
    assert len(list(engine.generate(full.replace(variation_strength=0.0)))) == 1
