"""Settings that mean something to some families only: what a family cannot use is
refused or said, never silently dropped."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.families import ModelFamily, Prompting
from sdstudio.engine.prompt_embeds import plain_text
from sdstudio.engine.prompts import parse_prompt
from sdstudio.engine.request import GenerationRequest, Mode


def check_family_settings(
    family: ModelFamily,
    request: GenerationRequest,
    on_status: Callable[[str], None] | None = None,
) -> None:
    """Refuse what the family cannot do; tell (through ``on_status``) what it ignores.

    Raises :class:`InvalidRequest` for masked content from latent noise or zeros on a
    family whose pipelines take no such start.
    """
    step = family.size_multiple
    if request.width % step or request.height % step:
        nearest = "x".join(
            str(max(step, round(v / step) * step)) for v in (request.width, request.height)
        )
        raise InvalidRequest(
            f"{family.label} models need a width and height in multiples of {step}, "
            f"not {request.width}x{request.height} (the nearest is {nearest})."
        )
    if (
        request.mode is Mode.INPAINT
        and request.masked_content.in_latent_space
        and not family.latent_masking
    ):
        raise InvalidRequest(
            f"Masked content {request.masked_content.value} is not available for "
            f"{family.label} models; use original or fill."
        )
    if request.mode is Mode.IMG2IMG and not family.img2img:
        raise InvalidRequest(
            f"{family.label} models have no image-to-image with a strength; "
            "paint a mask to inpaint, or generate from text."
        )
    if request.negative_prompt.strip() and not family.negative_prompt and on_status:
        on_status(f"{family.label} models take no negative prompt; it is not used.")
    if family.prompting is not Prompting.PLAIN or on_status is None:
        return
    if request.clip_skip > 1:
        on_status(
            f"{family.label} models have no clip skip; clip skip {request.clip_skip} is not used."
        )
    if not all(parse_prompt(text).is_plain for text in (request.prompt, request.negative_prompt)):
        on_status(
            f"{family.label} models read the prompt as plain text: emphasis weights and "
            "BREAK are removed."
        )


def plain_arguments(family: ModelFamily, prompt: str, negative_prompt: str) -> dict[str, Any]:
    """The prompts as text, without A1111's markup (for T5 and LLM text encoders); no
    negative prompt for a family whose pipelines take none."""
    if not family.negative_prompt:
        return {"prompt": _plain(prompt)}
    return {"prompt": _plain(prompt), "negative_prompt": _plain(negative_prompt) or None}


def _plain(prompt: str) -> str:
    """The plain text, without the spaces a removed tag leaves (``a house <lora:x:1>``
    reads as ``a house``): these encoders read every space."""
    return re.sub(r"[ \t]{2,}", " ", plain_text(prompt)).strip()
