"""Fooocus metadata: ``parameters`` plus ``fooocus_scheme``.

With the scheme ``fooocus`` (also assumed when ``parameters`` is a JSON
object and no scheme is given), ``parameters`` is JSON. Fooocus 2.2+ writes
snake-case keys (``prompt``, ``negative_prompt``, ``full_prompt``, ``steps``,
``sampler``, ``scheduler``, ``guidance_scale``, ``seed`` as text,
``resolution`` as ``"(1152, 896)"``, ``base_model``); older logs used labels
(``Prompt``, ``Guidance Scale``, ``Base Model``). Both are read.

With the scheme ``a1111``, ``parameters`` is AUTOMATIC1111 text.

The prompt is the full one Fooocus encoded (``full_prompt``: the prompt with
its styles and prompt expansion applied), since sdstudio has neither styles
nor expansion; the typed prompt is the fallback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sdstudio.engine import samplers
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import a1111, names
from sdstudio.engine.metadata.values import Parsed, as_int, build_request, guarded, load_json, text

SCHEME_KEY = "fooocus_scheme"
# Steps of Fooocus's performance presets, for metadata that records no steps.
_PERFORMANCE_STEPS = {
    "quality": 60,
    "speed": 30,
    "extreme speed": 8,
    "lightning": 4,
    "hyper-sd": 4,
}
# Fooocus's defaults, for metadata that names no sampler or scheduler.
_DEFAULT_SAMPLER = "dpmpp_2m_sde_gpu"
_DEFAULT_SCHEDULER = "karras"
_KNOWN_KEYS = {"prompt", "negative_prompt", "steps", "sampler", "seed", "resolution"}


@guarded
def read_fooocus(texts: Mapping[str, str], size: tuple[int, int] = (0, 0)) -> Parsed:
    """Read Fooocus's settings; raise :class:`InvalidRequest` when there are none."""
    parameters = texts.get(a1111.PARAMETERS_KEY, "")
    scheme = texts.get(SCHEME_KEY, "").strip().casefold()
    if not parameters:
        raise InvalidRequest("No Fooocus parameters.")
    if scheme == "a1111":
        return _read_a1111_scheme(parameters)
    data = _json_object(parameters)
    if data is None or (scheme != "fooocus" and not _KNOWN_KEYS & data.keys()):
        raise InvalidRequest("No Fooocus parameters.")
    return _read_json_scheme(data)


def _read_json_scheme(data: dict[str, object]) -> Parsed:
    prompt = _joined(data.get("full_prompt")) or text(data.get("prompt"))
    negative = _joined(data.get("full_negative_prompt")) or text(data.get("negative_prompt"))
    sampler, schedule = names.comfyui_sampler(
        text(data.get("sampler")) or _DEFAULT_SAMPLER,
        text(data.get("scheduler")) or _DEFAULT_SCHEDULER,
    )
    values: dict[str, object] = {
        "prompt": prompt,
        "negative_prompt": negative,
        "sampler": sampler,
        "schedule": schedule,
        "steps": data.get("steps"),
        "guidance_scale": data.get("guidance_scale"),
        "seed": data.get("seed"),
    }
    if as_int(values["steps"]) is None:
        performance = text(data.get("performance")).strip().casefold()
        values["steps"] = _PERFORMANCE_STEPS.get(performance)
    numbers = re.findall(r"\d+", text(data.get("resolution")))
    if len(numbers) == 2:
        values["width"], values["height"] = numbers
    recorded = text(data.get("base_model"))
    return build_request(values, model=names.model_name(recorded), model_name=recorded)


def _read_a1111_scheme(parameters: str) -> Parsed:
    parsed = a1111.read_parameters(parameters)
    request = parsed.request
    if request.sampler not in samplers.sampler_names():
        # Samplers A1111 has no name for are written with Fooocus's own name.
        settings = a1111.split_parameters(parameters).settings
        sampler, schedule = names.comfyui_sampler(request.sampler, settings.get("Scheduler", ""))
        request = request.replace(sampler=sampler, schedule=schedule)
    model = names.model_name(request.model)
    return Parsed(request.replace(model=model or request.model), parsed.model_name, parsed.notes)


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
