"""Stability Matrix: the ``parameters-json`` PNG text chunk.

Stability Matrix's Inference tab writes two texts before the image data:
``parameters`` (AUTOMATIC1111 text) and ``parameters-json``, its generation
parameters as a JSON object with its own property names: ``PositivePrompt``,
``NegativePrompt``, ``Steps``, ``Sampler`` (an A1111 name such as
``"DPM++ 2M Karras"``), ``CfgScale``, ``Seed``, ``Width``, ``Height``,
``ModelName`` and ``ModelHash`` (a full SHA-256), plus video settings
(``FrameCount``, ``Fps``, ...) that sdstudio has no use for. A ``Scheduler``
property, when present, is read too. A project file (``smproj``, holding the
ComfyUI-like graph the image was made with) may come with them.

The JSON is preferred over the A1111 text, which holds the same settings in a
lossier form; the notes say so. Its properties are numbers that default to 0
in Stability Matrix, so a 0 for the steps, CFG scale, width or height means
the value was not recorded, not that it was 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import names
from sdstudio.engine.metadata.a1111 import PARAMETERS_KEY
from sdstudio.engine.metadata.safe_text import load_json, text
from sdstudio.engine.metadata.values import Parsed, as_float, build_request, guarded

PARAMETERS_JSON_KEY = "parameters-json"
PROJECT_KEY = "smproj"
KEYS = (PARAMETERS_JSON_KEY, PROJECT_KEY)
# Properties only Stability Matrix's parameters hold, next to ``PositivePrompt``.
_SETTINGS = ("Steps", "CfgScale", "Seed", "Sampler", "ModelName")
# Properties whose 0 is the unset default.
_UNSET_WHEN_ZERO = ("Steps", "CfgScale", "Width", "Height")


@guarded
def read_stability_matrix(texts: Mapping[str, str], size: tuple[int, int] = (0, 0)) -> Parsed:
    """Read Stability Matrix's ``parameters-json``; raise :class:`InvalidRequest` without it.

    ``size`` (the image's own) stands in for a width or height the JSON lacks.
    """
    data = _parameters(texts.get(PARAMETERS_JSON_KEY, ""))
    raw = {key: _recorded(key, data.get(key)) for key in (*_SETTINGS, *_UNSET_WHEN_ZERO)}
    values: dict[str, object] = {
        "prompt": data.get("PositivePrompt"),
        "negative_prompt": data.get("NegativePrompt"),
        "steps": raw["Steps"],
        "guidance_scale": raw["CfgScale"],
        "seed": raw["Seed"],
        "width": raw["Width"] or size[0] or None,
        "height": raw["Height"] or size[1] or None,
    }
    notes: list[str] = []
    sampler = text(data.get("Sampler")).strip()
    if sampler:
        notes += names.sampler_and_schedule(sampler, text(data.get("Scheduler"))).put(values)
    if texts.get(PARAMETERS_KEY, "").strip():
        notes.append(
            "The image also holds AUTOMATIC1111 parameters; Stability Matrix's fuller "
            f"{PARAMETERS_JSON_KEY} was read instead."
        )
    if texts.get(PROJECT_KEY, "").strip():
        notes.append(f"The image's Stability Matrix project ({PROJECT_KEY}) was not read.")
    recorded = text(data.get("ModelName")).strip()
    parsed = build_request(
        values,
        model=names.model_name(recorded),
        model_name=recorded,
        model_hash=text(data.get("ModelHash")),
    )
    return dataclasses.replace(parsed, notes=(*notes, *parsed.notes))


def _parameters(value: str) -> dict[str, object]:
    """The JSON object in ``value`` when it has a prompt and Stability Matrix's own settings."""
    data = load_json(value) if value.lstrip().startswith("{") else None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("PositivePrompt"), str)
        or not any(key in data for key in _SETTINGS)
    ):
        raise InvalidRequest("No Stability Matrix parameters.")
    return data


def _recorded(key: str, value: object) -> object:
    """``value``, or ``None`` when it is Stability Matrix's unset 0."""
    if key in _UNSET_WHEN_ZERO and as_float(value) == 0:
        return None
    return value
