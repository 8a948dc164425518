"""Web demos: the settings JSON of diffusers apps (Hugging Face Spaces and the like).

Such apps save the arguments they gave a diffusers pipeline as a JSON object,
in the ``parameters`` text (or EXIF UserComment), or in ``Comment`` or
``Description``: ``prompt``, ``negative_prompt``, ``num_inference_steps``,
``guidance_scale``, ``seed``, ``resolution`` (``"896 x 1152"``) or ``width``
and ``height``, ``sampler`` or ``scheduler`` (an A1111 name such as
``"DPM++ 2M Karras"``, or a diffusers class such as
``"EulerAncestralDiscreteScheduler"``), ``model`` (or ``model_id``) and
``strength``.

The shape is strict, since other tools write JSON with a ``prompt`` too: a
text ``prompt`` next to ``num_inference_steps`` (the diffusers argument), or
next to ``guidance_scale`` without Fooocus's ``steps`` and ``base_model``.
Texts with a ``fooocus_scheme`` and ComfyUI graphs are never read here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from sdstudio.engine import samplers
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import names
from sdstudio.engine.metadata.a1111 import PARAMETERS_KEY
from sdstudio.engine.metadata.fooocus import SCHEME_KEY
from sdstudio.engine.metadata.safe_text import load_json, text
from sdstudio.engine.metadata.values import Parsed, build_request, guarded

COMMENT_KEY = "Comment"
DESCRIPTION_KEY = "Description"
KEYS = (PARAMETERS_KEY, COMMENT_KEY, DESCRIPTION_KEY)
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_RESOLUTION = re.compile(r"(\d{1,5})\s*[x×*]\s*(\d{1,5})", re.IGNORECASE)
# Fooocus's JSON has a prompt and guidance_scale too; these keys are its own.
_FOOOCUS_KEYS = ("steps", "base_model", "full_prompt", "performance", "sharpness")
# The sampler of a diffusers scheduler class, as built with its default options.
_BY_CLASS = {entry.scheduler.casefold(): entry.name for entry in reversed(samplers.SAMPLERS)}


@guarded
def read_webdemo(texts: Mapping[str, str], size: tuple[int, int] = (0, 0)) -> Parsed:
    """Read a web demo's settings JSON; raise :class:`InvalidRequest` when there is none.

    ``size`` (the image's own) stands in for a width or height the JSON lacks.
    """
    data, key = _settings(texts)
    values: dict[str, object] = {
        "prompt": data.get("prompt"),
        "negative_prompt": data.get("negative_prompt"),
        "steps": data.get("num_inference_steps"),
        "guidance_scale": data.get("guidance_scale"),
        "seed": data.get("seed"),
        "width": data.get("width"),
        "height": data.get("height"),
        "strength": data.get("strength"),
    }
    resolution = _RESOLUTION.fullmatch(text(data.get("resolution")).strip())
    if resolution:
        values["width"], values["height"] = resolution.groups()
    values["width"] = values["width"] or size[0] or None
    values["height"] = values["height"] or size[1] or None
    notes = list(_sampler(data, values))
    if key != PARAMETERS_KEY:
        notes.append(f"The settings were read from the image's {key} text.")
    recorded = (text(data.get("model")) or text(data.get("model_id"))).strip()
    parsed = build_request(values, model=_model(recorded), model_name=recorded)
    return dataclasses.replace(parsed, notes=(*notes, *parsed.notes))


def _model(recorded: str) -> str:
    """A Hugging Face repository id (``org/name``) as it is, the catalog's name for it;
    the name of a model file otherwise."""
    if _REPO_ID.fullmatch(recorded) and names.model_name(recorded) == recorded.split("/")[1]:
        return recorded
    return names.model_name(recorded)


def _settings(texts: Mapping[str, str]) -> tuple[dict[str, object], str]:
    """The first text holding a web demo's settings, and its key."""
    if texts.get(SCHEME_KEY, "").strip():
        raise InvalidRequest("No web demo settings.")
    for key in KEYS:
        value = texts.get(key, "")
        data = load_json(value) if value.lstrip().startswith("{") else None
        if isinstance(data, dict) and _has_shape(data):
            return data, key
    raise InvalidRequest("No web demo settings.")


def _has_shape(data: dict[str, object]) -> bool:
    """Whether ``data`` holds a diffusers app's settings and no other tool's."""
    if not isinstance(data.get("prompt"), str):
        return False
    if any(isinstance(node, dict) and "class_type" in node for node in data.values()):
        return False
    if "num_inference_steps" in data:
        return True
    return "guidance_scale" in data and not any(key in data for key in _FOOOCUS_KEYS)


def _sampler(data: Mapping[str, object], values: dict[str, object]) -> tuple[str, ...]:
    """Put the sampler and schedule into ``values``; the notes on them."""
    sampler, scheduler = text(data.get("sampler")).strip(), text(data.get("scheduler")).strip()
    if not sampler:
        sampler, scheduler = scheduler, ""
    elif scheduler.casefold() in _BY_CLASS:
        scheduler = ""  # a diffusers class says nothing more than the sampler's name
    if not sampler:
        return ()
    by_class = _BY_CLASS.get(sampler.casefold())
    if by_class is not None:
        # A diffusers class built with its defaults uses its own timestep spacing.
        values["sampler"], values["schedule"] = by_class, samplers.AUTOMATIC
        return ()
    return names.sampler_and_schedule(sampler, scheduler).put(values)
