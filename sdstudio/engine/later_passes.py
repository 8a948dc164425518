"""The passes after a generation's first: the hires fix (on the image-to-image pipeline
that shares the model's weights), the detailer (on the inpainting one), SD upscale's
tiles, and the upscale-only job, which loads no model at all."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from sdstudio.engine import samplers
from sdstudio.engine.inputs import Inputs
from sdstudio.engine.metadata.record import ImageRecord
from sdstudio.engine.mode_arguments import takes_size
from sdstudio.engine.models.split_layout import SplitModel
from sdstudio.engine.pipeline_calls import PipelineCalls
from sdstudio.engine.progress import CancelToken, Progress, StepReporter
from sdstudio.engine.refine import hires as hires_fix
from sdstudio.engine.refine.detailer import DetailPass
from sdstudio.engine.refine.face_detection import FaceDetector
from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.engine.variation_noise import NoiseVariation, vary_call

if TYPE_CHECKING:
    from sdstudio.engine.control.guidance import ControlStage
    from sdstudio.engine.control.ip_adapters import ImagePromptStage


@dataclass(frozen=True, slots=True)
class HiresStage:
    """A request's hires pass on the loaded model, with the pipeline it runs on."""

    plan: hires_fix.HiresPass
    pipe: Any


class LaterPasses(PipelineCalls):
    """The passes after the first (a base of :class:`~.generation.Engine`)."""

    inputs_dir: Path
    upscaler_dirs: Callable[[], Iterable[Path]] | None
    upscaler_cache: Any
    control: ControlStage
    image_prompts: ImagePromptStage

    def _upscale_only(
        self,
        request: GenerationRequest,
        on_progress: Callable[[Progress], None] | None,
        on_status: Callable[[str], None] | None,
        cancel: CancelToken,
    ) -> tuple[Image.Image, ImageRecord]:
        """An ``upscale`` job: no model is loaded (see :mod:`.refine.upscale_job`)."""
        from sdstudio.engine.refine.upscale_job import UpscaleContext, run_upscale

        context = UpscaleContext(
            self.inputs_dir, self.upscaler_dirs, self.pipelines.device.device, self.upscalers()
        )
        return run_upscale(
            request, context, on_progress=on_progress, on_status=on_status, cancel=cancel
        )

    def upscalers(self) -> Any:
        """The upscaler cache, made on first use."""
        if self.upscaler_cache is None:
            from sdstudio.engine.refine.upscalers import UpscalerCache

            self.upscaler_cache = UpscalerCache()
        return self.upscaler_cache

    def _hires(
        self,
        request: GenerationRequest,
        pipe: Any,
        vae: Path | None,
        split: SplitModel | None,
        on_status: Callable[[str], None] | None,
    ) -> HiresStage | None:
        """Switch on the LoRAs and embeddings, and plan the hires pass, if any, on the
        image-to-image pipeline that shares the model's weights.

        :attr:`_active` is left naming the networks of both passes, for the records.
        """
        first = (request.prompt, request.negative_prompt)
        self._active = self._apply_networks(pipe, *first, on_status)
        model = self.pipelines.model
        assert model is not None
        folders = self.upscaler_dirs() if self.upscaler_dirs else ()
        plan = hires_fix.plan_hires(request, model.family, model.inpainting, folders)
        if plan is None:
            return None
        hires_pipe = self.pipelines.pipeline(
            request.model, Mode.IMG2IMG, on_status, vae=vae, split=split
        )
        if plan.own_prompts:
            second = self._apply_networks(hires_pipe, plan.prompt, plan.negative_prompt, on_status)
            self._active = hires_fix.both_passes(self._active, second)
        return HiresStage(plan, hires_pipe)

    def _detail_pass(
        self,
        request: GenerationRequest,
        first: Any,
        detector: FaceDetector | None,
        vae: Path | None,
        split: SplitModel | None,
        on_status: Callable[[str], None] | None,
    ) -> DetailPass | None:
        """The detail pass, if any, on the inpainting pipeline that shares the model's
        weights (see :mod:`sdstudio.engine.refine.detailer`); :attr:`_active` is left naming
        the networks its prompts add, for the records."""
        if detector is None:
            return None
        pipe = self.pipelines.pipeline(request.model, Mode.INPAINT, on_status, vae=vae, split=split)
        model = self.pipelines.model
        assert model is not None
        detail_steps = (request.detailer.steps if request.detailer else 0) or request.steps
        detail = DetailPass(
            request,
            detector,
            pipe,
            model.family,
            self.pipelines.scheduler_config,
            prompts=lambda text, negative: self._prompt_arguments(
                pipe, text, negative, request, steps=detail_steps
            ),
            call=lambda kwargs, width, height: self._call(pipe, kwargs, width, height),
            networks=lambda text, negative: self._apply_networks(pipe, text, negative),
        )
        detail.switched = request.hires is not None  # a hires pass may have its own networks
        for prompts in detail.own_prompts:
            own = self._apply_networks(pipe, *prompts, on_status)
            self._active = hires_fix.both_passes(self._active, own)
        if detail.own_prompts:
            self._apply_networks(first, request.prompt, request.negative_prompt)
        return detail

    def _hires_pass(
        self,
        hires: HiresStage,
        output: Any,
        request: GenerationRequest,
        seed: int,
        steps: StepReporter,
        on_status: Callable[[str], None] | None,
        variation: NoiseVariation | None = None,
    ) -> Image.Image:
        """Upscale the first pass's output (latents or images) and repaint it; a
        ``variation`` varies the noise it adds as the first pass's (A1111's rule)."""
        import torch

        plan, pipe = hires.plan, hires.pipe
        model = self.pipelines.model
        assert model is not None
        if on_status:
            on_status(plan.status())
        start = hires_fix.start(
            pipe,
            plan,
            output,
            request.width,
            request.height,
            upscalers=self.upscalers(),
            device=self.pipelines.device.device,
            on_status=on_status,
            cancel=steps.cancel_token,
        )
        steps.raise_if_cancelled()
        if plan.own_prompts:
            self._apply_networks(pipe, plan.prompt, plan.negative_prompt)
        pipe.scheduler = samplers.make_scheduler(
            plan.sampler, plan.schedule, self.pipelines.scheduler_config, seed=seed
        )
        kwargs: dict[str, Any] = {
            **self._prompt_arguments(
                pipe, plan.prompt, plan.negative_prompt, request, hires=(plan.steps, plan.sampler)
            ),
            **model.family.guidance_arguments(
                pipe, plan.guidance_scale, request.distilled_guidance
            ),
            "generator": torch.Generator("cpu").manual_seed(seed),
            "callback_on_step_end": steps.callback(plan.width, plan.height, hires=True),
            "output_type": "pil",
            **hires_fix.pass_arguments(
                plan, start, inpainting=model.inpainting, sized=takes_size(pipe)
            ),
        }
        vary_call(pipe, kwargs, variation)
        if self.control.active is not None:  # the units guide the hires pass too
            size = (plan.width, plan.height)
            guided, control = self.control.active.hires(pipe, request, seed, size)
            guided.scheduler = pipe.scheduler  # this image's sampler (made above)
            pipe = guided
            kwargs.update(control)
        if self.image_prompts.active is not None:  # and the image prompts
            size = (plan.width, plan.height)
            kwargs.update(self.image_prompts.active.arguments(pipe, kwargs, size))
        result = self._call(pipe, kwargs, plan.width, plan.height)
        image: Image.Image = result.images[0]
        return image

    def _sd_upscale(
        self,
        pipe: Any,
        kwargs: dict[str, Any],
        inputs: Inputs,
        seed: int,
        steps: StepReporter,
        on_status: Callable[[str], None] | None,
    ) -> Image.Image:
        """Upscale the source, then repaint it tile by tile (see :mod:`.refine.sd_upscale`)."""
        from sdstudio.engine.refine import sd_upscale
        from sdstudio.engine.refine.upscalers import upscale_image

        settings = inputs.request.upscale
        assert settings is not None and inputs.image is not None
        if on_status:
            on_status(f"SD upscale: upscaling the source by {settings.scale:g}…")
        upscaled = upscale_image(
            inputs.image,
            settings.upscaler,
            settings.scale,
            folders=list(self.upscaler_dirs()) if self.upscaler_dirs else [],
            device=self.pipelines.device.device,
            tile=settings.tile,
            cancel=steps.cancel_token,
            cache=self.upscalers(),
        )
        run = sd_upscale.TilePass(inputs.request, kwargs, seed, steps)
        return run.repaint(upscaled, lambda a, w, h: self._call(pipe, a, w, h).images[0], on_status)
