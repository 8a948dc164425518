"""TensorArt: the ``generation_data`` PNG text chunk.

TensorArt's images carry ``generation_data``, a JSON object with the
settings as its site shows them: ``prompt``, ``negativePrompt``, ``steps``,
``cfgScale``, ``seed``, ``width``, ``height``, ``sampler`` (or
``samplerName``; an A1111 name such as ``"DPM++ 2M Karras"``), ``scheduler``
when the site names one apart, ``clipSkip`` and ``baseModel`` (an object with
``modelFileName`` and ``hash``, or the model's name as text). The same image
usually holds the ComfyUI graph TensorArt ran (``prompt`` and ``workflow``);
``generation_data`` is preferred, since the graph goes through TensorArt's
own nodes and model ids, and the notes say so. When ``generation_data``
names no sampler, the sampler and schedule are taken from that graph (with a
note); without a graph that gives them, they are left unread.

Only JSON with a text ``prompt`` and one of ``steps``, ``cfgScale`` or
``seed`` is read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import names
from sdstudio.engine.metadata.comfyui import read_comfyui
from sdstudio.engine.metadata.safe_text import load_json, text
from sdstudio.engine.metadata.values import Parsed, as_int, build_request, guarded
from sdstudio.engine.request import MAX_CLIP_SKIP

GENERATION_DATA_KEY = "generation_data"
_GRAPH_KEYS = ("prompt", "workflow")
_SETTINGS = ("steps", "cfgScale", "seed")


@guarded
def read_tensorart(texts: Mapping[str, str], size: tuple[int, int] = (0, 0)) -> Parsed:
    """Read TensorArt's ``generation_data``; raise :class:`InvalidRequest` without it.

    ``size`` (the image's own) stands in for a width or height the JSON lacks.
    """
    data = _generation_data(texts.get(GENERATION_DATA_KEY, ""))
    values: dict[str, object] = {
        "prompt": data.get("prompt"),
        "negative_prompt": data.get("negativePrompt"),
        "steps": data.get("steps"),
        "guidance_scale": data.get("cfgScale"),
        "seed": data.get("seed"),
        "width": data.get("width") or size[0] or None,
        "height": data.get("height") or size[1] or None,
    }
    notes: list[str] = []
    has_graph = any(texts.get(key, "").strip() for key in _GRAPH_KEYS)
    sampler = (text(data.get("sampler")) or text(data.get("samplerName"))).strip()
    if sampler:
        scheduler = text(data.get("scheduler"))
        choice = names.sampler_and_schedule(sampler, scheduler)
        values["sampler"] = choice.sampler
        if scheduler.strip() or choice.schedule != names.AUTOMATIC:
            values["schedule"] = choice.schedule
        notes += choice.notes
    elif has_graph:
        notes += _graph_sampling(texts, size, values)
    else:
        notes.append(f"TensorArt's {GENERATION_DATA_KEY} does not name the sampler.")
    if has_graph:
        notes.append(
            "The image also holds a ComfyUI graph; TensorArt's fuller "
            f"{GENERATION_DATA_KEY} was read instead."
        )
    recorded, model_hash = _base_model(data.get("baseModel"))
    parsed = build_request(
        values, model=names.model_name(recorded), model_name=recorded, model_hash=model_hash
    )
    request, read = parsed.request, parsed.read
    clip_skip = as_int(data.get("clipSkip"))
    if clip_skip is not None and 1 <= clip_skip <= MAX_CLIP_SKIP:
        request, read = request.replace(clip_skip=clip_skip), read | {"clip_skip"}
    return dataclasses.replace(parsed, request=request, notes=(*notes, *parsed.notes), read=read)


def _graph_sampling(
    texts: Mapping[str, str], size: tuple[int, int], values: dict[str, object]
) -> list[str]:
    """Put the sampler and schedule of the ComfyUI graph into ``values``; the notes on them."""
    try:
        graph = read_comfyui(texts, size)
    except InvalidRequest:
        return [
            f"TensorArt's {GENERATION_DATA_KEY} does not name the sampler, and the "
            "ComfyUI graph beside it has none that can be read."
        ]
    if "sampler" not in graph.read:
        return [
            f"TensorArt's {GENERATION_DATA_KEY} does not name the sampler, and the "
            "ComfyUI graph beside it does not say it either."
        ]
    request = graph.request
    values["sampler"] = request.sampler
    taken = "sampler"
    if "schedule" in graph.read:
        values["schedule"] = request.schedule
        taken = "sampler and schedule"
    # What the graph's reader said of the names it mapped (see names.sampler_and_schedule).
    mapped = [
        note
        for note in graph.notes
        if note.startswith("sdstudio has no ") or " schedule in sdstudio;" in note
    ]
    verb = "comes" if taken == "sampler" else "come"
    return [
        f"TensorArt's {GENERATION_DATA_KEY} does not name the sampler; the {taken} "
        f"{verb} from the ComfyUI graph beside it.",
        *mapped,
    ]


def _generation_data(value: str) -> dict[str, object]:
    """The JSON object in ``value`` when it has a text prompt and TensorArt's settings."""
    data = load_json(value) if value.lstrip().startswith("{") else None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("prompt"), str)
        or not any(key in data for key in _SETTINGS)
    ):
        raise InvalidRequest("No TensorArt generation data.")
    return data


def _base_model(value: object) -> tuple[str, str]:
    """The model's file name and hash from ``baseModel``."""
    if isinstance(value, dict):
        name = text(value.get("modelFileName")) or text(value.get("name"))
        return name.strip(), text(value.get("hash")).strip()
    return text(value).strip(), ""
