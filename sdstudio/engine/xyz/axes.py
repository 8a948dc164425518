"""The kinds of axis an X/Y/Z plot varies, with AUTOMATIC1111's names.

Each kind reads its values (see :mod:`sdstudio.engine.xyz.values`), changes one
setting of a :class:`~sdstudio.engine.request.GenerationRequest` through
``request.replace`` (so every value is checked as any request is) and labels its
values the way A1111's grid does ("Steps: 10"; a Prompt S/R value alone).
Checkpoint and VAE names go through a ``resolve`` function the caller gives (the
CLI's model finder, the app's model list), so this module stays free of model files.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sdstudio.engine.errors import InvalidRequest, SdStudioError
from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.engine.samplers import check_names, get_schedule, split_sampler_name
from sdstudio.engine.xyz import values as syntax

Resolve = Callable[[str], str]
"""Turns a checkpoint or VAE name given on an axis into what the request names."""


def _field(name: str) -> Callable[[GenerationRequest, Any, Sequence[Any]], GenerationRequest]:
    return lambda request, value, _values: request.replace(**{name: value})


def _sampler(request: GenerationRequest, value: str, _values: Sequence[Any]) -> GenerationRequest:
    sampler, schedule = split_sampler_name(value)
    if schedule == "Automatic" and sampler.casefold() == value.strip().casefold():
        schedule = request.schedule
    check_names(sampler, schedule)
    return request.replace(sampler=sampler, schedule=schedule)


def _schedule(request: GenerationRequest, value: str, _values: Sequence[Any]) -> GenerationRequest:
    return request.replace(schedule=get_schedule(value))


def _prompt_sr(request: GenerationRequest, value: str, values: Sequence[Any]) -> GenerationRequest:
    search = values[0]
    if not search:
        raise InvalidRequest("Prompt S/R: the first value (the text to replace) is empty.")
    if search not in request.prompt and search not in request.negative_prompt:
        raise InvalidRequest(
            f"Prompt S/R did not find {search!r} in the prompt or the negative prompt."
        )
    return request.replace(
        prompt=request.prompt.replace(search, value),
        negative_prompt=request.negative_prompt.replace(search, value),
    )


def _prompt_order(
    request: GenerationRequest, value: tuple[str, ...], _values: Sequence[Any]
) -> GenerationRequest:
    """The words of ``value`` put, in that order, where those words stand in the prompt."""
    prompt = request.prompt
    places = sorted((prompt.find(word), word) for word in value)
    missing = [word for place, word in places if place < 0]
    if missing:
        raise InvalidRequest(f"Prompt order did not find {missing[0]!r} in the prompt.")
    parts, rest = [], prompt
    for _place, word in places:
        at = rest.find(word)
        parts.append(rest[:at])
        rest = rest[at + len(word) :]
    return request.replace(prompt="".join(p + w for p, w in zip(parts, value, strict=True)) + rest)


def _denoising(request: GenerationRequest, value: float, _v: Sequence[Any]) -> GenerationRequest:
    """Image-to-image's strength; with text-to-image, the hires fix's (as A1111)."""
    if request.mode in (Mode.IMG2IMG, Mode.INPAINT):
        return request.replace(strength=value)
    if request.hires is not None:
        return request.replace(hires=dataclasses.replace(request.hires, denoise=value))
    raise InvalidRequest("Denoising applies to image-to-image, inpainting or a hires fix.")


def _size(
    request: GenerationRequest, value: tuple[int, int], _v: Sequence[Any]
) -> GenerationRequest:
    return request.replace(width=value[0], height=value[1])


def _hires(name: str) -> Callable[[GenerationRequest, Any, Sequence[Any]], GenerationRequest]:
    def apply(request: GenerationRequest, value: Any, _values: Sequence[Any]) -> GenerationRequest:
        if request.hires is None:
            raise InvalidRequest("The Hires axes need the hires fix turned on.")
        return request.replace(hires=dataclasses.replace(request.hires, **{name: value}))

    return apply


_LORA_TAG = re.compile(r"<(lora|lyco):([^:>]+)(:[^:>]*)?((?::[^>]*)?)>", re.IGNORECASE)


def lora_names(prompt: str) -> list[str]:
    """The names of the ``<lora:…>`` tags of a prompt, each once, in order."""
    return list(dict.fromkeys(match[2].strip() for match in _LORA_TAG.finditer(prompt)))


def _lora_weight(
    request: GenerationRequest, value: tuple[str, float], _values: Sequence[Any]
) -> GenerationRequest:
    name, weight = value
    names = lora_names(request.prompt)
    if not name:
        if len(names) != 1:
            found = f"{len(names)} LoRA tags" if names else "no LoRA tag"
            raise InvalidRequest(f"LoRA weight: the prompt has {found}; name the LoRA (NAME:0.5).")
        name = names[0]
    if name.casefold() not in (n.casefold() for n in names):
        raise InvalidRequest(f"LoRA weight: the prompt has no <lora:{name}:…> tag.")

    def rewrite(match: re.Match[str]) -> str:
        if match[2].strip().casefold() != name.casefold():
            return match[0]
        return f"<{match[1]}:{match[2]}:{weight:g}{match[4]}>"

    return request.replace(prompt=_LORA_TAG.sub(rewrite, request.prompt))


def _lora_values(text: str, what: str, limit: int) -> list[tuple[str, float]]:
    """``0.5, 1`` (the prompt's one LoRA), ``NAME:0.5`` or ``NAME:0-1 [5]``."""
    result: list[tuple[str, float]] = []
    for item in syntax.split_values(text):
        name, _, number = item.rpartition(":")
        weights = syntax.float_values(f'"{number}"', what, limit)
        result += [(name.strip(), weight) for weight in weights]
    return result


def _permutations(text: str, what: str, limit: int) -> list[tuple[str, ...]]:
    words = syntax.split_values(text)
    if len(words) > 6 or math.factorial(len(words)) > limit:
        raise InvalidRequest(
            f"{what}: {len(words)} words make {math.factorial(len(words)):,} orders; "
            f"an axis takes at most {limit}."
        )
    return list(itertools.permutations(words))


def _number_text(value: Any) -> str:
    return str(round(value, 8)) if isinstance(value, float) else str(value)


@dataclass(frozen=True, slots=True)
class AxisKind:
    """One setting a plot can vary."""

    name: str
    read: syntax.ValueReader
    apply: Callable[[GenerationRequest, Any, Sequence[Any]], GenerationRequest]
    show: Callable[[Any], str] = _number_text
    """How one value reads in a label, after the axis's name (or alone: ``plain``)."""
    plain: bool = False
    """Whether labels are the value alone (A1111's Prompt S/R and Sampler)."""
    cost: float = 0.0
    """How slow a change of this setting is: the slowest axis varies least often."""
    resolved: bool = False
    """Whether values are names the caller's ``resolve`` turns into files."""
    random_seed: str = ""
    """For the seed axes: the request field a -1 value stands for a random draw of."""

    def label(self, value: Any) -> str:
        """The value as the grid writes it ("Steps: 10")."""
        shown = self.show(value)
        return shown if self.plain else f"{self.name}: {shown}"


def _checkpoint_label(value: str) -> str:
    return os.path.basename(value.rstrip("/\\")) or value


def _vae_value(request: GenerationRequest, value: str, _v: Sequence[Any]) -> GenerationRequest:
    return request.replace(vae=value)


AXIS_KINDS: dict[str, AxisKind] = {
    kind.name.casefold(): kind
    for kind in (
        AxisKind("Seed", syntax.int_values, _field("seed"), random_seed="seed"),
        AxisKind(
            "Var. seed",
            syntax.int_values,
            _field("variation_seed"),
            random_seed="variation_seed",
        ),
        AxisKind("Var. strength", syntax.float_values, _field("variation_strength")),
        AxisKind("Steps", syntax.int_values, _field("steps")),
        AxisKind("CFG Scale", syntax.float_values, _field("guidance_scale")),
        AxisKind("Distilled CFG Scale", syntax.float_values, _field("distilled_guidance")),
        AxisKind("Sampler", syntax.text_values, _sampler, plain=True),
        AxisKind("Schedule type", syntax.text_values, _schedule),
        AxisKind("Prompt S/R", syntax.text_values, _prompt_sr, plain=True),
        AxisKind("Prompt order", _permutations, _prompt_order, show=", ".join, plain=True),
        AxisKind(
            "Checkpoint name",
            syntax.text_values,
            _field("model"),
            show=_checkpoint_label,
            plain=True,
            cost=1.0,
            resolved=True,
        ),
        AxisKind(
            "VAE", syntax.text_values, _vae_value, show=_checkpoint_label, cost=0.7, resolved=True
        ),
        AxisKind("Denoising", syntax.float_values, _denoising),
        AxisKind("Clip skip", syntax.int_values, _field("clip_skip")),
        AxisKind("Size", syntax.size_values, _size, show=lambda v: f"{v[0]}x{v[1]}"),
        AxisKind("Width", syntax.int_values, _field("width")),
        AxisKind("Height", syntax.int_values, _field("height")),
        AxisKind("Hires steps", syntax.int_values, _hires("steps")),
        AxisKind("Hires upscale", syntax.float_values, _hires("scale")),
        AxisKind("Hires upscaler", syntax.text_values, _hires("upscaler")),
        AxisKind(
            "LoRA weight",
            _lora_values,
            _lora_weight,
            show=lambda v: f"{v[0]} {v[1]:g}" if v[0] else f"{v[1]:g}",
        ),
    )
}
AXIS_NAMES = [kind.name for kind in AXIS_KINDS.values()]
"""The axis names in the order a menu offers them."""
SYNTAX_HINT = '1,2,3 · 1-5 · 1-9 (+2) · 0-1 [5] · "a, b",c'


def axis_kind(name: str) -> AxisKind:
    """The kind named ``name`` (any case), or a clear error listing the valid ones."""
    kind = AXIS_KINDS.get(name.strip().casefold())
    if kind is None:
        raise InvalidRequest(
            f"Unknown X/Y/Z axis {name.strip()!r}; valid: {', '.join(AXIS_NAMES)}."
        )
    return kind


@dataclass(frozen=True, slots=True)
class Axis:
    """An axis of a plot: its kind and its values, in order."""

    kind: AxisKind
    values: tuple[Any, ...]
    text: str = ""
    """The values as the user wrote them (recorded with the grid)."""

    @property
    def labels(self) -> list[str]:
        """Each value's label."""
        return [self.kind.label(value) for value in self.values]

    def apply(self, request: GenerationRequest, index: int) -> GenerationRequest:
        """``request`` with value ``index`` of this axis; an invalid result names the axis
        and the value."""
        value = self.values[index]
        try:
            return self.kind.apply(request, value, self.values)
        except SdStudioError as error:
            shown = self.kind.show(value)
            message = str(error).removeprefix(f"{self.kind.name}: ")
            raise InvalidRequest(f"{self.kind.name} {shown}: {message}") from None


def parse_axis(name: str, text: str, *, limit: int = 100, resolve: Resolve | None = None) -> Axis:
    """An axis of kind ``name`` with the values of ``text`` (at most ``limit`` of them)."""
    kind = axis_kind(name)
    values = kind.read(text, kind.name, limit)
    if not values:
        raise InvalidRequest(f"The {kind.name} axis has no values.")
    if len(values) > limit:
        raise InvalidRequest(
            f"The {kind.name} axis has {len(values):,} values; an axis takes at most {limit}."
        )
    if kind.resolved and resolve is not None:
        values = [_resolved(kind, resolve, value) for value in values]
    return Axis(kind, tuple(values), text.strip())


def _resolved(kind: AxisKind, resolve: Resolve, value: str) -> str:
    try:
        return resolve(value)
    except SdStudioError as error:
        raise InvalidRequest(f"{kind.name} {value}: {error}") from None


def parse_axis_option(option: str, **kwargs: Any) -> Axis:
    """An axis written ``"Steps: 10,20"`` (the CLI's ``--x``)."""
    name, colon, text = option.partition(":")
    if not colon:
        raise InvalidRequest(
            f"Write an axis as 'NAME: VALUES' (for example 'Steps: 10,20'), not {option!r}."
        )
    # A name holding a colon cannot be told from its values: names have none.
    return parse_axis(name, text, **kwargs)
