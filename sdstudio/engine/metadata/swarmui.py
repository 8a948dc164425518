"""SwarmUI (and StableSwarmUI): the ``sui_image_params`` JSON object.

PNG images carry ``{"sui_image_params": {...}, "sui_models": [...]}`` as the
``parameters`` text chunk; JPEG and WebP images carry the same JSON as the
EXIF UserComment, which sdstudio reads as ``parameters`` too. The settings
use SwarmUI's parameter ids: ``prompt``, ``negativeprompt``, ``model``,
``seed``, ``steps``, ``cfgscale``, ``width``, ``height``, ``sampler`` and
``scheduler`` (ComfyUI's names, as SwarmUI runs on ComfyUI),
``initimagecreativity`` (the image-to-image strength), ``clipstopatlayer``
(``-2`` is A1111's clip skip 2), ``vae``, ``loras`` and ``loraweights``.

SwarmUI writes the sampler and scheduler only when they differ from its
defaults, ``euler`` and ``normal``; those are used when they are missing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import names
from sdstudio.engine.metadata.a1111 import PARAMETERS_KEY
from sdstudio.engine.metadata.values import (
    Parsed,
    as_float,
    as_int,
    build_request,
    guarded,
    load_json,
    text,
)
from sdstudio.engine.request import MAX_CLIP_SKIP

PARAMS_KEY = "sui_image_params"
_DEFAULT_SAMPLER = "euler"
_DEFAULT_SCHEDULER = "normal"


@guarded
def read_swarmui(texts: Mapping[str, str], size: tuple[int, int] = (0, 0)) -> Parsed:
    """Read SwarmUI's settings; raise :class:`InvalidRequest` when there are none.

    ``size`` (the image's own) stands in for a width or height the metadata lacks.
    """
    parameters = texts.get(PARAMETERS_KEY, "")
    data = load_json(parameters) if parameters.lstrip().startswith("{") else None
    params = data.get(PARAMS_KEY) if isinstance(data, dict) else None
    if not isinstance(params, dict):
        raise InvalidRequest("No SwarmUI metadata.")
    sampler, schedule = names.comfyui_sampler(
        text(params.get("sampler")) or _DEFAULT_SAMPLER,
        text(params.get("scheduler")) or _DEFAULT_SCHEDULER,
    )
    values: dict[str, object] = {
        "prompt": text(params.get("prompt")),
        "negative_prompt": text(params.get("negativeprompt")),
        "sampler": sampler,
        "schedule": schedule,
        "steps": params.get("steps"),
        "seed": params.get("seed"),
        "guidance_scale": params.get("cfgscale"),
        "width": params.get("width") or size[0] or None,
        "height": params.get("height") or size[1] or None,
        "strength": params.get("initimagecreativity"),
        "vae": _vae(text(params.get("vae"))),
    }
    recorded = text(params.get("model"))
    parsed = build_request(values, model=names.model_name(recorded), model_name=recorded)
    clip_skip = as_int(params.get("clipstopatlayer"))
    if clip_skip is not None and 1 <= -clip_skip <= MAX_CLIP_SKIP:
        parsed = dataclasses.replace(parsed, request=parsed.request.replace(clip_skip=-clip_skip))
    return dataclasses.replace(parsed, notes=parsed.notes + _lora_notes(params))


def _vae(recorded: str) -> str:
    """The VAE file SwarmUI names; its ``None`` and ``Automatic`` mean the model's own."""
    if recorded.strip().casefold() in ("", "none", "automatic"):
        return ""
    return names.model_name(recorded)


def _lora_notes(params: Mapping[str, object]) -> tuple[str, ...]:
    loras, weights = params.get("loras"), params.get("loraweights")
    if not isinstance(loras, list):
        return ()
    weights = weights if isinstance(weights, list) else []
    notes = []
    for index, lora in enumerate(loras):
        if not isinstance(lora, str) or not lora.strip():
            continue
        weight = as_float(weights[index]) if index < len(weights) else None
        shown = f" at weight {weight:g}" if weight is not None else ""
        notes.append(f"The image used the LoRA {names.model_name(lora)}{shown}.")
    return tuple(notes)
