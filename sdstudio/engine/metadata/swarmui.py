"""SwarmUI (and StableSwarmUI): the ``sui_image_params`` JSON object.

PNG images carry ``{"sui_image_params": {...}, "sui_models": [...]}`` as the
``parameters`` text chunk; JPEG and WebP images carry the same JSON as the
EXIF UserComment, which sdstudio reads as ``parameters`` too. The settings
use SwarmUI's parameter ids: ``prompt``, ``negativeprompt``, ``model``,
``seed``, ``steps``, ``cfgscale``, ``width``, ``height``, ``sampler`` and
``scheduler`` (ComfyUI's names, as SwarmUI runs on ComfyUI),
``initimagecreativity`` (the image-to-image strength), ``clipstopatlayer``
(``-2`` is A1111's clip skip 2), ``vae``, ``loras`` and ``loraweights``.

The models used are listed in ``sui_models``: ``name``, ``param`` (``model``
for the main model) and ``hash`` (``0x`` and the SHA-256 of the file).

SwarmUI writes the sampler and scheduler only when the user set them. Left
out, SwarmUI picks one by the model's class (``euler`` with ``normal`` for
most, others for Stable Cascade, LTX-Video...), which the image does not
say: they are left unread, with a note.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import names
from sdstudio.engine.metadata.a1111 import PARAMETERS_KEY
from sdstudio.engine.metadata.safe_text import load_json, text
from sdstudio.engine.metadata.values import Parsed, as_float, as_int, build_request, guarded
from sdstudio.engine.request import MAX_CLIP_SKIP

PARAMS_KEY = "sui_image_params"


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
    values: dict[str, object] = {
        "prompt": params.get("prompt"),
        "negative_prompt": params.get("negativeprompt"),
        "steps": params.get("steps"),
        "seed": params.get("seed"),
        "guidance_scale": params.get("cfgscale"),
        "width": params.get("width") or size[0] or None,
        "height": params.get("height") or size[1] or None,
        "strength": params.get("initimagecreativity"),
        "vae": _vae(text(params.get("vae"))),
    }
    notes = _sampling(params, values)
    recorded = text(params.get("model"))
    parsed = build_request(
        values,
        model=names.model_name(recorded),
        model_name=recorded,
        model_hash=_model_hash(data.get("sui_models") if isinstance(data, dict) else None),
    )
    request, read = parsed.request, parsed.read
    clip_skip = as_int(params.get("clipstopatlayer"))
    if clip_skip is not None and 1 <= -clip_skip <= MAX_CLIP_SKIP:
        request, read = request.replace(clip_skip=-clip_skip), read | {"clip_skip"}
    notes += parsed.notes + _lora_notes(params)
    return dataclasses.replace(parsed, request=request, notes=notes, read=read)


def _sampling(params: Mapping[str, object], values: dict[str, object]) -> tuple[str, ...]:
    """Put the sampler and schedule SwarmUI wrote into ``values``; the notes on them."""
    sampler, scheduler = text(params.get("sampler")).strip(), text(params.get("scheduler"))
    if not sampler:
        return (
            "SwarmUI left out the sampler, so it used the default for the model's class, "
            "which the image does not say.",
        )
    choice = names.sampler_and_schedule(sampler, scheduler)
    values["sampler"] = choice.sampler
    if scheduler.strip() or choice.schedule != names.AUTOMATIC:
        values["schedule"] = choice.schedule
    return choice.notes


def _model_hash(models: object) -> str:
    """The main model's hash from ``sui_models`` (``0x`` and hex digits), without ``0x``."""
    if not isinstance(models, list):
        return ""
    for entry in models:
        if isinstance(entry, dict) and text(entry.get("param")).strip() == "model":
            written = text(entry.get("hash")).strip()
            digits = written[2:] if written[:2].casefold() == "0x" else written
            return digits if digits and all(c in "0123456789abcdefABCDEF" for c in digits) else ""
    return ""


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
