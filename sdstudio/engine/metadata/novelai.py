"""NovelAI: the ``Software``, ``Source``, ``Description`` and ``Comment`` texts.

PNG images carry them as text chunks: ``Software`` is ``"NovelAI"``,
``Source`` names the model (``"NovelAI Diffusion V4.5 4BDE2A90"``),
``Description`` holds the prompt and ``Comment`` a JSON object with the
settings: ``prompt``, ``uc`` (the negative prompt), ``steps``, ``scale`` (CFG),
``seed``, ``sampler`` (``k_euler_ancestral``, ``k_dpmpp_2m``, ``ddim_v3``...),
``noise_schedule`` (``native``, ``karras``, ``exponential``,
``polyexponential``), ``width``, ``height``, ``cfg_rescale`` and, for
image-to-image, ``strength`` and ``noise``. Version 4 models put the prompts
in ``v4_prompt`` / ``v4_negative_prompt``: ``{"caption": {"base_caption": ...,
"char_captions": [{"char_caption": ..., "centers": [{"x", "y"}]}]}}``.

JPEG and WebP images (and the alpha-channel copy, see
:mod:`~sdstudio.engine.metadata.stealth`) hold the same texts as one JSON
object, in the EXIF UserComment, which sdstudio reads as ``parameters``.

Settings sdstudio cannot apply are kept in :attr:`Parsed.extras`, so nothing
read is lost: ``CFG rescale``, ``Noise schedule`` (one sdstudio lacks),
``SMEA`` and ``SMEA DYN``, ``Img2img noise`` and, for each character of a
version 4 prompt, ``Character N prompt``, ``Character N negative`` and
``Character N center`` (``x, y`` from 0 to 1; several separated by ``; ``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata.a1111 import PARAMETERS_KEY
from sdstudio.engine.metadata.names import AUTOMATIC
from sdstudio.engine.metadata.safe_text import load_json, text
from sdstudio.engine.metadata.values import Parsed, as_float, build_request, guarded

SOFTWARE_KEY = "Software"
SOURCE_KEY = "Source"
DESCRIPTION_KEY = "Description"
COMMENT_KEY = "Comment"
KEYS = (SOFTWARE_KEY, SOURCE_KEY, DESCRIPTION_KEY, COMMENT_KEY)
SOFTWARE = "NovelAI"

# NovelAI's sampler names, by the A1111 names sdstudio uses.
SAMPLERS: dict[str, str] = {
    "k_euler": "Euler",
    "k_euler_ancestral": "Euler a",
    "k_lms": "LMS",
    "k_heun": "Heun",
    "k_dpm_2": "DPM2",
    "k_dpm_2_ancestral": "DPM2 a",
    "k_dpmpp_2m": "DPM++ 2M",
    "k_dpmpp_2m_sde": "DPM++ 2M SDE",
    "k_dpmpp_sde": "DPM++ SDE",
    "ddim": "DDIM",
    "ddim_v3": "DDIM",
    "plms": "PLMS",
}
# Samplers sdstudio does not have, by the names A1111 users know; kept as written.
_OTHER_SAMPLERS: dict[str, str] = {
    "k_dpmpp_2s_ancestral": "DPM++ 2S a",
    "k_dpm_fast": "DPM fast",
    "k_dpm_adaptive": "DPM adaptive",
}
SCHEDULES: dict[str, str] = {
    "native": AUTOMATIC,
    "karras": "Karras",
    "exponential": "Exponential",
}
_SETTINGS_KEYS = ("steps", "scale", "sampler", "seed")
# The request type of text-to-image images, whose comments may hold an unused strength.
_TXT2IMG_REQUEST = "PromptGenerateRequest"


@guarded
def read_novelai(texts: Mapping[str, str], size: tuple[int, int] = (0, 0)) -> Parsed:
    """Read NovelAI's settings; raise :class:`InvalidRequest` when the texts are not NovelAI's."""
    found = novelai_texts(texts)
    comment = load_json(found.get(COMMENT_KEY))
    if not isinstance(comment, dict) or not any(key in comment for key in _SETTINGS_KEYS):
        raise InvalidRequest("No NovelAI metadata.")
    notes: list[str] = []
    prompt, characters = _caption(comment.get("v4_prompt"))
    negative, negative_characters = _caption(comment.get("v4_negative_prompt"))
    values: dict[str, object] = {
        "prompt": prompt or text(comment.get("prompt")) or found.get(DESCRIPTION_KEY, ""),
        "negative_prompt": negative or text(comment.get("uc")),
        "steps": comment.get("steps"),
        "seed": comment.get("seed"),
        "guidance_scale": comment.get("scale"),
        "width": comment.get("width"),
        "height": comment.get("height"),
    }
    _sampler(comment, values, notes)
    image_to_image = text(comment.get("request_type")) != _TXT2IMG_REQUEST
    strength = as_float(comment.get("strength"))
    if strength is not None and image_to_image:
        values["strength"] = strength
    extras = _characters(characters, negative_characters) | _unapplied(comment, image_to_image)
    source = found.get(SOURCE_KEY, "").strip()
    parsed = build_request(values, model=source, model_name=source, extras=extras)
    return dataclasses.replace(parsed, notes=parsed.notes + tuple(notes))


def novelai_texts(texts: Mapping[str, str]) -> dict[str, str]:
    """NovelAI's texts, from PNG chunks or from the JSON object JPEG and WebP carry.

    Empty unless ``Software`` says NovelAI.
    """
    found = {key: texts[key] for key in KEYS if key in texts}
    if not _is_novelai(found):
        data = load_json(texts.get(PARAMETERS_KEY, "")) if _is_object(texts) else None
        if not isinstance(data, dict):
            return {}
        found = {key: _as_text(data[key]) for key in KEYS if key in data}
    return found if _is_novelai(found) else {}


def _is_object(texts: Mapping[str, str]) -> bool:
    return texts.get(PARAMETERS_KEY, "").lstrip().startswith("{")


def _is_novelai(found: Mapping[str, str]) -> bool:
    return found.get(SOFTWARE_KEY, "").strip().casefold() == SOFTWARE.casefold()


def _as_text(value: object) -> str:
    """A text as it is, any other JSON value (a ``Comment`` object) as JSON text."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _caption(value: object) -> tuple[str, list[dict[str, object]]]:
    """The base caption and the character captions of a version 4 prompt."""
    caption = value.get("caption") if isinstance(value, dict) else None
    if not isinstance(caption, dict):
        return "", []
    characters = caption.get("char_captions")
    listed = characters if isinstance(characters, list) else []
    return text(caption.get("base_caption")), [c for c in listed if isinstance(c, dict)]


def _sampler(comment: Mapping[str, object], values: dict[str, object], notes: list[str]) -> None:
    name = text(comment.get("sampler")).strip()
    if not name:
        return
    key = name.casefold()
    sampler = SAMPLERS.get(key)
    if sampler is None:
        sampler = _OTHER_SAMPLERS.get(key, name)
        notes.append(f"NovelAI's sampler {name} has no equivalent in sdstudio.")
    values["sampler"] = sampler
    recorded = text(comment.get("noise_schedule")).strip()
    schedule = SCHEDULES.get(recorded.casefold()) if recorded else AUTOMATIC
    if schedule is None:
        schedule = recorded
        notes.append(f"NovelAI's {recorded} noise schedule has no equivalent in sdstudio.")
    values["schedule"] = schedule


def _characters(
    characters: list[dict[str, object]], negatives: list[dict[str, object]]
) -> dict[str, str]:
    """The character prompts, negative prompts and centers, numbered from 1 in NovelAI's order."""
    extras: dict[str, str] = {}
    for number in range(1, max(len(characters), len(negatives)) + 1):
        prompt, negative = (
            (listed[number - 1] if number <= len(listed) else {})
            for listed in (characters, negatives)
        )
        caption, negative_caption = (
            text(prompt.get("char_caption")),
            text(negative.get("char_caption")),
        )
        if caption:
            extras[f"Character {number} prompt"] = caption
        if negative_caption:
            extras[f"Character {number} negative"] = negative_caption
        centers = _centers(prompt.get("centers")) or _centers(negative.get("centers"))
        if centers and (caption or negative_caption):
            extras[f"Character {number} center"] = centers
    return extras


def _centers(value: object) -> str:
    """A character's centers as ``"x, y"`` texts separated by ``"; "``."""
    places = []
    for center in value if isinstance(value, list) else []:
        if isinstance(center, dict):
            x, y = as_float(center.get("x")), as_float(center.get("y"))
            if x is not None and y is not None:
                places.append(f"{x:g}, {y:g}")
    return "; ".join(places)


def _unapplied(comment: Mapping[str, object], image_to_image: bool) -> dict[str, str]:
    """The NovelAI settings that sdstudio has no control for, as set in ``comment``."""
    extras = {}
    recorded = text(comment.get("noise_schedule")).strip()
    if recorded and recorded.casefold() not in SCHEDULES:
        extras["Noise schedule"] = recorded
    rescale = as_float(comment.get("cfg_rescale"))
    if rescale:
        extras["CFG rescale"] = f"{rescale:g}"
    noise = as_float(comment.get("noise"))
    if noise and image_to_image:
        extras["Img2img noise"] = f"{noise:g}"
    for key, label in (("sm", "SMEA"), ("sm_dyn", "SMEA DYN")):
        if comment.get(key) is True:
            extras[label] = "true"
    return extras
