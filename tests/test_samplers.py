"""Sampler names users know map onto the right diffusers schedulers."""

from __future__ import annotations

import inspect

import diffusers
import pytest

from sdstudio.engine import samplers
from sdstudio.engine.errors import InvalidRequest

SD15_SCHEDULER_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "prediction_type": "epsilon",
    # A model may ship a config that already turns a schedule on.
    "use_karras_sigmas": True,
}


@pytest.mark.parametrize("sampler", samplers.sampler_names())
@pytest.mark.parametrize("schedule", samplers.SCHEDULES)
def test_every_supported_combination_builds(sampler: str, schedule: str) -> None:
    if schedule not in samplers.schedules_for(sampler):
        with pytest.raises(InvalidRequest, match="does not support"):
            samplers.make_scheduler(sampler, schedule, SD15_SCHEDULER_CONFIG)
        return
    scheduler = samplers.make_scheduler(sampler, schedule, SD15_SCHEDULER_CONFIG, seed=1)
    entry = samplers.get_sampler(sampler)
    assert type(scheduler).__name__ == entry.scheduler
    config = scheduler.config
    for name, flag in (
        ("Karras", "use_karras_sigmas"),
        ("Exponential", "use_exponential_sigmas"),
        ("Beta", "use_beta_sigmas"),
    ):
        if entry.sigma_schedules:
            assert config[flag] is (schedule == name), (flag, config[flag])
    if schedule == "SGM Uniform":
        assert config["timestep_spacing"] == "trailing"
    for key, value in entry.options.items():
        assert config[key] == value
    assert config["beta_schedule"] == "scaled_linear"
    scheduler.set_timesteps(8)


def test_table_matches_the_schedulers_diffusers_has() -> None:
    for entry in samplers.SAMPLERS:
        parameters = inspect.signature(getattr(diffusers, entry.scheduler).__init__).parameters
        assert ("use_karras_sigmas" in parameters) is entry.sigma_schedules, entry.name
        assert entry.default_schedule in samplers.schedules_for(entry.name)


def test_formats_table_names_are_all_present() -> None:
    names = set(samplers.sampler_names())
    expected = {
        "Euler",
        "Euler a",
        "LMS",
        "Heun",
        "DPM2",
        "DPM2 a",
        "DPM++ 2M",
        "DPM++ 2M SDE",
        "DPM++ SDE",
        "DDIM",
        "PLMS",
        "UniPC",
        "LCM",
    }
    assert expected <= names


def test_sde_sampler_is_seeded() -> None:
    scheduler = samplers.make_scheduler("DPM++ SDE", "Karras", SD15_SCHEDULER_CONFIG, seed=42)
    assert scheduler.config["noise_sampler_seed"] == 42


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(InvalidRequest) as raised:
        samplers.get_sampler("Euler b")
    message = str(raised.value)
    assert "Unknown sampler 'Euler b'" in message
    assert "DPM++ 2M" in message and "Euler a" in message
    with pytest.raises(InvalidRequest, match="Valid schedule types: Automatic, Karras"):
        samplers.get_schedule("Polyexponential")


def test_names_ignore_case_and_legacy_spellings_split() -> None:
    assert samplers.get_sampler("euler A").name == "Euler a"
    assert samplers.split_sampler_name("DPM++ 2M Karras") == ("DPM++ 2M", "Karras")
    assert samplers.split_sampler_name("DPM++ 2M SDE Exponential") == (
        "DPM++ 2M SDE",
        "Exponential",
    )
    assert samplers.split_sampler_name("DPM++ 2M SDE") == ("DPM++ 2M SDE", "Automatic")
    assert samplers.split_sampler_name("Euler a") == ("Euler a", "Automatic")
    with pytest.raises(InvalidRequest):
        samplers.split_sampler_name("DPM fast")


def test_unsupported_combination_says_what_is_supported() -> None:
    with pytest.raises(InvalidRequest, match="it supports: Automatic, SGM Uniform"):
        samplers.check_combination("Euler a", "Karras")
