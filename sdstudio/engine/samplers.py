"""Samplers and schedule types by the names users know.

The names are AUTOMATIC1111's (also used by Forge, SD.Next and Fooocus); each
maps onto a diffusers scheduler built with ``Scheduler.from_config`` from the
model's own scheduler config, so its training schedule is kept.

Flow-matching models (SD 3.x, Flux.1, Flux.2, Z-Image, Qwen-Image) have samplers
of their own under the same names (Euler, Heun, DPM++ 2M, UniPC, LCM; see
:mod:`sdstudio.engine.flow_samplers`) and the schedule types Forge and ComfyUI
give them: Simple (the linear flow sigmas, what Automatic means for them),
Karras, Exponential and Beta. The functions below take ``flow=True`` for them;
:func:`make_scheduler` tells the two kinds apart by the model's scheduler config.
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
    """The scheduler class: diffusers' for Stable Diffusion, one of
    :data:`sdstudio.engine.flow_samplers.FLOW_SCHEDULERS` for flow models."""
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
SIMPLE = "Simple"
FLOW_DEFAULT_SAMPLER = "Euler"
FLOW_DEFAULT_SCHEDULE = SIMPLE

FLOW_SAMPLERS: tuple[Sampler, ...] = (
    Sampler("Euler", "FlowEulerScheduler", {"stochastic_sampling": False}, default_schedule=SIMPLE),
    Sampler("Heun", "FlowHeunScheduler", default_schedule=SIMPLE),
    Sampler(
        "DPM++ 2M",
        "FlowDPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
        default_schedule=SIMPLE,
    ),
    Sampler("UniPC", "FlowUniPCMultistepScheduler", default_schedule=SIMPLE),
    Sampler("LCM", "FlowLCMScheduler", default_schedule=SIMPLE),
)
_FLOW_MODELS = "flow-matching models (SD 3.x, Flux, Z-Image, Qwen-Image)"

# Schedule type -> the scheduler flag that turns it on.
_SIGMA_FLAGS: dict[str, str] = {
    "Karras": "use_karras_sigmas",
    "Exponential": "use_exponential_sigmas",
    "Beta": "use_beta_sigmas",
}
SCHEDULES: tuple[str, ...] = (AUTOMATIC, *_SIGMA_FLAGS, SGM_UNIFORM)
FLOW_SCHEDULES: tuple[str, ...] = (SIMPLE, *_SIGMA_FLAGS)

_BY_NAME = {s.name.casefold(): s for s in SAMPLERS}
_FLOW_BY_NAME = {s.name.casefold(): s for s in FLOW_SAMPLERS}
_SCHEDULES_BY_NAME = {s.casefold(): s for s in (*SCHEDULES, SIMPLE)}


def is_flow_config(config: Mapping[str, Any]) -> bool:
    """Whether a model's scheduler config is a flow-matching one (SD 3.x, Flux, ...).

    Flow schedulers are named ``FlowMatch...`` (or are the ``Flow...`` ones of
    :mod:`sdstudio.engine.flow_samplers`), or sample on flow sigmas; a config
    saved without its class name is told by its shift and its lack of betas.
    """
    name = str(config.get("_class_name") or "")
    return (
        name.startswith("Flow")
        or bool(config.get("use_flow_sigmas"))
        or config.get("prediction_type") == "flow_prediction"
        or (not name and "shift" in config and "beta_schedule" not in config)
    )


def sampler_names(flow: bool = False) -> list[str]:
    """Every sampler name, in the order users see them (flow models' with ``flow``)."""
    return [s.name for s in (FLOW_SAMPLERS if flow else SAMPLERS)]


def offered_samplers(config: Mapping[str, Any]) -> list[str]:
    """The samplers a model with the given scheduler config offers."""
    return sampler_names(flow=is_flow_config(config))


def get_sampler(name: str, flow: bool = False) -> Sampler:
    """Look a sampler up by name, ignoring case; unknown names list the valid ones."""
    key = name.strip().casefold()
    sampler = (_FLOW_BY_NAME if flow else _BY_NAME).get(key)
    if sampler is not None:
        return sampler
    valid = ", ".join(sampler_names(flow))
    if flow and key in _BY_NAME:
        raise InvalidRequest(
            f"Sampler {_BY_NAME[key].name!r} is not available for {_FLOW_MODELS}. "
            f"Their samplers: {valid}."
        )
    kind = f" for {_FLOW_MODELS}" if flow else ""
    raise InvalidRequest(f"Unknown sampler {name!r}. Valid samplers{kind}: {valid}.")


def get_schedule(name: str, flow: bool = False) -> str:
    """Canonical spelling of a schedule type; unknown names list the valid ones.

    With ``flow``, ``Automatic`` gives ``Simple``, what it means for flow models.
    """
    schedule = _SCHEDULES_BY_NAME.get(name.strip().casefold())
    if schedule is None:
        valid = ", ".join(FLOW_SCHEDULES if flow else SCHEDULES)
        raise InvalidRequest(f"Unknown schedule type {name!r}. Valid schedule types: {valid}.")
    return SIMPLE if flow and schedule == AUTOMATIC else schedule


def split_sampler_name(name: str) -> tuple[str, str]:
    """Split a sampler name that may carry its schedule, as A1111 wrote before v1.9.

    ``"DPM++ 2M Karras"`` gives ``("DPM++ 2M", "Karras")``; a plain name gives
    the schedule ``"Automatic"``.
    """
    text = name.strip()
    if text.casefold() in _BY_NAME:
        return get_sampler(text).name, AUTOMATIC
    for schedule in (*SCHEDULES, SIMPLE):
        suffix = " " + schedule.casefold()
        if text.casefold().endswith(suffix):
            return get_sampler(text[: -len(suffix)]).name, schedule
    return get_sampler(text).name, AUTOMATIC


def schedules_for(sampler: str, flow: bool = False) -> list[str]:
    """The schedule types the given sampler supports (on flow models with ``flow``)."""
    entry = get_sampler(sampler, flow)
    if flow:
        return list(FLOW_SCHEDULES) if entry.sigma_schedules else [SIMPLE]
    if entry.sigma_schedules:
        return list(SCHEDULES)
    return [AUTOMATIC, SGM_UNIFORM]


def check_combination(sampler: str, schedule: str, flow: bool = False) -> None:
    """Raise :class:`InvalidRequest` unless the sampler supports the schedule type.

    With ``flow`` the sampler and schedule are a flow model's; ``Automatic``
    is accepted there as ``Simple``.
    """
    entry = get_sampler(sampler, flow)
    canonical = get_schedule(schedule, flow)
    supported = schedules_for(entry.name, flow)
    if canonical not in supported:
        where = f" on {_FLOW_MODELS}" if flow else ""
        raise InvalidRequest(
            f"Sampler {entry.name!r} does not support the {canonical} schedule{where}; "
            f"it supports: {', '.join(supported)}."
        )


def check_names(sampler: str, schedule: str) -> None:
    """Raise :class:`InvalidRequest` unless the sampler and schedule type are known for
    some model; for checks made before the model, and so its kind, is known."""
    if sampler.strip().casefold() not in _FLOW_BY_NAME:
        get_sampler(sampler)
    get_schedule(schedule)


def make_scheduler(
    sampler: str, schedule: str, base_config: Mapping[str, Any], *, seed: int | None = None
) -> Any:
    """Build the diffusers scheduler for a sampler and schedule type.

    ``base_config`` is the model's own scheduler config; its training
    schedule (betas, prediction type; a flow model's shift) is kept and only
    the sampling choices are overridden. A flow-matching config (see
    :func:`is_flow_config`) gets a flow sampler. ``seed`` seeds samplers that
    draw their own noise (DPM++ SDE's Brownian tree, LCM) so that they are
    reproducible too. Raises :class:`InvalidRequest` for a sampler or
    schedule the model does not offer.
    """
    import diffusers

    if is_flow_config(base_config):
        return _make_flow_scheduler(sampler, schedule, base_config, seed)
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


def _make_flow_scheduler(
    sampler: str, schedule: str, base_config: Mapping[str, Any], seed: int | None
) -> Any:
    from sdstudio.engine.flow_samplers import build_flow_scheduler

    entry = get_sampler(sampler, flow=True)
    canonical = get_schedule(schedule, flow=True)
    check_combination(entry.name, canonical, flow=True)
    return build_flow_scheduler(
        entry.scheduler,
        base_config,
        sigma_flag=_SIGMA_FLAGS.get(canonical),
        options=entry.options,
        seed=seed,
    )


def _scheduler_parameters(class_name: str) -> set[str]:
    import diffusers

    scheduler_class = getattr(diffusers, class_name)
    return set(inspect.signature(scheduler_class.__init__).parameters)
