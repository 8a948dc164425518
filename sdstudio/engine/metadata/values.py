"""Turning settings read from other tools' metadata into a valid request.

Other tools accept values sdstudio's :class:`GenerationRequest` refuses (a seed
up to 2**64, a size that is not a multiple of 8, zero steps). Readers collect
raw values and :func:`build_request` keeps what is usable:

- seed: kept as written from 0 to 2**64-1 (ComfyUI, Fooocus and Civitai
  write 48- to 64-bit seeds). Beyond that, negative (other than -1, which
  means random) or written as a floating-point number too large to be exact,
  it is dropped, so the request asks for a random seed, and the notes say so.
  Taking it modulo 2**64 would give a seed that looks like the image's own
  but makes a different image.
- width/height: rounded to the nearest multiple of 8 and clamped to 64..4096.
- steps: below 1 dropped (the default applies), above 500 clamped.
- CFG scale: negative or not finite dropped, above 50 clamped.
- strength: clamped to 0..1, dropped when not finite.
- text fields that are not text are dropped.

Every change is described in the returned notes.

Numbers are read by :func:`as_int` and :func:`as_float`; text and JSON by
:mod:`~sdstudio.engine.metadata.safe_text`, so every string a reader returns can be
stored and shown.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from sdstudio.engine import samplers
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata.safe_text import clean_text
from sdstudio.engine.request import (
    MAX_SEED,
    MAX_SIZE,
    MAX_STEPS,
    MAX_TEXT_ENCODERS,
    MIN_SIZE,
    RANDOM_SEED,
    GenerationRequest,
    round_to_multiple_of_8,
)

P = ParamSpec("P")
R = TypeVar("R")
N = TypeVar("N", int, float)

MAX_GUIDANCE = 50.0
UNKNOWN_MODEL = "unknown"
_TEXT_FIELDS = ("prompt", "negative_prompt", "sampler", "schedule", "vae")
_NUMBER_FIELDS = ("steps", "seed", "width", "height", "guidance_scale", "strength")
# Fields whose readable but out-of-range values already get a note of their own.
_NOTED_WHEN_DROPPED = ("steps", "seed", "guidance_scale")
# Extras that describe how an image was made rather than set anything.
_INFORMATIONAL = re.compile(r"(?i)version|.*\bhash(es)?")
# A floating-point seed above 2**53 has lost digits: it is not the seed the image used.
_EXACT_FLOAT = 2**53


@dataclass(frozen=True, slots=True)
class Parsed:
    """What a format reader found: the request and what was changed to make it valid."""

    request: GenerationRequest
    model_name: str = ""
    """The model as the other tool recorded it (it may be a file name or a path)."""
    notes: tuple[str, ...] = ()
    read: frozenset[str] = frozenset()
    """The request fields whose values came from the image; the others are defaults."""
    model_hash: str = ""
    """The model's hash as the source wrote it: A1111's short hash (the first 10 hex
    digits of the file's SHA-256, also Civitai's AutoV2), a full SHA-256 or BLAKE3."""
    extras: Mapping[str, str] = field(default_factory=dict)
    """Settings read that the request has no field for (a hires pass, ADetailer, a
    refiner), by the source's own key, values as text. Kept to show, never applied."""


def guarded(read: Callable[P, R]) -> Callable[P, R]:
    """Make a format reader raise only :class:`InvalidRequest`, whatever its input holds."""

    @functools.wraps(read)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return read(*args, **kwargs)
        except InvalidRequest:
            raise
        except Exception as error:  # hostile metadata must never crash a reader
            raise InvalidRequest(f"The metadata is malformed ({type(error).__name__}).") from None

    return wrapper


def build_request(
    values: Mapping[str, object],
    *,
    model: str = "",
    model_name: str = "",
    model_hash: str = "",
    extras: Mapping[str, object] | None = None,
) -> Parsed:
    """Build a valid request from raw values, dropping or fixing unusable ones.

    ``values`` may hold ``prompt``, ``negative_prompt``, ``sampler``,
    ``schedule`` (text), ``steps``, ``seed``, ``width``, ``height`` (whole
    numbers, also as text) and ``guidance_scale``, ``strength`` (numbers).
    ``model`` goes into the request (``"unknown"`` when empty).

    A value that is missing or unusable is not invented: the request keeps its
    default, :attr:`Parsed.read` leaves the field out and a note names the
    default used (for the prompt, sampler, schedule, steps, CFG scale, seed and size).

    ``extras`` are settings the request has no field for: their text values are
    kept in :attr:`Parsed.extras` and one note names them.
    """
    notes: list[str] = []
    fields: dict[str, object] = {"model": model.strip() or UNKNOWN_MODEL, "prompt": ""}
    for name in _TEXT_FIELDS:
        value = values.get(name)
        if isinstance(value, str):
            fields[name] = value
    encoders = values.get("text_encoders")
    if isinstance(encoders, tuple | list) and encoders:
        fields["text_encoders"] = tuple(
            clean_text(str(name)) for name in encoders if str(name).strip()
        )[:MAX_TEXT_ENCODERS]
    _fill_schedule(fields, notes)
    _fit_schedule(fields, notes)
    steps = as_int(values.get("steps"))
    if steps is not None:
        if steps < 1:
            notes.append(f"Steps {steps} is unusable; the default is used.")
        else:
            fields["steps"] = _clamped(notes, "Steps", steps, 1, MAX_STEPS)
    seed = _seed(values.get("seed"), notes)
    if seed is not None:
        fields["seed"] = seed
    for name in ("width", "height"):
        size = as_int(values.get(name))
        if size is not None and size > 0:
            fixed = min(MAX_SIZE, max(MIN_SIZE, round_to_multiple_of_8(size)))
            if fixed != size:
                notes.append(f"The {name} {size} was changed to {fixed}.")
            fields[name] = fixed
    cfg = as_float(values.get("guidance_scale"))
    if cfg is not None and cfg >= 0:
        fields["guidance_scale"] = _clamped(notes, "CFG scale", cfg, 0.0, MAX_GUIDANCE)
    elif cfg is not None:
        notes.append(f"CFG scale {cfg:g} is unusable; the default is used.")
    strength = as_float(values.get("strength"))
    if strength is not None:
        fields["strength"] = _clamped(notes, "Strength", strength, 0.0, 1.0)
    read = {name for name in _TEXT_FIELDS if isinstance(values.get(name), str)}
    if not fields.get("vae"):
        read.discard("vae")  # "" is no VAE named, not a VAE read
    read |= {name for name in _NUMBER_FIELDS if name in fields}
    if fields.get("text_encoders"):
        read.add("text_encoders")
    if as_int(values.get("seed")) == RANDOM_SEED:
        read.add("seed")
    try:
        request = GenerationRequest(**fields)  # type: ignore[arg-type]
    except InvalidRequest as error:  # not expected: every field was checked above
        raise InvalidRequest(f"The metadata has an unusable setting: {error}") from None
    notes += _unread_notes(request, read, values)
    kept = _kept_extras(extras or {})
    if any(not _INFORMATIONAL.fullmatch(key) for key in kept):
        notes.append(kept_note(kept))
    return Parsed(
        request, model_name, tuple(notes), frozenset(read), clean_text(model_hash.strip()), kept
    )


def _kept_extras(extras: Mapping[str, object]) -> dict[str, str]:
    """The extras with text keys and text or number values, cleaned, as text."""
    kept: dict[str, str] = {}
    for key, value in extras.items():
        if not isinstance(key, str) or not key.strip():
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            continue
        shown = value if isinstance(value, str) else str(value)
        kept[clean_text(key.strip())] = clean_text(shown.strip())
    return kept


def kept_note(extras: Mapping[str, str]) -> str:
    """The note naming the settings kept from an image that sdstudio does not apply
    (not those that only describe it: the version and hashes of what it used)."""
    settings = [key for key in extras if not _INFORMATIONAL.fullmatch(key)]
    return f"Also in the image, kept but not applied by sdstudio: {', '.join(settings)}."


def _unread_notes(
    request: GenerationRequest, read: set[str], values: Mapping[str, object]
) -> list[str]:
    """A note for each main setting the image did not give, naming the default used."""
    shown = {
        "prompt": ("prompt", "it is left empty"),
        "sampler": ("sampler", f"the default {request.sampler} ({request.schedule}) is used"),
        "steps": ("steps", f"the default {request.steps} is used"),
        "guidance_scale": ("CFG scale", f"the default {request.guidance_scale:g} is used"),
        "seed": ("seed", "a random seed is used"),
        "width": ("width", f"the default {request.width} is used"),
        "height": ("height", f"the default {request.height} is used"),
    }
    notes = []
    for name, (label, outcome) in shown.items():
        if name in read:
            continue
        value = values.get(name)
        if value is None:
            notes.append(f"The image does not say the {label}; {outcome}.")
        elif name not in _NOTED_WHEN_DROPPED or _as_number(name, value) is None:
            notes.append(f"The image's {label} {_shown_value(value)} is unusable; {outcome}.")
    return notes


def _as_number(name: str, value: object) -> int | float | None:
    return as_int(value) if name in ("steps", "seed", "width", "height") else as_float(value)


def _shown_value(value: object) -> str:
    plain = isinstance(value, str | int | float) and not isinstance(value, bool)
    shown = repr(value) if plain else type(value).__name__
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _fill_schedule(fields: dict[str, object], notes: list[str]) -> None:
    """Give a sampler read without a schedule the schedule it uses on Automatic in A1111."""
    sampler = fields.get("sampler")
    if not isinstance(sampler, str) or isinstance(fields.get("schedule"), str):
        return
    try:
        entry = samplers.get_sampler(sampler)
    except InvalidRequest:
        fields["schedule"] = samplers.AUTOMATIC
        return
    fields["schedule"] = entry.default_schedule
    notes.append(
        f"The image does not say the schedule type; {entry.name}'s usual "
        f"{entry.default_schedule} is used."
    )


def _seed(value: object, notes: list[str]) -> int | None:
    """The seed as written, or ``None`` (random) with a note when it is unusable."""
    seed = as_int(value)
    if seed is None or seed == RANDOM_SEED:
        return None
    if not 0 <= seed <= MAX_SEED:
        notes.append(
            f"The seed {_shown_seed(seed)} is outside the range 0 to {MAX_SEED}; "
            "a random seed is used."
        )
        return None
    inexact = isinstance(value, float) or (isinstance(value, str) and not value.strip().isdigit())
    if inexact and seed > _EXACT_FLOAT:
        notes.append(
            f"The seed {value} was stored as a rounded number, so the image's own seed is "
            "unknown; a random seed is used."
        )
        return None
    return seed


def _shown_seed(seed: int) -> str:
    """The seed for a note; one of many digits (which ``str`` may refuse) by its size."""
    return str(seed) if seed.bit_length() <= 80 else "(a number of over 24 digits)"


def _fit_schedule(fields: dict[str, object], notes: list[str]) -> None:
    """Replace a schedule type the sampler cannot use by the sampler's default.

    ComfyUI, for one, allows combinations such as Euler a with Karras that
    the diffusers schedulers do not offer.
    """
    sampler, schedule = fields.get("sampler"), fields.get("schedule")
    if not isinstance(sampler, str) or not isinstance(schedule, str):
        return
    try:
        entry = samplers.get_sampler(sampler)
        canonical = samplers.get_schedule(schedule)
    except InvalidRequest:
        return
    if canonical not in samplers.schedules_for(entry.name):
        fields["schedule"] = entry.default_schedule
        notes.append(
            f"{entry.name} has no {canonical} schedule in sdstudio; "
            f"{entry.default_schedule} is used."
        )


def as_int(value: object) -> int | None:
    """A whole number from an int, an integral float or text; ``None`` otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str) and len(value) <= 100:
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            number = as_float(text)
            return as_int(number) if number is not None else None
    return None


def as_float(value: object) -> float | None:
    """A finite number from an int, a float or text; ``None`` otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | str) and not (isinstance(value, str) and len(value) > 100):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            return None
        return number if math.isfinite(number) else None
    return None


def _clamped(notes: list[str], label: str, value: N, low: N, high: N) -> N:
    fixed = min(high, max(low, value))
    if fixed != value:
        notes.append(f"{label} {value:g} is out of range; {fixed:g} is used.")
    return fixed
