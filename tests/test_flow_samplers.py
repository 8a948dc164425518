"""Flow-matching samplers (SD 3.x, Flux.1, Flux.2, Z-Image, Qwen-Image) by the names
Forge and ComfyUI users know, driven the way each diffusers pipeline drives them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux import pipeline_flux
from diffusers.pipelines.flux2 import pipeline_flux2_klein
from diffusers.pipelines.qwenimage import pipeline_qwenimage
from diffusers.pipelines.stable_diffusion_3 import pipeline_stable_diffusion_3
from diffusers.pipelines.z_image import pipeline_z_image

from sdstudio.engine import samplers
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata.a1111 import read_parameters
from sdstudio.engine.metadata.names import comfyui_sampler

EULER = "FlowMatchEulerDiscreteScheduler"
# The scheduler configs the models ship (scheduler/scheduler_config.json).
FLUX = {
    "_class_name": EULER,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}
SD3 = {"_class_name": EULER, "num_train_timesteps": 1000, "shift": 3.0}
ZIMAGE = {**SD3, "use_dynamic_shifting": False}
QWEN = {
    **FLUX,
    "shift": 1.0,
    "max_shift": 0.9,
    "max_image_seq_len": 8192,
    "shift_terminal": 0.02,
    "time_shift_type": "exponential",
}
FLUX2 = {**FLUX, "time_shift_type": "exponential"}
SD15 = {
    "_class_name": "PNDMScheduler",
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
}
SIGMA_FLAGS = {
    "Karras": "use_karras_sigmas",
    "Exponential": "use_exponential_sigmas",
    "Beta": "use_beta_sigmas",
}
FAMILIES = {"flux": FLUX, "sd3": SD3, "zimage": ZIMAGE, "qwen": QWEN, "flux2": FLUX2}
COMBINATIONS = [
    (sampler, schedule)
    for sampler in samplers.sampler_names(flow=True)
    for schedule in samplers.schedules_for(sampler, flow=True)
]


def mu_for(config, seq_len: int) -> float:
    return pipeline_flux.calculate_shift(
        seq_len,
        config.get("base_image_seq_len", 256),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5),
        config.get("max_shift", 1.15),
    )


def pipeline_timesteps(family: str, scheduler, steps: int, seq_len: int = 4096) -> torch.Tensor:
    """Set the scheduler up as the family's txt2img pipeline does (diffusers 0.42)."""
    config = scheduler.config
    if family == "sd3":  # pipeline_stable_diffusion_3.py, "Prepare timesteps"
        kwargs = {"mu": mu_for(config, seq_len)} if config.get("use_dynamic_shifting") else {}
        retrieve = pipeline_stable_diffusion_3.retrieve_timesteps
        timesteps, _ = retrieve(scheduler, steps, "cpu", sigmas=None, **kwargs)
        return timesteps
    if family in ("flux", "flux2"):  # pipeline_flux.py / pipeline_flux2_klein.py
        sigmas = np.linspace(1.0, 1 / steps, steps)
        if hasattr(config, "use_flow_sigmas") and config.use_flow_sigmas:
            sigmas = None
        if family == "flux":
            mu, retrieve = mu_for(config, seq_len), pipeline_flux.retrieve_timesteps
        else:
            mu = pipeline_flux2_klein.compute_empirical_mu(seq_len, steps)
            retrieve = pipeline_flux2_klein.retrieve_timesteps
        timesteps, _ = retrieve(scheduler, steps, "cpu", sigmas=sigmas, mu=mu)
    elif family == "zimage":  # pipeline_z_image.py: its own sigmas, mu always
        sigmas = pipeline_z_image.get_default_z_image_sigmas(steps)
        retrieve = pipeline_z_image.retrieve_timesteps
        timesteps, _ = retrieve(scheduler, steps, "cpu", sigmas=sigmas, mu=mu_for(config, seq_len))
    else:  # pipeline_qwenimage.py: linear sigmas and mu always
        sigmas = np.linspace(1.0, 1 / steps, steps)
        retrieve = pipeline_qwenimage.retrieve_timesteps
        timesteps, _ = retrieve(scheduler, steps, "cpu", sigmas=sigmas, mu=mu_for(config, seq_len))
    scheduler.set_begin_index(0)
    return timesteps


# A known flow: data N(0.3, 0.5²) per value, x_t = (1 - t) x0 + t noise. The exact
# velocity is known, so a sampler that works ends near the data's mean and spread.
MEAN, SPREAD = 0.3, 0.5


def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    sigma = float(t) / 1000
    alpha = 1 - sigma
    variance = alpha**2 * SPREAD**2 + sigma**2
    offset = x - alpha * MEAN
    x0 = MEAN + alpha * SPREAD**2 / variance * offset
    return sigma / variance * offset - x0


def sample(family: str, sampler: str, schedule: str, steps: int, seed: int = 1) -> torch.Tensor:
    scheduler = samplers.make_scheduler(sampler, schedule, FAMILIES[family], seed=seed)
    timesteps = pipeline_timesteps(family, scheduler, steps, seq_len=1024)
    x = torch.randn(1, 20_000, generator=torch.Generator().manual_seed(0))
    for t in timesteps:
        x = scheduler.step(velocity(x, t), t, x, return_dict=False)[0]
    return x


# --- names -------------------------------------------------------------------------


def test_flow_configs_are_told_from_stable_diffusion_ones() -> None:
    for config in FAMILIES.values():
        assert samplers.is_flow_config(config)
        built = samplers.make_scheduler("DPM++ 2M", "Karras", config)
        assert samplers.is_flow_config({**built.config, "_class_name": type(built).__name__})
    assert samplers.is_flow_config({"shift": 3.0, "num_train_timesteps": 1000})
    assert samplers.is_flow_config({"_class_name": "X", "use_flow_sigmas": True})
    assert not samplers.is_flow_config(SD15)
    assert not samplers.is_flow_config({"beta_schedule": "linear", "num_train_timesteps": 1000})
    assert samplers.offered_samplers(FLUX) == samplers.sampler_names(flow=True)
    assert samplers.offered_samplers(SD15) == samplers.sampler_names()


def test_flow_samplers_schedules_and_defaults() -> None:
    assert samplers.sampler_names(flow=True) == ["Euler", "Heun", "DPM++ 2M", "UniPC", "LCM"]
    assert "Euler a" in samplers.sampler_names()
    for name in samplers.sampler_names(flow=True):
        assert samplers.schedules_for(name, flow=True) == [
            "Simple",
            "Karras",
            "Exponential",
            "Beta",
        ]
        assert samplers.get_sampler(name, flow=True).default_schedule == "Simple"
    assert (samplers.FLOW_DEFAULT_SAMPLER, samplers.FLOW_DEFAULT_SCHEDULE) == ("Euler", "Simple")
    assert samplers.get_schedule("automatic", flow=True) == "Simple"
    assert samplers.get_schedule("simple") == "Simple"
    assert samplers.get_schedule("Automatic") == "Automatic"
    samplers.check_combination("Euler", "Automatic", flow=True)
    assert samplers.split_sampler_name("Euler Simple") == ("Euler", "Simple")


@pytest.mark.parametrize(
    ("sampler", "schedule", "message"),
    [
        ("Euler a", "Simple", "'Euler a' is not available for flow-matching models"),
        ("DPM++ 2M SDE", "Karras", r"Their samplers: Euler, Heun, DPM\+\+ 2M, UniPC, LCM"),
        ("DDIM", "Simple", "not available for flow-matching"),
        ("Euler b", "Simple", "Unknown sampler 'Euler b'. Valid samplers for flow-matching"),
        ("Euler", "SGM Uniform", "it supports: Simple, Karras, Exponential, Beta"),
        ("UniPC", "Polyexponential", "Valid schedule types: Simple, Karras, Exponential, Beta"),
    ],
)
def test_what_flow_models_lack_is_refused_naming_what_they_have(
    sampler: str, schedule: str, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        samplers.check_combination(sampler, schedule, flow=True)
    for config in (FLUX, SD3):
        with pytest.raises(InvalidRequest, match=message):
            samplers.make_scheduler(sampler, schedule, config)


def test_names_are_checked_before_the_model_is_known() -> None:
    samplers.check_names("Euler a", "SGM Uniform")
    samplers.check_names("euler", "simple")
    with pytest.raises(InvalidRequest, match="Unknown sampler 'Nope'"):
        samplers.check_names("Nope", "Simple")
    with pytest.raises(InvalidRequest, match="Unknown schedule type 'Polyexponential'"):
        samplers.check_names("Euler", "Polyexponential")


def test_stable_diffusion_keeps_its_samplers_and_refuses_simple() -> None:
    with pytest.raises(InvalidRequest, match="it supports: Automatic, Karras"):
        samplers.check_combination("Euler", "Simple")
    with pytest.raises(InvalidRequest, match="does not support the Simple schedule"):
        samplers.make_scheduler("Euler", "Simple", SD15)
    scheduler = samplers.make_scheduler("Euler a", "Automatic", SD15)
    assert type(scheduler).__name__ == "EulerAncestralDiscreteScheduler"


def test_other_tools_flow_names_reach_the_flow_schedules() -> None:
    for names, expected in [
        (("euler", "simple"), ("Euler", "Simple")),
        (("dpmpp_2m", "beta"), ("DPM++ 2M", "Beta")),
        (("uni_pc", "karras"), ("UniPC", "Karras")),
        (("heun", "normal"), ("Heun", "Simple")),
        (("lcm", "exponential"), ("LCM", "Exponential")),
    ]:
        sampler, schedule = comfyui_sampler(*names)
        samplers.check_combination(sampler, schedule, flow=True)
        flow_schedule = samplers.get_schedule(schedule, flow=True)
        assert (sampler, flow_schedule) == expected
    forge = "a boat\nSteps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Seed: 5"
    parsed = read_parameters(forge)
    request = parsed.request
    assert (request.sampler, request.schedule) == ("Euler", "Automatic")
    assert any("on flow-matching models (Flux" in note for note in parsed.notes)
    scheduler = samplers.make_scheduler(request.sampler, request.schedule, FLUX)
    assert not scheduler.config.use_karras_sigmas


# --- the schedulers, driven as the pipelines drive them -----------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("sampler", "schedule"), COMBINATIONS)
def test_every_offered_combination_runs_as_its_pipeline_calls_it(
    family: str, sampler: str, schedule: str
) -> None:
    config = FAMILIES[family]
    entry = samplers.get_sampler(sampler, flow=True)
    for steps in (1, 2, 9):
        scheduler = samplers.make_scheduler(sampler, schedule, config, seed=3)
        assert type(scheduler).__name__ == entry.scheduler
        for name, flag in SIGMA_FLAGS.items():
            assert scheduler.config[flag] is (schedule == name)
        # The pipelines work mu out from these.
        for key in (
            "shift",
            "base_shift",
            "max_shift",
            "max_image_seq_len",
            "use_dynamic_shifting",
        ):
            if key in config:
                assert scheduler.config[key] == config[key], key
        timesteps = pipeline_timesteps(family, scheduler, steps)
        sigmas = scheduler.sigmas.numpy()
        visited = np.unique(sigmas)[::-1]
        assert len(visited) == steps + 1 and visited[-1] == 0
        assert 0.99 < sigmas[0] <= 1 and np.all(np.diff(sigmas) <= 0)
        assert len(timesteps) == (2 * steps - 1 if sampler == "Heun" else steps)
        assert np.allclose(timesteps.numpy() / 1000, sigmas[: len(timesteps)], atol=1e-5)
        latents = torch.randn(1, 64, 16, generator=torch.Generator().manual_seed(0))
        for t in timesteps:
            noise_pred = torch.randn(latents.shape, generator=torch.Generator().manual_seed(1))
            latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
        assert latents.shape == (1, 64, 16) and torch.isfinite(latents).all()


def test_simple_is_comfyuis_linear_sigmas_shifted_on_every_pipeline() -> None:
    expected = 3.0 * (s := np.linspace(1, 1 / 8, 8)) / (1 + 2.0 * s)
    for family in ("sd3", "zimage"):
        for sampler in samplers.sampler_names(flow=True):
            scheduler = samplers.make_scheduler(sampler, "Simple", FAMILIES[family])
            pipeline_timesteps(family, scheduler, 8)
            visited = np.unique(scheduler.sigmas.numpy())[::-1]
            assert np.allclose(visited, [*expected, 0], atol=2e-6), (family, sampler)
    # Flux: the sigmas diffusers' own Euler scheduler makes for the pipeline.
    euler = samplers.make_scheduler("Euler", "Simple", FLUX)
    stock = FlowMatchEulerDiscreteScheduler.from_config(FLUX)
    for scheduler in (euler, stock):
        pipeline_timesteps("flux", scheduler, 12)
    assert torch.equal(euler.sigmas, stock.sigmas)


@pytest.mark.parametrize("family", FAMILIES)
def test_karras_exponential_and_beta_respace_between_simples_ends(family: str) -> None:
    ends = {}
    for schedule in ("Simple", "Karras", "Exponential", "Beta"):
        scheduler = samplers.make_scheduler("DPM++ 2M", schedule, FAMILIES[family])
        pipeline_timesteps(family, scheduler, 12)
        sigmas = scheduler.sigmas.numpy()
        assert np.all(np.diff(sigmas) < 0), schedule
        ends[schedule] = (round(float(sigmas[0]), 5), round(float(sigmas[-2]), 5))
    assert len(set(ends.values())) == 1, ends


@pytest.mark.parametrize(("sampler", "schedule"), COMBINATIONS)
def test_samplers_solve_a_known_flow(sampler: str, schedule: str) -> None:
    for family in ("flux", "sd3", "qwen"):
        x = sample(family, sampler, schedule, steps=20)
        assert abs(float(x.mean()) - MEAN) < 0.015, family
        if sampler == "LCM":  # a consistency sampler: the last step's best guess, less spread
            assert 0.25 < float(x.std()) < SPREAD, family
        else:
            assert abs(float(x.std()) - SPREAD) < 0.075, family


def test_higher_order_samplers_are_closer_than_euler_in_few_steps() -> None:
    error = {
        name: abs(float(sample("flux", name, "Simple", steps=8).std()) - SPREAD)
        for name in ("Euler", "Heun", "DPM++ 2M", "UniPC")
    }
    assert max(error["Heun"], error["DPM++ 2M"], error["UniPC"]) < error["Euler"]


@pytest.mark.parametrize("sampler", samplers.sampler_names(flow=True))
@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_img2img_and_inpaint_noise_the_image_at_the_starting_sigma(
    family: str, sampler: str
) -> None:
    """pipeline_flux_img2img / _inpaint: skip the first steps, ``scale_noise`` the image
    to the starting sigma, and (inpaint) re-noise the kept area after every step."""
    steps, strength = 30, 0.6
    scheduler = samplers.make_scheduler(sampler, "Simple", FAMILIES[family], seed=2)
    pipeline_timesteps(family, scheduler, steps, seq_len=1024)
    t_start = int(max(steps - min(steps * strength, steps), 0))
    timesteps = scheduler.timesteps[t_start * scheduler.order :]
    scheduler.set_begin_index(t_start * scheduler.order)
    generator = torch.Generator().manual_seed(4)
    image = MEAN + SPREAD * torch.randn(1, 20_000, generator=generator)
    noise = torch.randn(image.shape, generator=generator)
    x = scheduler.scale_noise(image, timesteps[:1], noise)
    start = float(scheduler.sigmas[t_start * scheduler.order])
    assert torch.allclose(x, start * noise + (1 - start) * image)
    assert abs(start - float(timesteps[0]) / 1000) < 1e-5
    for i, t in enumerate(timesteps):
        x = scheduler.step(velocity(x, t), t, x, return_dict=False)[0]
        if i < len(timesteps) - 1:
            kept = scheduler.scale_noise(image, torch.tensor([timesteps[i + 1]]), noise)
            sigma = float(scheduler.sigmas[scheduler.step_index])
            assert torch.allclose(kept, sigma * noise + (1 - sigma) * image)
    assert abs(float(x.mean()) - MEAN) < 0.02
    low = 0.25 if sampler == "LCM" else 0.44
    assert low < float(x.std()) < 0.53


def test_lcm_noise_follows_the_seed() -> None:
    def run(seed: int) -> torch.Tensor:
        x = torch.zeros(1, 64, 16)
        scheduler = samplers.make_scheduler("LCM", "Simple", FLUX, seed=seed)
        for _ in range(2):  # the same scheduler set up again repeats its noise
            x0 = torch.zeros(1, 64, 16)
            for t in pipeline_timesteps("flux", scheduler, 4):
                x0 = scheduler.step(torch.ones_like(x0), t, x0, return_dict=False)[0]
            assert x.abs().sum() == 0 or torch.equal(x, x0)
            x = x0
        return x

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


# --- real pipelines (tiny random weights) -----------------------------------------


@pytest.mark.parametrize(
    ("build", "extra_pipeline"),
    [
        ("build_tiny_flux", "FluxInpaintPipeline"),
        ("build_tiny_sd3", "StableDiffusion3Img2ImgPipeline"),
        ("build_tiny_zimage", "ZImageImg2ImgPipeline"),
        ("build_tiny_qwen_image", "QwenImageInpaintPipeline"),
        ("build_tiny_flux2_klein", "Flux2KleinInpaintPipeline"),
    ],
)
@pytest.mark.slow
def test_real_pipelines_run_every_flow_sampler(build: str, extra_pipeline: str) -> None:
    import diffusers
    from PIL import Image

    from sdstudio.testing import tiny_flow

    pipe = getattr(tiny_flow, build)()
    other = getattr(diffusers, extra_pipeline).from_pipe(pipe)
    config = dict(pipe.scheduler.config)
    image = Image.new("RGB", (64, 64), (200, 40, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    for sampler in samplers.offered_samplers(config):
        for target, extra in ((pipe, {}), (other, {"image": image, "strength": 0.6})):
            if "Inpaint" in type(target).__name__:
                extra["mask_image"] = mask
            results = []
            for _ in range(2):
                target.scheduler = samplers.make_scheduler(sampler, "Karras", config, seed=5)
                out = target(
                    prompt="a red boat",
                    num_inference_steps=3,
                    height=64,
                    width=64,
                    generator=torch.Generator().manual_seed(1),
                    output_type="np",
                    **extra,
                )
                results.append(out.images)
            assert np.isfinite(results[0]).all(), (sampler, type(target).__name__)
            assert np.array_equal(results[0], results[1]), (sampler, type(target).__name__)
