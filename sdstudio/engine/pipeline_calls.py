"""What every pass of a generation does with a pipeline: switch on the LoRAs and
embeddings its prompts name, turn the prompts into the pipeline's arguments (once for
a batch), and run it, turning running out of memory into :class:`OutOfMemory`."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

from sdstudio.engine import prompt_embeds, speed
from sdstudio.engine.compiled import (
    denoiser,
    generator_states,
    is_compile_failure,
    is_compiled,
    restore,
)
from sdstudio.engine.errors import GenerationCancelled, OutOfMemory, SdStudioError
from sdstudio.engine.families import Prompting
from sdstudio.engine.family_settings import plain_arguments
from sdstudio.engine.networks import ActiveNetworks, Networks, strip_notice
from sdstudio.engine.pipelines import PipelineManager
from sdstudio.engine.prompting import scheduled_embeds
from sdstudio.engine.prompting.schedules import schedule_steps
from sdstudio.engine.request import GenerationRequest

log = logging.getLogger(__name__)

CALLBACK = "callback_on_step_end"


class PipelineCalls:
    """The engine's calls into its pipelines (a base of :class:`~.generation.Engine`)."""

    pipelines: PipelineManager
    networks: Networks | None
    _prompt_cache: tuple[tuple[Any, ...], Any, dict[str, Any]] | None
    _active: ActiveNetworks
    _fast: speed.FastMode | None = None
    """The request's fast mode, on the denoiser for each call (see :mod:`~.speed`)."""
    _schedule_cache: tuple[tuple[Any, ...], Any, scheduled_embeds.ScheduledPrompts] | None = None
    """The last scheduled prompt pair, with the text encoder that encoded it."""
    _timeline: scheduled_embeds.PromptTimeline | None = None
    """The switches of the pass whose prompt arguments were made last."""
    _on_status: Callable[[str], None] | None = None
    """The status line of the generation running (where a compiling denoiser says so)."""

    def _apply_networks(
        self,
        pipe: Any,
        prompt: str,
        negative_prompt: str,
        on_status: Callable[[str], None] | None = None,
    ) -> ActiveNetworks:
        """Switch on the LoRAs and embeddings the prompts name (none: the bare model)."""
        self._prompt_cache = None  # text-encoder LoRAs change the embeddings
        self._schedule_cache = None
        if self.networks is None:
            notice = strip_notice(prompt, negative_prompt)
            if notice and on_status:
                on_status(notice)
            return ActiveNetworks()
        return self.networks.apply(pipe, prompt, negative_prompt, on_status)

    def _call(self, pipe: Any, kwargs: dict[str, Any], width: int, height: int) -> Any:
        """Run a pipeline; running out of memory raises :class:`OutOfMemory`."""
        import torch

        timeline = self._timeline
        if timeline is not None and timeline.started(kwargs):  # prompt editing
            kwargs = {**kwargs, CALLBACK: timeline.wrap(kwargs.get(CALLBACK))}
        try:
            return self._compiled_call(pipe, kwargs, width, height)
        except (GenerationCancelled, SdStudioError):
            raise
        except torch.OutOfMemoryError:
            self._recover_memory()
            raise OutOfMemory(
                f"The {self.pipelines.device.device.upper()} device ran out of memory at "
                f"{width}x{height}; try a smaller size."
            ) from None
        except RuntimeError as error:
            if "out of memory" in str(error).lower():
                self._recover_memory()
                raise OutOfMemory(f"Out of memory: {error}.") from None
            raise

    def _compiled_call(self, pipe: Any, kwargs: dict[str, Any], width: int, height: int) -> Any:
        """Run a pipeline with the request's fast mode; where the denoiser is compiled and
        compiling fails, run it again eager from the same random state."""
        if not is_compiled(denoiser(pipe)):  # eager: nothing to fall back from
            with speed.applied(pipe, self._fast, self._family_label()):
                return pipe(**kwargs)
        compiler = self.pipelines.compiler
        batch = int(kwargs.get("num_images_per_prompt") or 1)
        compiler.before(pipe, width, height, batch, self._on_status)
        states = generator_states(kwargs)
        try:
            with speed.applied(pipe, self._fast, self._family_label()):
                return pipe(**kwargs)
        except Exception as error:
            if not is_compile_failure(error):
                raise
            compiler.give_up(pipe, error, self._on_status)
        restore(states)
        with speed.applied(pipe, self._fast, self._family_label()):
            return pipe(**kwargs)

    def _family_label(self) -> str:
        model = self.pipelines.model
        return model.family.label if model is not None else "these"

    def _prompt_arguments(
        self,
        pipe: Any,
        prompt: str,
        negative_prompt: str,
        request: GenerationRequest,
        *,
        hires: tuple[int, str] | None = None,
        steps: int | None = None,
    ) -> dict[str, Any]:
        """The prompts as text, or as A1111-style embeddings when the text needs them.

        Plain prompts go in as text, so their images stay what they were;
        emphasis, BREAK, prompts over 75 tokens and clip skip take embeddings
        (see :mod:`sdstudio.engine.prompt_embeds`). Prompt editing and alternation
        start with the embeddings of the first step, and the next :meth:`_call` with
        them switches the rest from its step callback; ``hires`` gives a hires
        pass's (steps, sampler), whose steps count on from the first pass's, and
        ``steps`` the steps of a pass that has its own (the detailer's).
        """
        key = (prompt, negative_prompt, request.clip_skip, self._active.signature)
        model = self.pipelines.model
        if model is not None and model.family.prompting is Prompting.PLAIN:
            scheduled_embeds.refuse(prompt, negative_prompt, f"{model.family.label} models")
            return plain_arguments(model.family, prompt, negative_prompt)
        if scheduled_embeds.is_scheduled(prompt, negative_prompt):
            return self._scheduled_arguments(pipe, key, request, hires, steps)
        encoder = getattr(pipe, "text_encoder", None)
        cached = self._prompt_cache
        if cached is not None and encoder is not None:
            cached_key, cached_encoder, cached_arguments = cached
            if cached_key == key and cached_encoder() is encoder:
                return cached_arguments
        arguments = prompt_embeds.prompt_arguments(pipe, prompt, negative_prompt, request.clip_skip)
        if encoder is not None:
            self._prompt_cache = (key, weakref.ref(encoder), arguments)
        return arguments

    def _scheduled_arguments(
        self,
        pipe: Any,
        key: tuple[Any, ...],
        request: GenerationRequest,
        hires: tuple[int, str] | None,
        steps: int | None,
    ) -> dict[str, Any]:
        """The first step's embeddings of a scheduled prompt pair, the pass's switches
        kept for :meth:`_call` (A1111 counts the steps of both samplers' model calls)."""
        encoder = getattr(pipe, "text_encoder", None) or getattr(pipe, "text_encoder_2", None)
        cached = self._schedule_cache
        prompts = None
        if cached is not None and cached[0] == key and cached[1]() is encoder:
            prompts = cached[2]
        if prompts is None:
            prompts = scheduled_embeds.ScheduledPrompts(pipe, key[0], key[1], request.clip_skip)
            if encoder is not None:
                self._schedule_cache = (key, weakref.ref(encoder), prompts)
        calls = schedule_steps(steps or request.steps, request.sampler)
        if hires is None:
            self._timeline = prompts.timeline(calls)
        else:
            self._timeline = prompts.timeline(calls, schedule_steps(*hires))
        return self._timeline.first_arguments()

    def _recover_memory(self) -> None:
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover - best effort only
            log.debug("Could not empty the device cache", exc_info=True)
