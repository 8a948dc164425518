"""Samplers and schedule types by the names users know.

The names are AUTOMATIC1111's (also used by Forge, SD.Next and Fooocus); each
maps onto a diffusers scheduler built with ``Scheduler.from_config`` from the
model's own scheduler config, so its training schedule is kept.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sdstudio.engine.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class Sampler:
    """A sampler users know by name and the diffusers scheduler behind it."""

    name: str
    scheduler: str
    options: Mapping[str, Any] = field(default_factory=dict)
    sigma_schedules: bool = True
    """Whether the scheduler takes Karras, Exponential and Beta sigmas."""
    default_schedule: str = "Automatic"
    """The schedule type A1111 picks for this sampler when set to Automatic."""


SAMPLERS: tuple[Sampler, ...] = (
    Sampler("Euler", "EulerDiscreteScheduler"),
    Sampler("Euler a", "EulerAncestralDiscreteScheduler", sigma_schedules=False),
    Sampler("LMS", "LMSDiscreteScheduler"),
    Sampler("Heun", "HeunDiscreteScheduler"),
    Sampler("DPM2", "KDPM2DiscreteScheduler", default_schedule="Karras"),
    Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", default_schedule="Karras"),
    Sampler(
        "DPM++ 2M",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
        default_schedule="Karras",
    ),
    Sampler(
        "DPM++ 2M SDE",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
        default_schedule="Karras",
    ),
    Sampler(
        "DPM++ 3M SDE",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
        default_schedule="Exponential",
    ),
    Sampler("DPM++ SDE", "DPMSolverSDEScheduler", default_schedule="Karras"),
    Sampler("DDIM", "DDIMScheduler", sigma_schedules=False),
    Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, sigma_schedules=False),
    Sampler("UniPC", "UniPCMultistepScheduler"),
    Sampler("DEIS", "DEISMultistepScheduler"),
    Sampler("LCM", "LCMScheduler", sigma_schedules=False),
)

AUTOMATIC = "Automatic"
SGM_UNIFORM = "SGM Uniform"

# Schedule type -> the scheduler flag that turns it on.
_SIGMA_FLAGS: dict[str, str] = {
    "Karras": "use_karras_sigmas",
    "Exponential": "use_exponential_sigmas",
    "Beta": "use_beta_sigmas",
}
SCHEDULES: tuple[str, ...] = (AUTOMATIC, *_SIGMA_FLAGS, SGM_UNIFORM)

_BY_NAME = {s.name.casefold(): s for s in SAMPLERS}
_SCHEDULES_BY_NAME = {s.casefold(): s for s in SCHEDULES}


def sampler_names() -> list[str]:
    """Every sampler name, in the order users see them."""
    return [s.name for s in SAMPLERS]


def get_sampler(name: str) -> Sampler:
    """Look a sampler up by name, ignoring case; unknown names list the valid ones."""
    sampler = _BY_NAME.get(name.strip().casefold())
    if sampler is None:
        raise InvalidRequest(
            f"Unknown sampler {name!r}. Valid samplers: {', '.join(sampler_names())}."
        )
    return sampler


def get_schedule(name: str) -> str:
    """Canonical spelling of a schedule type; unknown names list the valid ones."""
    schedule = _SCHEDULES_BY_NAME.get(name.strip().casefold())
    if schedule is None:
        raise InvalidRequest(
            f"Unknown schedule type {name!r}. Valid schedule types: {', '.join(SCHEDULES)}."
        )
    return schedule


def split_sampler_name(name: str) -> tuple[str, str]:
    """Split a sampler name that may carry its schedule, as A1111 wrote before v1.9.

    ``"DPM++ 2M Karras"`` gives ``("DPM++ 2M", "Karras")``; a plain name gives
    the schedule ``"Automatic"``.
    """
    text = name.strip()
    if text.casefold() in _BY_NAME:
        return get_sampler(text).name, AUTOMATIC
    for schedule in SCHEDULES:
        suffix = " " + schedule.casefold()
        if text.casefold().endswith(suffix):
            return get_sampler(text[: -len(suffix)]).name, schedule
    return get_sampler(text).name, AUTOMATIC


def schedules_for(sampler: str) -> list[str]:
    """The schedule types the given sampler supports."""
    if get_sampler(sampler).sigma_schedules:
        return list(SCHEDULES)
    return [AUTOMATIC, SGM_UNIFORM]


def check_combination(sampler: str, schedule: str) -> None:
    """Raise :class:`InvalidRequest` unless the sampler supports the schedule type."""
    entry = get_sampler(sampler)
    canonical = get_schedule(schedule)
    supported = schedules_for(entry.name)
    if canonical not in supported:
        raise InvalidRequest(
            f"Sampler {entry.name!r} does not support the {canonical} schedule; "
            f"it supports: {', '.join(supported)}."
        )


def make_scheduler(
    sampler: str, schedule: str, base_config: Mapping[str, Any], *, seed: int | None = None
) -> Any:
    """Build the diffusers scheduler for a sampler and schedule type.

    ``base_config`` is the model's own scheduler config; its training
    schedule (betas, prediction type) is kept and only the sampling choices
    are overridden. ``seed`` seeds samplers that draw their own noise
    (DPM++ SDE's Brownian tree) so that they are reproducible too.
    """
    import diffusers

    entry = get_sampler(sampler)
    canonical = get_schedule(schedule)
    check_combination(entry.name, canonical)
    accepted = _scheduler_parameters(entry.scheduler)
    overrides: dict[str, Any] = dict(entry.options)
    for flag in _SIGMA_FLAGS.values():
        if flag in accepted:
            overrides[flag] = False
    if canonical in _SIGMA_FLAGS:
        overrides[_SIGMA_FLAGS[canonical]] = True
    elif canonical == SGM_UNIFORM and "timestep_spacing" in accepted:
        overrides["timestep_spacing"] = "trailing"
    if seed is not None and "noise_sampler_seed" in accepted:
        overrides["noise_sampler_seed"] = seed
    scheduler_class = getattr(diffusers, entry.scheduler)
    return scheduler_class.from_config(dict(base_config), **overrides)


def _scheduler_parameters(class_name: str) -> set[str]:
    import diffusers

    scheduler_class = getattr(diffusers, class_name)
    return set(inspect.signature(scheduler_class.__init__).parameters)
