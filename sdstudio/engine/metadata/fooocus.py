"""Fooocus metadata: ``parameters`` plus ``fooocus_scheme``; also RuinedFooocus.

With the scheme ``fooocus``, ``parameters`` is JSON. Fooocus 2.2+ writes
snake-case keys (``prompt``, ``negative_prompt``, ``full_prompt``, ``steps``,
``sampler``, ``scheduler``, ``guidance_scale``, ``seed`` as text,
``resolution`` as ``"(1152, 896)"``, ``base_model`` and its short hash
``base_model_hash``); older logs used labels
(``Prompt``, ``Guidance Scale``, ``Base Model``). Both are read. JSON without
a scheme is read only when it has Fooocus's shape: a text ``prompt``, a text
``base_model`` and one of Fooocus's own keys (``resolution`` as a pair,
``performance``, ``sharpness``, ``full_prompt``, a ``version`` naming Fooocus).
Other JSON with a ``prompt`` key (a ComfyUI graph, a web demo's settings) is
left to other readers.

With the scheme ``a1111``, ``parameters`` is AUTOMATIC1111 text.

RuinedFooocus writes ``parameters`` as JSON with ``"software": "RuinedFooocus"``,
``Prompt``, ``Negative``, ``steps``, ``cfg``, ``width``, ``height``, ``seed``,
``sampler_name``, ``scheduler``, ``base_model_name`` and ``base_model_hash``.

The prompt is the full one Fooocus encoded (``full_prompt``: the prompt with
its styles and prompt expansion applied), since sdstudio has neither styles
nor expansion; the typed prompt is the fallback.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import a1111, names
from sdstudio.engine.metadata.safe_text import load_json, text
from sdstudio.engine.metadata.values import Parsed, as_float, as_int, build_request, guarded

SCHEME_KEY = "fooocus_scheme"
# Steps of Fooocus's performance presets, for metadata that records no steps.
_PERFORMANCE_STEPS = {
    "quality": 60,
    "speed": 30,
    "extreme speed": 8,
    "lightning": 4,
    "hyper-sd": 4,
}
_RESOLUTION = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)")


@guarded
def read_fooocus(texts: Mapping[str, str], size: tuple[int, int] = (0, 0)) -> Parsed:
    """Read Fooocus's settings; raise :class:`InvalidRequest` when the image has none."""
    parameters = texts.get(a1111.PARAMETERS_KEY, "")
    scheme = texts.get(SCHEME_KEY, "").strip().casefold()
    if not parameters:
        raise InvalidRequest("No Fooocus parameters.")
    if scheme == "a1111":
        return _read_a1111_scheme(parameters)
    data = _json_object(parameters)
    if data is None or _is_graph(data):
        raise InvalidRequest("No Fooocus parameters.")
    if text(data.get("software")).strip().casefold() == "ruinedfooocus":
        return _read_ruined(data)
    if not isinstance(data.get("prompt"), str):
        raise InvalidRequest("No Fooocus parameters.")
    if scheme != "fooocus" and not _has_fooocus_shape(data):
        raise InvalidRequest("No Fooocus parameters.")
    return _read_json_scheme(data)


def _has_fooocus_shape(data: dict[str, object]) -> bool:
    """Whether JSON without a scheme holds the settings only Fooocus writes."""
    if not isinstance(data.get("base_model"), str):
        return False
    own = (
        bool(_RESOLUTION.fullmatch(text(data.get("resolution")).strip())),
        isinstance(data.get("performance"), str),
        as_float(data.get("sharpness")) is not None,
        isinstance(data.get("full_prompt"), str | list),
        text(data.get("version")).strip().casefold().startswith("fooocus"),
    )
    return any(own)


def _is_graph(data: dict[str, object]) -> bool:
    """Whether the JSON is a ComfyUI graph (node id to ``{"class_type", "inputs"}``)."""
    return any(isinstance(node, dict) and "class_type" in node for node in data.values())


def _read_json_scheme(data: dict[str, object]) -> Parsed:
    prompt = _joined(data.get("full_prompt")) or text(data.get("prompt"))
    negative = _joined(data.get("full_negative_prompt")) or text(data.get("negative_prompt"))
    values: dict[str, object] = {
        "prompt": prompt,
        "negative_prompt": negative,
        "steps": data.get("steps"),
        "guidance_scale": data.get("guidance_scale"),
        "seed": data.get("seed"),
    }
    notes: tuple[str, ...] = ()
    sampler = text(data.get("sampler"))
    if sampler:
        notes = names.sampler_and_schedule(sampler, text(data.get("scheduler"))).put(values)
    if as_int(values["steps"]) is None:
        performance = text(data.get("performance")).strip()
        steps = _PERFORMANCE_STEPS.get(performance.casefold())
        if steps is not None:
            values["steps"] = steps
            notes += (f"The steps ({steps}) come from the performance preset {performance}.",)
    resolution = _RESOLUTION.fullmatch(text(data.get("resolution")).strip())
    if resolution:
        values["width"], values["height"] = resolution.groups()
    recorded = text(data.get("base_model"))
    parsed = build_request(
        values,
        model=names.model_name(recorded),
        model_name=recorded,
        model_hash=text(data.get("base_model_hash")),
    )
    return dataclasses.replace(parsed, notes=notes + parsed.notes)


def _read_ruined(data: dict[str, object]) -> Parsed:
    values: dict[str, object] = {
        "prompt": data.get("prompt"),
        "negative_prompt": data.get("negative"),
        "steps": data.get("steps"),
        "guidance_scale": data.get("cfg"),
        "seed": data.get("seed"),
        "width": data.get("width"),
        "height": data.get("height"),
    }
    notes: tuple[str, ...] = ()
    sampler = text(data.get("sampler_name"))
    if sampler:
        notes = names.sampler_and_schedule(sampler, text(data.get("scheduler"))).put(values)
    recorded = text(data.get("base_model_name"))
    parsed = build_request(
        values,
        model=names.model_name(recorded),
        model_name=recorded,
        model_hash=text(data.get("base_model_hash")),
    )
    return dataclasses.replace(parsed, notes=notes + parsed.notes)


def _read_a1111_scheme(parameters: str) -> Parsed:
    # Samplers A1111 has no name for are written with Fooocus's own name and a
    # "Scheduler" key, both of which the A1111 reader understands.
    parsed = a1111.read_parameters(parameters)
    request = parsed.request
    model = names.model_name(request.model)
    return dataclasses.replace(parsed, request=request.replace(model=model or request.model))


def _json_object(value: str) -> dict[str, object] | None:
    """The JSON object in ``value`` with keys in snake case, or ``None``."""
    if not value.lstrip().startswith("{"):
        return None
    data = load_json(value)
    if not isinstance(data, dict):
        return None
    return {str(k).strip().casefold().replace(" ", "_"): v for k, v in data.items()}


def _joined(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ", ".join(part for part in value if isinstance(part, str) and part)
    return ""
