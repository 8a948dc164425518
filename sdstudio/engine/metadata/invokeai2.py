"""InvokeAI 2.x: the ``sd-metadata`` JSON and ``Dream`` command line PNG text chunks.

``sd-metadata`` holds ``image``: ``{prompt, steps, cfg_scale, seed, width,
height, sampler, strength}`` where the prompt is text or a list of
``{prompt, weight}``, and the model as ``model_weights`` or ``model_id``.
``Dream`` holds a command line: ``"a cat" -s 50 -S 1234 -W 512 -H 512 -C 7.5 -A k_lms``.

InvokeAI 2.x wrote the negative prompt inside the prompt in square brackets
(``a cat [blurry, lowres]``); the bracketed parts become the negative prompt.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import names
from sdstudio.engine.metadata.safe_text import load_json, text
from sdstudio.engine.metadata.values import Parsed, as_float, build_request, guarded

SD_METADATA_KEY = "sd-metadata"
DREAM_KEY = "Dream"
# shlex takes about a second per 100,000 characters; real command lines are short.
MAX_DREAM_LENGTH = 20_000
_BRACKETS = re.compile(r"\[([^\[\]]*)\]")
# Dream options -> request fields.
_OPTIONS = {
    "-s": "steps",
    "--steps": "steps",
    "-S": "seed",
    "--seed": "seed",
    "-W": "width",
    "--width": "width",
    "-H": "height",
    "--height": "height",
    "-C": "guidance_scale",
    "--cfg_scale": "guidance_scale",
    "-A": "sampler",
    "-m": "sampler",
    "--sampler": "sampler",
    "-f": "strength",
    "--strength": "strength",
}
_IMAGE_KEYS = ("prompt", "steps", "seed", "cfg_scale", "sampler")


@guarded
def read_invokeai2(texts: Mapping[str, str], size: tuple[int, int] = (0, 0)) -> Parsed:
    """Read InvokeAI 2.x settings (``sd-metadata``, else ``Dream``).

    Raises :class:`InvalidRequest` when there are none.
    """
    metadata = texts.get(SD_METADATA_KEY)
    if metadata:
        try:
            return _read_sd_metadata(metadata)
        except InvalidRequest:
            pass
    dream = texts.get(DREAM_KEY)
    if dream:
        return _read_dream(dream)
    raise InvalidRequest("No InvokeAI 2.x metadata.")


def _read_sd_metadata(metadata: str) -> Parsed:
    data = load_json(metadata)
    if not isinstance(data, dict):
        raise InvalidRequest("No InvokeAI 2.x metadata.")
    image = data.get("image")
    if not isinstance(image, dict) or not any(key in image for key in _IMAGE_KEYS):
        raise InvalidRequest("No InvokeAI 2.x metadata.")
    values: dict[str, object] = {
        "steps": image.get("steps"),
        "seed": image.get("seed"),
        "guidance_scale": image.get("cfg_scale"),
        "width": image.get("width"),
        "height": image.get("height"),
        "strength": image.get("strength"),
    }
    _split_prompt(values, _prompt_text(image.get("prompt")))
    sampler = text(image.get("sampler"))
    if sampler:
        values["sampler"], values["schedule"] = names.invokeai_scheduler(sampler)
    recorded = text(data.get("model_weights")) or text(data.get("model_id"))
    return build_request(values, model=names.model_name(recorded), model_name=recorded)


def _read_dream(command: str) -> Parsed:
    if len(command) > MAX_DREAM_LENGTH:
        raise InvalidRequest("The Dream command line is too long.")
    try:
        tokens = shlex.split(command)
    except ValueError:  # an unclosed quote or a trailing backslash
        raise InvalidRequest("The Dream command line is malformed.") from None
    values: dict[str, object] = {}
    prompt: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        field = _OPTIONS.get(token)
        if field is not None and index + 1 < len(tokens):
            values[field] = tokens[index + 1]
            index += 2
            continue
        if field is None and token[:2] in _OPTIONS and len(token) > 2:
            values[_OPTIONS[token[:2]]] = token[2:]  # attached value: -s50
        elif not token.startswith("-") and not values:
            prompt.append(token)
        index += 1
    if not values:
        raise InvalidRequest("The Dream command line holds no settings.")
    _split_prompt(values, " ".join(prompt))
    sampler = text(values.pop("sampler", ""))
    if sampler:
        values["sampler"], values["schedule"] = names.invokeai_scheduler(sampler)
    return build_request(values)


def _prompt_text(prompt: object) -> str:
    if isinstance(prompt, str):
        return prompt
    if not isinstance(prompt, list):
        return ""
    parts = []
    for part in prompt:
        if isinstance(part, dict) and isinstance(part.get("prompt"), str):
            weight = as_float(part.get("weight"))
            if weight is None or weight == 1.0 or len(prompt) == 1:
                parts.append(part["prompt"])
            else:
                parts.append(f"({part['prompt']}:{weight:g})")
    return ", ".join(parts)


def _split_prompt(values: dict[str, object], prompt: str) -> None:
    """Put ``prompt`` into ``values``, its ``[bracketed]`` parts as the negative prompt."""
    negatives = [part.strip() for part in _BRACKETS.findall(prompt) if part.strip()]
    if not _BRACKETS.search(prompt):
        values["prompt"], values["negative_prompt"] = prompt.strip(), ""
        return
    rest = " ".join(_BRACKETS.sub(" ", prompt).split())
    values["prompt"] = re.sub(r"\s+,", ",", rest).strip(" ,")
    values["negative_prompt"] = ", ".join(negatives)
