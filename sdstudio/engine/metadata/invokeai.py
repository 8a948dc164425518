"""InvokeAI 3 and later: the ``invokeai_metadata`` PNG text chunk.

A JSON object with ``positive_prompt``, ``negative_prompt``, ``width``,
``height``, ``seed``, ``cfg_scale``, ``steps``, ``scheduler`` (such as
``"dpmpp_2m_k"``; ``_k`` means Karras), ``model`` (``{name, hash, base}``;
``{model_name, base_model}`` in 3.0; plain text in some versions),
``loras`` and, for image-to-image, ``strength``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import names
from sdstudio.engine.metadata.safe_text import load_json, text
from sdstudio.engine.metadata.values import Parsed, as_float, as_int, build_request, guarded

METADATA_KEY = "invokeai_metadata"


@guarded
def read_invokeai(texts: Mapping[str, str], size: tuple[int, int] = (0, 0)) -> Parsed:
    """Read InvokeAI 3+ settings; raise :class:`InvalidRequest` when there are none."""
    data = load_json(texts.get(METADATA_KEY))
    if not isinstance(data, dict) or not _has_invokeai_shape(data):
        raise InvalidRequest("No InvokeAI metadata.")
    values: dict[str, object] = {
        "prompt": text(data.get("positive_prompt")),
        "negative_prompt": text(data.get("negative_prompt")),
        "steps": data.get("steps"),
        "seed": data.get("seed"),
        "guidance_scale": _first_number(data.get("cfg_scale")),
        "width": data.get("width"),
        "height": data.get("height"),
        "strength": data.get("strength"),
    }
    scheduler = text(data.get("scheduler"))
    if scheduler:
        values["sampler"], values["schedule"] = names.invokeai_scheduler(scheduler)
    recorded = model_name(data.get("model"))
    parsed = build_request(values, model=names.model_name(recorded), model_name=recorded)
    return dataclasses.replace(parsed, notes=parsed.notes + _lora_notes(data.get("loras")))


def _has_invokeai_shape(data: dict[str, object]) -> bool:
    """Whether the JSON holds InvokeAI's settings: its prompt key, or two of its other keys."""
    if isinstance(data.get("positive_prompt"), str):
        return True
    typed = (
        isinstance(data.get("scheduler"), str),
        isinstance(data.get("cfg_scale"), int | float | list),
        *(as_int(data.get(key)) is not None for key in ("steps", "seed", "width", "height")),
    )
    return sum(typed) >= 2


def model_name(model: object) -> str:
    """The model's name from InvokeAI's ``model`` field: an object or, in old versions, text."""
    if isinstance(model, str):
        return model
    if isinstance(model, dict):
        for key in ("name", "model_name", "key"):
            if isinstance(model.get(key), str) and model[key].strip():
                return str(model[key])
    return ""


def _first_number(value: object) -> object:
    # The CFG scale may be a list (one value per step); the first stands for all.
    if isinstance(value, list):
        return next((v for v in value if as_float(v) is not None), None)
    return value


def _lora_notes(loras: object) -> tuple[str, ...]:
    if not isinstance(loras, list):
        return ()
    notes = []
    for lora in loras:
        if not isinstance(lora, dict):
            continue
        name = model_name(lora.get("model")) or model_name(lora.get("lora"))
        weight = as_float(lora.get("weight"))
        if name:
            shown = f" at weight {weight:g}" if weight is not None else ""
            notes.append(f"The image used the LoRA {name}{shown}.")
    return tuple(notes)
