"""The refiner: a second model that finishes the denoising the model began (A1111's
``Refiner`` and ``Refiner switch at``).

It runs as A1111 runs it (``sd_samplers_common.apply_refiner``) and as diffusers' SDXL
base + refiner recipe does:

- The model denoises the steps whose timestep lies above the switch. A1111 switches
  models once ``(999 - timestep) / 1000`` reaches ``switch at``; diffusers'
  ``denoising_end`` makes the same cut (timesteps from ``round(1000 - switch_at * 1000)``
  up). The latents then go to the refiner's image-to-image pipeline with
  ``denoising_start`` at the same point, the same number of steps, the same generator
  and a scheduler of the same sampler and schedule type made from the refiner's own
  config. (A multistep sampler starts its history afresh there, as diffusers'
  schedulers do not hand it on.)
- The refiner encodes the prompts with its own text encoders (an SDXL refiner has only
  SDXL's second one, see :mod:`sdstudio.engine.prompt_embeds`). Its aesthetic scores are
  A1111's defaults, which are diffusers' (6 for the prompt, 2.5 for the negative one).
  LoRAs and embeddings stay with the model.
- The model is an SDXL model and the refiner an SDXL refiner or another SDXL model: they
  share a latent space. A1111 swaps in whatever checkpoint it is given; an SD 1.x or 2.x
  model there denoises latents it was never trained on, so such a pair is refused here,
  before anything loads. A refiner that is the model itself changes nothing (A1111 does
  not switch then either).
- Image-to-image whose strength leaves only steps below the switch runs them all on the
  refiner, as A1111 switches at the first step then.
- With a hires fix the refiner runs in the first pass and the hires pass on the model
  (A1111's "Hires fix: which pass to enable refiner for" set to "first pass").
- Inpainting, inpainting models and SD upscale are refused: their passes need the mask
  or the tiles the refiner's pipeline does not take.

The refiner stays loaded in a second :class:`PipelineManager` beside the model's, with
its own memory plan (offloaded where memory is short, or always in the "low" mode); a
request without a refiner frees it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.engine import prompt_embeds, samplers
from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.models.families import Family, ModelInfo, detect_family
from sdstudio.engine.pipelines import PipelineManager
from sdstudio.engine.request import GenerationRequest, Mode

REFINED_FAMILIES = (Family.SDXL,)
"""The families whose models take a refiner."""
REFINER_FAMILIES = (Family.SDXL, Family.SDXL_REFINER)
"""The families a refiner of an SDXL model may come from (the same latent space)."""


def refiner_as_model_message(name: str) -> str:
    """Why an SDXL refiner is refused as the model, and what to do."""
    return (
        f"{name} is an SDXL refiner: it finishes the images of an SDXL model and makes none "
        "by itself. Choose an SDXL model as the model and this one as its refiner."
    )


@dataclass(frozen=True, slots=True)
class Split:
    """How the steps of one image divide between the model and the refiner."""

    model_steps: int
    """Steps the model runs (0 when image-to-image starts below the switch)."""
    refiner_steps: int
    start: float
    """The refiner's ``denoising_start``."""


@dataclass(frozen=True, slots=True)
class RefinerPass:
    """The refiner loaded for a request, and what finishes each of its images."""

    pipe: Any
    """The refiner's image-to-image pipeline."""
    switch_at: float
    scheduler_config: dict[str, Any]
    """The refiner's own scheduler config."""
    model_scheduler_config: dict[str, Any]
    """The model's, whose schedule decides where the switch falls."""
    name: str
    hash: str

    def record(self) -> dict[str, str]:
        """The refiner for an image's record (A1111's ``Refiner: name [hash]``)."""
        return {"name": self.name, "hash": self.hash}

    def split(self, request: GenerationRequest, seed: int) -> Split | None:
        """How ``request``'s steps divide, read from the two schedulers exactly as the
        pipelines will cut them; ``None`` when the model runs them all (a switch past
        the last step)."""
        model = _scheduler(request, self.model_scheduler_config, seed)
        timesteps = [float(t) for t in model.timesteps]
        if request.mode is not Mode.TXT2IMG:  # the last steps the strength selects
            kept = min(int(request.steps * request.strength), request.steps)
            timesteps = timesteps[max(request.steps - kept, 0) * model.order :]
        train = model.config.num_train_timesteps
        cutoff = _cutoff(self.switch_at, train)
        ran = sum(1 for t in timesteps if t >= cutoff)
        if ran == len(timesteps):
            return None
        start = self.switch_at
        if not ran:  # the refiner starts where the model's noise is: its first timestep
            start = max((train - (math.floor(timesteps[0]) + 1)) / train, 0.4 / train)
        refiner = _scheduler(request, self.scheduler_config, seed)
        below = _cutoff(start, refiner.config.num_train_timesteps)
        steps = sum(1 for t in refiner.timesteps if float(t) < below)
        if refiner.order == 2 and steps % 2 == 0:  # as the pipeline rounds a 2nd-order cut
            steps += 1
        return Split(ran, steps, start)

    def model_arguments(self) -> dict[str, Any]:
        """What the model's own pass adds: it stops at the switch (after its noise is
        added, even when it runs no step) and hands on its latents."""
        return {"denoising_end": self.switch_at, "output_type": "latent"}

    def arguments(
        self,
        latents: Any,
        request: GenerationRequest,
        split: Split,
        seed: int,
        *,
        generator: Any,
        callback: Callable[..., Any],
        output_type: str,
    ) -> dict[str, Any]:
        """The refiner pipeline's arguments to finish the model's ``latents``."""
        self.pipe.scheduler = samplers.make_scheduler(
            request.sampler, request.schedule, self.scheduler_config, seed=seed
        )
        return {
            **prompt_embeds.prompt_arguments(
                self.pipe, request.prompt, request.negative_prompt, request.clip_skip
            ),
            "image": latents,
            "num_inference_steps": request.steps,
            "denoising_start": split.start,
            "guidance_scale": request.guidance_scale,
            "generator": generator,
            "callback_on_step_end": callback,
            "output_type": output_type,
        }


class RefinerStage:
    """Checks a request's refiner before anything loads, keeps the refiner loaded beside
    the model (a second :class:`PipelineManager`), and hands out the pass of the request
    that runs (:attr:`active`)."""

    def __init__(self, pipelines: PipelineManager, *, single_file_config: Path | None = None):
        """``single_file_config`` is a diffusers folder to take a single-file refiner's
        configs from (without it: the shipped SDXL refiner configs)."""
        self._pipelines = pipelines
        self.single_file_config = single_file_config
        self._manager: PipelineManager | None = None
        self.active: RefinerPass | None = None
        """The refiner pass of the request running (``None``: none)."""

    @property
    def manager(self) -> PipelineManager | None:
        """The refiner's pipeline manager, once a refiner was asked for."""
        return self._manager

    def check(self, request: GenerationRequest) -> None:
        """Refuse, before anything loads, a refiner as the model and a refiner that cannot
        finish the model's images (another latent space, another mode)."""
        path = self._pipelines.find_model(request.model)
        model = _info(path)
        if model is not None and model.family is Family.SDXL_REFINER:
            raise ModelError(refiner_as_model_message(path.name))
        refiner = request.refiner
        if refiner is None:
            return
        if request.mode is Mode.INPAINT or request.upscale is not None:
            what = "inpainting" if request.mode is Mode.INPAINT else "SD upscale"
            raise InvalidRequest(
                f"The refiner runs with text-to-image and image-to-image, not with {what}; "
                "turn the refiner off."
            )
        refiner_path = self._pipelines.find_model(refiner.model)
        if refiner_path == path:
            return
        if model is not None and model.family not in (*REFINED_FAMILIES, Family.UNKNOWN):
            raise InvalidRequest(
                f"{path.name} is not an SDXL model ({model.label}), and a refiner finishes "
                "SDXL models' images. Turn the refiner off, or choose an SDXL model."
            )
        found = _info(refiner_path)
        if found is None or found.family is Family.UNKNOWN:
            return  # told once it is loaded
        if found.family not in REFINER_FAMILIES:
            raise InvalidRequest(
                f"The refiner {refiner_path.name} is not an SDXL refiner or model "
                f"({found.label}): its latents are not SDXL's, so it cannot finish an SDXL "
                "model's images. Choose an SDXL refiner or another SDXL model."
            )
        if found.inpainting:
            raise InvalidRequest(
                f"The refiner {refiner_path.name} is an inpainting model; choose an SDXL "
                "refiner or an SDXL model that is not for inpainting."
            )

    def prepare(
        self, request: GenerationRequest, on_status: Callable[[str], None] | None = None
    ) -> RefinerPass | None:
        """Load the request's refiner beside the loaded model (or free it when the request
        has none) and make it :attr:`active`. Raises :class:`InvalidRequest` for a loaded
        model or refiner that cannot take part (found only from their weights)."""
        self.active = None
        refiner = request.refiner
        if refiner is None:
            self.unload()
            return None
        model = self._pipelines.model
        assert model is not None
        if model.family.id not in REFINED_FAMILIES or model.inpainting:
            kind = "an inpainting model" if model.inpainting else f"{model.family.label}"
            raise InvalidRequest(
                f"{model.name} is not an SDXL model a refiner can finish ({kind}). "
                "Turn the refiner off, or choose an SDXL model."
            )
        path = self._pipelines.find_model(refiner.model)
        if path == model.path:
            self.unload()
            return None
        manager = self._manager or PipelineManager(
            self._pipelines.device,
            single_file_config=self.single_file_config,
            hash_cache=self._pipelines.hash_cache,
            memory_mode=self._pipelines.memory_mode,
            find_model=self._pipelines.find_model,
        )
        self._manager = manager
        pipe = manager.pipeline(refiner.model, Mode.IMG2IMG, on_status, vae=self._pipelines.vae)
        loaded = manager.model
        assert loaded is not None
        _check_loaded(pipe, loaded.name)
        self.active = RefinerPass(
            pipe,
            refiner.switch_at,
            manager.scheduler_config,
            self._pipelines.scheduler_config,
            loaded.name,
            manager.model_hash(),
        )
        return self.active

    def unload(self) -> None:
        """Free the refiner's weights."""
        if self._manager is not None:
            self._manager.unload()
        self.active = None


def _check_loaded(pipe: Any, name: str) -> None:
    """Refuse a loaded refiner whose files did not tell its family: it must be an SDXL
    UNet (size and text conditioning) with a text encoder of SDXL's."""
    unet = getattr(pipe, "unet", None)
    config = getattr(unet, "config", None)
    xl = getattr(config, "addition_embed_type", None) == "text_time"
    if not xl or getattr(pipe, "text_encoder_2", None) is None:
        raise InvalidRequest(
            f"The refiner {name} is not an SDXL refiner or SDXL model, whose latents are "
            "the only ones an SDXL model's refiner can finish."
        )
    if getattr(config, "in_channels", 4) != 4:
        raise InvalidRequest(f"The refiner {name} is an inpainting model; choose another.")


def _info(path: Path) -> ModelInfo | None:
    """A model's family from its header or config (``None`` where they cannot tell)."""
    try:
        return detect_family(path)
    except (ModelError, OSError):
        return None


def _scheduler(request: GenerationRequest, config: dict[str, Any], seed: int) -> Any:
    scheduler = samplers.make_scheduler(request.sampler, request.schedule, config, seed=seed)
    scheduler.set_timesteps(request.steps, device="cpu")
    return scheduler


def _cutoff(fraction: float, train_timesteps: int) -> int:
    """The timestep at which ``denoising_end``/``denoising_start`` cut (diffusers' rule)."""
    return round(train_timesteps - fraction * train_timesteps)
