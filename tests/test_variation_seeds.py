"""Variation seeds and "Seed resize from", as AUTOMATIC1111 makes them: the noise, the batch
rule, the passes that draw their own noise, the A1111 text and the CLI options."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sdstudio.cli import generate as cli_generate
from sdstudio.cli import main
from sdstudio.cli.variation_options import seed_resize_size
from sdstudio.engine import generation
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.generation import Engine, initial_noise
from sdstudio.engine.metadata.a1111 import format_parameters, read_parameters
from sdstudio.engine.metadata.record import ImageRecord
from sdstudio.engine.refine.upscale_settings import Upscale
from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.engine.variation_noise import (
    NoiseVariation,
    image_seeds,
    place_centred,
    slerp,
    vary_call,
    vary_scheduler,
)


class _Pipe:
    """What :func:`initial_noise` reads of a UNet pipeline."""

    class unet:
        class config:
            in_channels = 4

        dtype = torch.float32

    vae_scale_factor = 8


def _noise(seed: int, size: tuple[int, int] = (64, 64), variation=None) -> torch.Tensor:
    generator = torch.Generator("cpu").manual_seed(seed)
    return initial_noise(_Pipe(), *size, generator, variation)


def test_strength_0_is_the_seed_alone_and_1_the_variation_seed_alone() -> None:
    plain = _noise(7)
    off = GenerationRequest(model="m", prompt="p", variation_seed=99)
    assert NoiseVariation.of(off, 7, 99) is None  # strength 0: the noise is not touched
    at_zero = NoiseVariation(7, 99, 0.0, (0, 0)).apply(plain.clone(), 8)
    assert torch.equal(at_zero, plain)
    assert torch.equal(slerp(0.0, plain[0], _noise(99)[0]), plain[0])
    at_one = _noise(7, variation=NoiseVariation(7, 99, 1.0))
    assert torch.allclose(at_one, _noise(99), atol=1e-5)
    middle = _noise(7, variation=NoiseVariation(7, 99, 0.3))
    assert not torch.allclose(middle, plain, atol=1e-2)
    assert not torch.allclose(middle, _noise(99), atol=1e-2)
    # Spherical, not straight: the mix keeps the noise's spread.
    assert abs(float(middle.std()) - float(plain.std())) < 0.05


def test_slerp_is_a1111s_along_the_height_of_each_channel_and_column() -> None:
    low, high = _noise(1)[0], _noise(2)[0]
    mixed = slerp(0.5, low, high)
    # Column (channel 2, x 3): its own angle, computed alone.
    a, b = low[2, :, 3], high[2, :, 3]
    omega = torch.acos(torch.dot(a / a.norm(), b / b.norm()))
    expected = (torch.sin(0.5 * omega) / torch.sin(omega)) * (a + b)
    assert torch.allclose(mixed[2, :, 3], expected, atol=1e-5)


def test_seed_resize_from_keeps_the_centre_of_the_noise_of_that_size() -> None:
    big = _noise(5, (128, 128))  # latent 16x16
    cropped = _noise(5, (64, 64), NoiseVariation(5, 0, 0.0, (128, 128)))
    assert torch.equal(cropped[0], big[0, :, 4:12, 4:12])
    small = _noise(5, (64, 64))  # latent 8x8
    placed = _noise(5, (128, 128), NoiseVariation(5, 0, 0.0, (64, 64)))
    assert torch.equal(placed[0, :, 4:12, 4:12], small[0])
    # Outside the middle: the seed's own noise at the requested size.
    assert torch.equal(placed[0, :, :4], big[0, :, :4])


def test_place_centred_uses_a1111s_offsets_for_odd_differences() -> None:
    small = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 8, 8)
    large = torch.full((2, 5, 11), -1.0)
    out = place_centred(small, large)
    # dy = (5 - 8) // 2 = -2: rows 2..6 of small; dx = (11 - 8) // 2 = 1: columns 1..8.
    assert torch.equal(out[:, 0:4, 1:9], small[:, 2:6, :])
    assert torch.all(out[:, 4, :] == -1)  # h = 8 + 2 * -2 = 4 rows: the last row is left
    assert torch.all(out[:, :, 0] == -1) and torch.all(out[:, :, 9:] == -1)


def test_a_batch_keeps_the_seed_and_steps_the_variation_seed() -> None:
    request = GenerationRequest(
        model="m",
        prompt="p",
        seed=10,
        batch_size=3,
        variation_seed=2**64 - 2,
        variation_strength=0.2,
    )
    assert image_seeds(request) == [(10, 2**64 - 2), (10, 2**64 - 1), (10, 0)]
    off = request.replace(variation_strength=0.0)
    assert image_seeds(off) == [(10, 2**64 - 2), (11, 2**64 - 2), (12, 2**64 - 2)]


def test_engine_varies_txt2img_and_records_each_image(
    engine: Engine, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[torch.Tensor] = []

    def recording(*args, **kwargs):
        noise = initial_noise(*args, **kwargs)
        drawn.append(noise)
        return noise

    monkeypatch.setattr(generation, "initial_noise", recording)
    base = GenerationRequest(
        model=str(tiny_model),
        prompt="a boat",
        steps=2,
        width=64,
        height=64,
        seed=3,
        variation_seed=40,
    )
    results = list(engine.generate(base.replace(variation_strength=0.5, batch_size=2)))
    seeds = [(r.record.request.seed, r.record.request.variation_seed) for r in results]
    assert seeds == [(3, 40), (3, 41)]
    dtype = drawn[0].dtype  # the model's precision: varied in float32, then cast
    assert torch.equal(drawn[0], _noise(3, variation=NoiseVariation(3, 40, 0.5)).to(dtype))
    assert torch.equal(drawn[1], _noise(3, variation=NoiseVariation(3, 41, 0.5)).to(dtype))
    assert not torch.allclose(drawn[0].float(), _noise(3), atol=1e-2)
    assert not np.array_equal(np.asarray(results[0].image), np.asarray(results[1].image))
    [again] = engine.generate(results[1].record.request)
    assert np.array_equal(np.asarray(again.image), np.asarray(results[1].image))


def test_img2img_adds_the_varied_noise(engine: Engine, tiny_model: Path, init_image: Path) -> None:
    base = GenerationRequest(
        model=str(tiny_model),
        prompt="a boat",
        steps=2,
        width=64,
        height=64,
        seed=3,
        mode=Mode.IMG2IMG,
        init_image=str(init_image),
        strength=0.6,
        variation_seed=8,
    )
    [plain] = engine.generate(base)
    [varied] = engine.generate(base.replace(variation_strength=0.6))
    assert not np.array_equal(np.asarray(plain.image), np.asarray(varied.image))


def test_scheduler_varies_the_noise_once_for_every_call() -> None:
    class Scheduler:
        def add_noise(self, samples, noise, timesteps):
            return samples + noise

    scheduler = Scheduler()
    variation = NoiseVariation(4, 9, 1.0)
    vary_scheduler(scheduler, variation, 8)
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(4))
    zeros = torch.zeros_like(noise)
    first = scheduler.add_noise(zeros, noise, None)
    assert torch.allclose(first, _noise(9), atol=1e-5)
    assert scheduler.add_noise(zeros, noise, None) is not None
    assert torch.equal(scheduler.add_noise(zeros, noise, None), first)


def test_sd_upscale_is_refused_with_a_variation(engine: Engine, tiny_model: Path) -> None:
    request = GenerationRequest(
        model=str(tiny_model),
        prompt="p",
        mode=Mode.IMG2IMG,
        init_image="x.png",
        variation_strength=0.3,
        upscale=Upscale(),
    )
    with pytest.raises(InvalidRequest, match="SD upscale"):
        next(engine.generate(request))


def test_a1111_text_round_trip() -> None:
    text = (
        "a castle, masterpiece\nNegative prompt: blurry\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 512x768, "
        "Variation seed: 456, Variation seed strength: 0.3, Seed resize from: 512x512, "
        'Styles array: "[\\"Fancy\\", \\"Moody, dark\\"]", Model: m'
    )
    parsed = read_parameters(text)
    r = parsed.request
    assert (r.variation_seed, r.variation_strength, r.seed_resize_from) == (456, 0.3, (512, 512))
    assert r.styles == ("Fancy", "Moody, dark")
    assert {"variation_seed", "variation_strength", "seed_resize_from", "styles"} <= parsed.read
    assert not parsed.extras
    written = format_parameters(r, model_name="m")
    assert "Variation seed: 456, Variation seed strength: 0.3, Seed resize from: 512x512" in written
    assert 'Styles array: "[\\"Fancy\\", \\"Moody, dark\\"]"' in written
    assert read_parameters(written).request == r
    plain = format_parameters(r.replace(variation_strength=0.0, seed_resize_from=(0, 0), styles=()))
    assert "Variation" not in plain and "Seed resize" not in plain and "Styles" not in plain


def test_unusable_variation_values_are_kept_as_written() -> None:
    text = "p\nSteps: 20, Seed: 1, Size: 64x64, Variation seed strength: 3, Seed resize from: 7x9"
    parsed = read_parameters(text)
    assert parsed.request.variation_strength == 0.0
    assert parsed.extras == {"Variation seed strength": "3", "Seed resize from": "7x9"}
    assert len(parsed.notes) >= 2


def test_record_keeps_a_64_bit_variation_seed() -> None:
    request = GenerationRequest(
        model="m",
        prompt="p",
        seed=1,
        variation_seed=2**64 - 1,
        variation_strength=0.5,
        seed_resize_from=(256, 512),
        styles=("a",),
    )
    back = ImageRecord.from_json(ImageRecord(request).to_json()).request
    assert back == request


def test_cli_options(
    tiny_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[GenerationRequest] = []
    monkeypatch.setattr(cli_generate, "_run", lambda request, *rest: made.append(request) or 0)
    common = ["generate", "--model", str(tiny_model), "--prompt", "a boat", "--seed", "5"]
    options = ["--variation-strength", "0.25", "--seed-resize-from", "128x96"]
    assert main([*common, "--variation-seed", "-1", *options]) == 0, capsys.readouterr()
    assert main([*common, "--variation-seed", "77", *options]) == 0
    assert main(common) == 0
    drawn, given, off = made
    assert drawn.seed == 5 and 0 <= drawn.variation_seed < 2**32
    assert (drawn.variation_strength, drawn.seed_resize_from) == (0.25, (128, 96))
    assert given.variation_seed == 77
    assert (off.variation_seed, off.variation_strength, off.seed_resize_from) == (0, 0.0, (0, 0))
    assert main([*common, "--seed-resize-from", "100x64"]) == 1
    assert "Seed resize from" in capsys.readouterr().err


def test_cli_refuses_a_bad_resize_size() -> None:
    assert seed_resize_size("512x768") == (512, 768)
    assert seed_resize_size(None) == (0, 0)
    with pytest.raises(InvalidRequest, match="512x512"):
        seed_resize_size("big")


def test_full_strength_inpainting_takes_the_varied_noise_as_latents() -> None:
    class Scheduler:
        def add_noise(self, samples, noise, timesteps):
            return samples + noise

    pipe = SimpleNamespace(
        vae_scale_factor=8,
        vae=SimpleNamespace(config=SimpleNamespace(latent_channels=4)),
        unet=SimpleNamespace(dtype=torch.float32),
        scheduler=Scheduler(),
    )
    variation = NoiseVariation(3, 11, 0.4)
    full = {"mask_image": object(), "strength": 1.0, "width": 64, "height": 64,
            "generator": torch.Generator("cpu").manual_seed(3)}  # fmt: skip
    vary_call(pipe, full, variation)
    assert torch.equal(full["latents"], _noise(3, variation=variation))
    assert "add_noise" not in vars(pipe.scheduler)  # the same noise is not varied twice
    part = {**full, "strength": 0.6}
    del part["latents"]
    vary_call(pipe, part, variation)
    assert "latents" not in part and "add_noise" in vars(pipe.scheduler)
