"""The model a command names, and the settings that suit it for the options not given.

``generate`` fills steps, CFG, sampler, schedule and size from
:func:`sdstudio.engine.models.defaults.defaults_for`, as the app does when a
model is picked, and says which ones it took.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from sdstudio.engine import samplers
from sdstudio.engine.models.lookup import ModelFinder, display_name


@dataclass(frozen=True, slots=True)
class ChosenModel:
    """A model named on the command line."""

    request_model: str
    """What the request keeps: the absolute path given, or the catalog's name."""
    path: Path
    name: str
    """The name users see (``org/name`` for the Hugging Face cache)."""
    family: str


def choose_model(argument: str, finder: ModelFinder) -> ChosenModel:
    """The model ``--model`` names: a path (relative ones too) or a name the catalog lists."""
    from sdstudio.engine.models.identification import family_of

    if os.path.exists(os.path.expanduser(argument)):
        path = Path(argument).expanduser().resolve()
        return ChosenModel(str(path), path, display_name(path), family_of(path)[0])
    path, entry = finder.find(argument)
    if entry is None:
        return ChosenModel(str(path), path, display_name(path), family_of(path)[0])
    return ChosenModel(entry.name, path, entry.name, entry.family)


@dataclass(frozen=True, slots=True)
class FilledSettings:
    """Steps, CFG, sampler, schedule and size for a request; a size of ``None`` is not set."""

    steps: int
    guidance_scale: float
    sampler: str
    schedule: str
    width: int | None
    height: int | None
    notice: str | None
    """The sentence saying which settings came from the model's defaults."""


def settings_for(
    args: argparse.Namespace, model: ChosenModel, *, with_size: bool
) -> FilledSettings:
    """The options given, and the model's defaults for the others.

    ``with_size``: whether the defaults may set the size (not when an init
    image gives it). A sampler given without a schedule gets its own default
    schedule (``Euler`` is A1111's plain Euler), unless its name carries one
    (``DPM++ 2M Karras``).
    """
    from sdstudio.engine.models.defaults import defaults_for

    d = defaults_for(model.family, model.name)
    taken: list[tuple[str, str]] = []
    steps, cfg = args.steps, args.cfg
    if steps is None:
        steps = d.steps
        taken.append((f"{d.steps} step{'s' if d.steps != 1 else ''}", "--steps"))
    if cfg is None:
        cfg = d.guidance_scale
        taken.append((f"CFG {d.guidance_scale:g}", "--cfg"))
    if args.sampler is None:
        sampler, implied = d.sampler, samplers.AUTOMATIC
        taken.append((d.sampler, "--sampler"))
    else:
        sampler, implied = samplers.split_sampler_name(args.sampler)
    if args.schedule is not None:
        schedule = samplers.get_schedule(args.schedule)
    elif implied != samplers.AUTOMATIC:
        schedule = implied
    elif args.sampler is None:
        schedule = d.schedule
        taken.append((d.schedule, "--schedule"))
    else:
        schedule = samplers.get_sampler(sampler).default_schedule
    width, height = args.width, args.height
    if with_size:
        if width is None and height is None:
            width, height = d.width, d.height
            taken.append((f"{d.width}×{d.height}", "--width/--height"))
        elif width is None:
            width = d.width
            taken.append((f"width {d.width}", "--width"))
        elif height is None:
            height = d.height
            taken.append((f"height {d.height}", "--height"))
    notice = None
    if taken:
        values = ", ".join(value for value, _ in taken)
        options = ", ".join(option for _, option in taken)
        notice = (
            f"Using the settings that suit {model.name}: {values} "
            f"(give {options} to change {'them' if len(taken) > 1 else 'it'})."
        )
    return FilledSettings(steps, cfg, sampler, schedule, width, height, notice)
