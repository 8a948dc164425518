"""Prompt editing and alternation in a diffusers pass: the embeddings switch between
steps from the pipeline's ``callback_on_step_end``.

A prompt (or negative prompt) with ``[from:to:when]`` or ``[a|b]`` has a schedule of
plain prompts (:mod:`sdstudio.engine.prompting.schedules`). Each distinct pair of
positive and negative text is encoded once, A1111's way
(:func:`sdstudio.engine.prompt_embeds.encode_prompts`: emphasis, BREAK, long prompts,
clip skip, the pair padded to the same length). The pass starts with the pair of
model call 0; at the end of call *k* the callback hands the pipeline the pair of call
*k + 1* whenever it differs.

The Stable Diffusion and SDXL pipelines (text-to-image, image-to-image, inpainting,
ControlNet) read the returned ``prompt_embeds`` back into the loop variable that the
UNet takes, which already holds the negative and positive embeddings concatenated for
classifier-free guidance (``[negative, positive]``, only the positive without
guidance); SDXL's ``add_text_embeds`` holds the pooled embeddings the same way. The
callback therefore returns those concatenations, repeated for the batch of latents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sdstudio.engine import prompt_embeds
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.prompting.schedules import has_scheduling, prompt_schedule, text_at

StepCallback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]

ONLY_CLIP = (
    "Prompt editing ([from:to:when]) and alternation ([a|b]) work with SD 1.x, SD 2.x "
    "and SDXL models only"
)


def is_scheduled(prompt: str, negative_prompt: str) -> bool:
    """Whether either prompt holds prompt editing or alternation."""
    return has_scheduling(prompt) or has_scheduling(negative_prompt)


def refuse(prompt: str, negative_prompt: str, where: str) -> None:
    """Raise :class:`InvalidRequest` when either prompt is scheduled: ``where`` (this
    model, the refiner…) reads text, which would take the brackets literally."""
    if is_scheduled(prompt, negative_prompt):
        raise InvalidRequest(f"{ONLY_CLIP}; {where} cannot switch prompts between steps.")


class ScheduledPrompts:
    """A scheduled prompt pair for one pipeline, with the embeddings of each distinct
    pair of plain texts (kept for every image of a batch and every pass)."""

    def __init__(self, pipe: Any, prompt: str, negative_prompt: str, clip_skip: int) -> None:
        if not prompt_embeds.supports(pipe):
            raise InvalidRequest(f"{ONLY_CLIP}; this model's text encoders are not CLIP.")
        self.pipe = pipe
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        xl = prompt_embeds.is_sdxl(pipe) or prompt_embeds.is_refiner(pipe)
        self.clip_skip = 1 if xl else clip_skip
        self._encoded: dict[tuple[str, str], dict[str, Any]] = {}

    def timeline(self, steps: int, hires_steps: int | None = None) -> PromptTimeline:
        """The pairs of a pass of ``steps`` model calls (a hires pass: ``hires_steps``
        calls after a first pass of ``steps``)."""
        positive = prompt_schedule(self.prompt, steps, hires_steps)
        negative = prompt_schedule(self.negative_prompt, steps, hires_steps)
        calls = hires_steps if hires_steps is not None else steps
        pairs = [(text_at(positive, k), text_at(negative, k)) for k in range(max(calls, 1))]
        for pair in dict.fromkeys(pairs):  # encode every pair before the pass starts
            self.arguments(pair)
        return PromptTimeline(self, pairs)

    def arguments(self, pair: tuple[str, str]) -> dict[str, Any]:
        """The pipeline's embedding arguments for a pair of plain texts."""
        if pair not in self._encoded:
            embeds = prompt_embeds.encode_prompts(
                self.pipe, pair[0], pair[1], clip_skip=self.clip_skip
            )
            if embeds is None:  # pragma: no cover - supports() was checked
                raise InvalidRequest(f"{ONLY_CLIP}.")
            self._encoded[pair] = embeds.as_kwargs()
        return self._encoded[pair]


class PromptTimeline:
    """The pair each model call of one pass reads, and the callback that switches them."""

    def __init__(self, prompts: ScheduledPrompts, pairs: list[tuple[str, str]]) -> None:
        self.prompts = prompts
        self.pairs = pairs
        """The (positive, negative) text of each model call, from call 0."""

    def first_arguments(self) -> dict[str, Any]:
        """The embedding arguments the pass starts with (those of call 0)."""
        return self.prompts.arguments(self.pairs[0])

    def started(self, kwargs: dict[str, Any]) -> bool:
        """Whether a pipeline's arguments are this timeline's first embeddings."""
        return kwargs.get("prompt_embeds") is self.first_arguments()["prompt_embeds"]

    def pair_at(self, call: int) -> tuple[str, str]:
        """The pair of model call ``call`` (the last one past the end)."""
        return self.pairs[min(call, len(self.pairs) - 1)]

    def wrap(self, callback: StepCallback | None) -> StepCallback:
        """``callback`` (which may be ``None``), switching the embeddings after each step."""

        def on_step_end(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            result = callback(pipe, i, t, tensors) if callback is not None else {}
            following = self.pair_at(i + 1)
            if following == self.pair_at(i):
                return result
            return {**(result or {}), **self._loop_tensors(pipe, following, tensors)}

        return on_step_end

    def _loop_tensors(
        self, pipe: Any, pair: tuple[str, str], tensors: dict[str, Any]
    ) -> dict[str, Any]:
        """The pipeline's loop tensors for ``pair``: negative and positive concatenated
        for classifier-free guidance, repeated for the batch of latents."""
        import torch

        arguments = self.prompts.arguments(pair)
        latents = tensors.get("latents")
        batch = int(latents.shape[0]) if latents is not None else 1
        encoder = getattr(pipe, "text_encoder_2", None) or getattr(pipe, "text_encoder", None)
        dtype = encoder.dtype if encoder is not None else pipe.unet.dtype
        device = latents.device if latents is not None else arguments["prompt_embeds"].device
        guided = bool(getattr(pipe, "do_classifier_free_guidance", True))

        def both(positive: Any, negative: Any, *, cast: bool) -> Any:
            positive = positive.to(device=device, dtype=dtype if cast else positive.dtype)
            negative = negative.to(device=device, dtype=positive.dtype)
            positive = positive.repeat(batch, *[1] * (positive.dim() - 1))
            negative = negative.repeat(batch, *[1] * (negative.dim() - 1))
            return torch.cat([negative, positive]) if guided else positive

        switched = {
            "prompt_embeds": both(
                arguments["prompt_embeds"], arguments["negative_prompt_embeds"], cast=True
            )
        }
        if "pooled_prompt_embeds" in arguments:
            switched["add_text_embeds"] = both(
                arguments["pooled_prompt_embeds"],
                arguments["negative_pooled_prompt_embeds"],
                cast=False,
            )
        return switched
