"""Running a :class:`GenerationRequest` through the diffusers pipelines.

The engine reports every denoising step with a cheap preview, stops within
one step when cancelled from another thread (skipping the VAE decode), and
hands back each image with the record that re-creates it. It writes nothing;
:mod:`sdstudio.engine.outputs` does. The passes after the first (hires fix, detailer,
SD upscale) are in :mod:`~sdstudio.engine.later_passes`; what every pass does with a
pipeline, in :mod:`~sdstudio.engine.pipeline_calls`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

import sdstudio
from sdstudio.engine import flow_variation, samplers, speed, variation_noise
from sdstudio.engine.control.annotators import Annotators
from sdstudio.engine.control.guidance import ControlStage
from sdstudio.engine.control.ip_adapters import ImagePromptStage
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.family_settings import check_family_settings
from sdstudio.engine.inputs import Inputs, prepare_inputs
from sdstudio.engine.later_passes import HiresStage, LaterPasses
from sdstudio.engine.metadata.record import ImageRecord
from sdstudio.engine.mode_arguments import mode_arguments, takes_size
from sdstudio.engine.models.split_layout import (
    SplitModel,
    complete,
    module_names,
    recorded_names,
    transformer_part,
)
from sdstudio.engine.networks import ActiveNetworks, Networks
from sdstudio.engine.pipelines import PipelineManager
from sdstudio.engine.progress import CancelToken, Progress, StepReporter
from sdstudio.engine.prompting import per_image, scheduled_embeds
from sdstudio.engine.prompting.wildcards import has_wildcards
from sdstudio.engine.refine import hires as hires_fix
from sdstudio.engine.refine.detailer import check_detailer
from sdstudio.engine.refine.face_detection import OpenDetector, open_detector
from sdstudio.engine.refine.refiner import RefinerStage
from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.engine.tiny_vae import TinyVaes, draft_label
from sdstudio.engine.vae import find_vae, vae_display_name
from sdstudio.engine.variation_noise import NoiseVariation, image_seeds

__all__ = ["CancelToken", "Engine", "GeneratedImage", "Progress", "initial_noise", "takes_size"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """A finished image and the record that re-creates it."""

    image: Image.Image
    record: ImageRecord


class Engine(LaterPasses):
    """Turns requests into images with the pipelines of a :class:`PipelineManager`."""

    def __init__(
        self,
        pipelines: PipelineManager,
        inputs_dir: Path,
        *,
        previews: bool = True,
        networks: Networks | None = None,
        vae_dirs: Callable[[], Iterable[Path]] | None = None,
        text_encoder_dirs: Callable[[], Iterable[Path]] | None = None,
        upscaler_dirs: Callable[[], Iterable[Path]] | None = None,
        control_dirs: Callable[[], Iterable[Path]] | None = None,
        annotator_dirs: Callable[[], Iterable[Path]] | None = None,
        ip_adapter_dirs: Callable[[], Iterable[Path]] | None = None,
        clip_vision_dirs: Callable[[], Iterable[Path]] | None = None,
        detectors: OpenDetector | None = None,
        wildcard_dirs: Callable[[], Iterable[Path]] | None = None,
        tiny_vae_dirs: Callable[[], Iterable[Path]] | None = None,
    ) -> None:
        """``networks`` finds LoRAs and embeddings; without it LoRA tags are only removed.

        ``vae_dirs`` and ``text_encoder_dirs`` give the folders where a VAE or a text
        encoder named by file name is looked for (and where the parts of a transformer
        kept alone are found); ``ip_adapter_dirs`` and ``clip_vision_dirs`` those of the
        IP-Adapters and the CLIP vision encoders of image prompts. ``detectors`` opens the
        detailer's detector a request names (without it: the built-in face detector, or a
        detector file by path). ``wildcard_dirs`` gives the folders of the wildcard files
        prompts name (without it only variants such as ``{a|b}`` resolve).
        ``tiny_vae_dirs`` gives the folders searched for tiny VAEs (previews, draft decodes).
        """
        self.pipelines = pipelines
        self.inputs_dir = inputs_dir
        self.previews = previews
        self.networks = networks
        self.vae_dirs = vae_dirs
        self.text_encoder_dirs = text_encoder_dirs
        self.upscaler_dirs = upscaler_dirs
        """The folders where an upscaler named by file name is looked for."""
        self.upscaler_cache: Any = None
        """The last upscaler model loaded (see :mod:`sdstudio.engine.refine.upscalers`)."""
        self.detectors: OpenDetector = detectors or open_detector
        self.wildcard_dirs = wildcard_dirs
        self.tiny_vaes = TinyVaes(tiny_vae_dirs)
        """Tiny-VAE previews and draft decodes (see :mod:`sdstudio.engine.tiny_vae`)."""
        if networks is not None:
            pipelines.add_unload_listener(networks.forget)
        # The prompt arguments of the last prompt, with the text encoder they
        # were made by and the LoRAs and embeddings active: a batch encodes
        # its prompt once.
        self._prompt_cache: tuple[tuple[Any, ...], Any, dict[str, Any]] | None = None
        self._active = ActiveNetworks()
        self.refiner = RefinerStage(pipelines)
        """The refiner beside the model (see :mod:`sdstudio.engine.refine.refiner`)."""
        self.control = ControlStage(pipelines)
        self.control.folders = control_dirs
        """The ControlNets of the request (see :mod:`sdstudio.engine.control.guidance`)."""
        self.control.annotators = Annotators(annotator_dirs)
        """The annotator folders (``annotator_dirs``) of the preprocessors that need weights."""
        self.image_prompts = ImagePromptStage(pipelines)
        self.image_prompts.folders = ip_adapter_dirs
        self.image_prompts.encoder_folders = clip_vision_dirs
        """The IP-Adapters of the request (see :mod:`sdstudio.engine.control.ip_adapters`)."""

    def generate(
        self,
        request: GenerationRequest,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        on_status: Callable[[str], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> Iterator[GeneratedImage]:
        """Generate the request's images one by one.

        Image *i* of a batch uses seed ``seed + i`` and is generated on its
        own, so its record re-creates it exactly. Raises
        :class:`GenerationCancelled` when cancelled (images already yielded
        stay valid) and :class:`SdStudioError` subclasses for user errors; a
        prompt over the length limit is refused before anything is loaded. Prompts with
        wildcards or variants are resolved for each image with its seed (see
        :mod:`~sdstudio.engine.prompting.per_image`).
        """
        if request.mode is not Mode.UPSCALE:
            per_image.check_pass_prompts(request)
        if request.mode is not Mode.UPSCALE and has_wildcards(
            request.prompt, request.negative_prompt
        ):
            folders = list(self.wildcard_dirs()) if self.wildcard_dirs else []
            run = functools.partial(self._generate, on_status=on_status, cancel=cancel)
            yield from per_image.generate(request, folders, run, on_progress)
            return
        yield from self._generate(
            request, on_progress=on_progress, on_status=on_status, cancel=cancel
        )

    def _generate(
        self,
        request: GenerationRequest,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        on_status: Callable[[str], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> Iterator[GeneratedImage]:
        """Generate the request's images, its prompts used as they are."""
        request.check_prompts()
        cancel = cancel or CancelToken()
        if request.mode is Mode.UPSCALE:
            only = self._upscale_only(request.with_seed_resolved(), on_progress, on_status, cancel)
            yield GeneratedImage(*only)
            return
        self._prompt_cache = None  # the text encoder may have changed in place
        self._schedule_cache = None
        request = request.with_seed_resolved()
        samplers.check_names(request.sampler, request.schedule)  # before anything loads
        self.control.check(request)
        self.image_prompts.check(request)
        hires_fix.check_hires(request, self.upscaler_dirs() if self.upscaler_dirs else ())
        self.refiner.check(request)
        if request.refiner is not None:
            scheduled_embeds.refuse(request.prompt, request.negative_prompt, "the refiner's pass")
        check_detailer(request)
        variation_noise.check_request(request)
        detector = self.detectors(request.detailer.detector) if request.detailer else None
        request, split = self._complete_split(request, on_status)
        inputs = prepare_inputs(request, self.inputs_dir, on_status)
        vae = self._find_vae(request.vae) if split is None else None
        cancel.raise_if_cancelled()
        pipe = self.pipelines.pipeline(request.model, request.mode, on_status, vae=vae, split=split)
        model = self.pipelines.model
        assert model is not None
        family = model.family
        samplers.check_combination(request.sampler, request.schedule, flow=family.flow)
        check_family_settings(family, request, on_status)
        speed.check(request.fast, pipe, family.label)
        self._fast = request.fast
        self._on_status = on_status
        if variation_noise.is_used(request):
            variation_noise.check_pipeline(pipe, family.label, request)
        hires = self._hires(request, pipe, vae, split, on_status)
        detail = self._detail_pass(request, pipe, detector, vae, split, on_status)
        extra = self._active.record_extra()
        if family.uses_distilled_guidance(pipe):
            extra["distilled_guidance"] = True
        if vae is not None:
            extra["vae"] = {"name": vae_display_name(vae), "hash": self.pipelines.vae_hash()}
        draft = self.tiny_vaes.check_draft(request, family)
        if draft is not None:
            extra["draft_decode"] = draft_label(draft)
        if split is not None and module_names(split):
            extra["modules"] = module_names(split)
        refining = self.refiner.prepare(request, on_status)
        if refining is not None:
            extra["refiner"] = refining.record()
        controlling = self.control.prepare(inputs, pipe, on_status)
        if controlling is not None:
            extra["control"] = controlling.record()
        prompting = self.image_prompts.prepare(inputs, pipe, on_status)
        if prompting is not None:
            extra["ip_adapters"] = prompting.record()
        for index, (seed, variation_seed) in enumerate(image_seeds(request)):
            variation = NoiseVariation.of(request, seed, variation_seed)
            cancel.raise_if_cancelled()
            started = time.perf_counter()
            preview = self.tiny_vaes.preview(family, pipe, on_status) if self.previews else None
            steps = StepReporter(on_progress, cancel, preview, index, request.batch_size)
            decoders = [pipe, *([self.refiner.active.pipe] if self.refiner.active else [])]
            with self.tiny_vaes.drafting(draft, decoders):
                image = self._run_one(pipe, inputs, seed, steps, hires, on_status, variation)
                image_extra = extra
                if detail is not None:
                    within = inputs.overlay if request.mode is Mode.INPAINT else None
                    image, detailed = detail.run(image, seed, steps, on_status, within)
                    image_extra = {**extra, "detailer": detailed.record()}
            record = ImageRecord(
                request=inputs.request.replace(
                    seed=seed, variation_seed=variation_seed, batch_size=1
                ),
                model_name=model.name,
                model_hash=self.pipelines.model_hash(),
                device=self.pipelines.device_in_use().describe(),
                duration_s=time.perf_counter() - started,
                created=datetime.now().astimezone().isoformat(timespec="milliseconds"),
                app_version=sdstudio.__version__,
                extra=image_extra,
            )
            yield GeneratedImage(image, record)

    def _complete_split(
        self, request: GenerationRequest, on_status: Callable[[str], None] | None
    ) -> tuple[GenerationRequest, SplitModel | None]:
        """For a model kept as a transformer file alone: the part files that complete it,
        and the request naming them."""
        path = self.pipelines.find_model(request.model)
        part = transformer_part(path)
        if part is None:
            if request.text_encoders:
                raise InvalidRequest(
                    "Text encoders are given only with a transformer file kept alone "
                    "(ComfyUI's diffusion_models); this model has its own."
                )
            return request, None
        split = complete(
            path,
            part,
            request.text_encoders,
            request.vae,
            text_dirs=self.text_encoder_dirs() if self.text_encoder_dirs else (),
            vae_dirs=self.vae_dirs() if self.vae_dirs else (),
            on_status=on_status,
        )
        encoders, vae = recorded_names(split, request.text_encoders, request.vae)
        return request.replace(text_encoders=encoders, vae=vae), split

    def _find_vae(self, value: str) -> Path | None:
        if not value:
            return None
        folders = self.vae_dirs() if self.vae_dirs is not None else ()
        return find_vae(value, folders)

    def _run_one(
        self,
        pipe: Any,
        inputs: Inputs,
        seed: int,
        steps: StepReporter,
        hires: HiresStage | None,
        on_status: Callable[[str], None] | None,
        variation: NoiseVariation | None = None,
    ) -> Image.Image:
        import torch

        request = inputs.request
        model = self.pipelines.model
        assert model is not None
        family = model.family
        if hires is not None and hires.plan.own_prompts:  # the hires pass switched them
            self._apply_networks(pipe, request.prompt, request.negative_prompt)
        pipe.scheduler = samplers.make_scheduler(
            request.sampler, request.schedule, self.pipelines.scheduler_config, seed=seed
        )
        later = hires.plan.steps if hires is not None else 0
        latent = hires is not None and hires.plan.latent
        refining = self.refiner.active
        switch = refining.split(request, seed) if refining is not None else None
        refined = switch.refiner_steps if switch is not None else 0
        generator = torch.Generator("cpu").manual_seed(seed)
        kwargs: dict[str, Any] = {
            **self._prompt_arguments(pipe, request.prompt, request.negative_prompt, request),
            "num_inference_steps": request.steps,
            **family.guidance_arguments(pipe, request.guidance_scale, request.distilled_guidance),
            "generator": generator,
            "callback_on_step_end": steps.callback(
                request.width, request.height, later=later + refined
            ),
            "output_type": "latent" if latent else "pil",
        }
        kwargs.update(mode_arguments(pipe, inputs, inpainting=model.inpainting, seed=seed))
        own_noise = None  # the variation of the noise a pipeline draws in text to image
        if request.mode is Mode.TXT2IMG and not model.inpainting:
            noise = initial_noise(pipe, request.width, request.height, generator, variation)
            if noise is not None:
                kwargs["latents"] = noise
            else:
                own_noise = variation
        else:
            variation_noise.vary_call(pipe, kwargs, variation)
        if request.upscale is not None:  # SD upscale: the pass runs once per tile
            return self._sd_upscale(pipe, kwargs, inputs, seed, steps, on_status)
        if switch is not None and refining is not None:
            kwargs.update(refining.model_arguments())
        control = self.control.active
        if control is not None:  # the ControlNet pipeline, sharing the model's weights
            kwargs.update(control.arguments(inputs, seed))
        called = control.pipe if control is not None else pipe
        called.scheduler = pipe.scheduler  # this image's sampler, made above
        if self.image_prompts.active is not None:
            size = (request.width, request.height)
            kwargs.update(self.image_prompts.active.arguments(called, kwargs, size))
        with flow_variation.varied_start(called, own_noise):  # a flow model's text to image
            result = self._call(called, kwargs, request.width, request.height)
        output = result.images
        if switch is not None and refining is not None:  # the refiner finishes the latents
            steps.raise_if_cancelled()
            finish = refining.arguments(
                output,
                request,
                switch,
                seed,
                generator=generator,
                callback=steps.callback(request.width, request.height, later=later),
                output_type="latent" if latent else "pil",
            )
            output = self._call(refining.pipe, finish, request.width, request.height).images
        if hires is None:
            image: Image.Image = output[0]
            return inputs.finish(image)
        return self._hires_pass(hires, output, request, seed, steps, on_status, variation)


def initial_noise(
    pipe: Any, width: int, height: int, generator: Any, variation: NoiseVariation | None = None
) -> Any | None:
    """The starting noise of a text-to-image image, drawn as ComfyUI draws it
    (``None`` for a pipeline without a UNet, which draws its own).

    It is drawn in float32 on the CPU from ``generator`` (a CPU generator seeded
    with the seed, which takes any seed from 0 to 2**64-1) and then cast to the
    pipeline's dtype, so a seed gives the same noise on every device and in every
    precision. Drawn in half precision, as diffusers would draw it for a
    half-precision pipeline, the numbers differ whenever the latent holds a
    number of values that is not a multiple of 16 (72x72 pixels, for one).
    A ``variation`` (a variation seed, a seed resize) changes it before the cast.
    """
    import torch

    unet = getattr(pipe, "unet", None)
    factor = getattr(pipe, "vae_scale_factor", None)
    if unet is None or not isinstance(factor, int):
        return None  # not a UNet pipeline: it draws its own noise
    shape = (1, unet.config.in_channels, height // factor, width // factor)
    noise = torch.randn(shape, generator=generator, dtype=torch.float32, device="cpu")
    if variation is not None:
        noise = variation.apply(noise, factor)
    return noise.to(dtype=unet.dtype)
