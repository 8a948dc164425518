"""The hires fix: a second pass that upscales the first pass's image and repaints it
with image-to-image on the same model, as A1111 runs it
(``StableDiffusionProcessingTxt2Img.sample_hr_pass``).

- The ``Latent`` upscalers resize the first pass's latents with
  ``torch.nn.functional.interpolate`` in the mode and antialiasing their names say,
  and image-to-image starts from those latents; ``Lanczos`` and ``Nearest`` (and
  A1111's ``None``, a Lanczos resize) resize the decoded image with Pillow, and an
  upscaler model file (``4x-UltraSharp``, ``R-ESRGAN 4x+``: see
  :mod:`sdstudio.engine.refine.upscalers`) upscales it in tiles. A ``Hires resize`` of another
  shape than the first pass is covered keeping the shape and its centre cut out, as
  A1111 crops its latents.
- "Hires steps" N (0: the first pass's steps) are the steps actually run. A1111 makes
  a schedule of ``int(N / min(denoise, 0.999))`` steps and runs its last N
  (``sd_samplers_common.setup_img2img_steps``, taken whenever steps are given, as for
  every hires pass). diffusers' image-to-image pipelines run the last steps of
  ``num_inference_steps`` that ``strength`` selects, so they get that schedule length
  and a strength that selects exactly N steps.
- The same seed draws the second pass's noise; the hires sampler, schedule, prompts
  and CFG scale are used where given, the first pass's otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from sdstudio.engine import samplers
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.families import ModelFamily
from sdstudio.engine.networks import ActiveNetworks, NetworkUse
from sdstudio.engine.previews import unpack_patches
from sdstudio.engine.prompts import check_prompt_length
from sdstudio.engine.refine.hires_settings import (
    IMAGE_UPSCALERS,
    LATENT_MODES,
    LATENT_UPSCALERS,
    HiresFix,
    builtin_upscaler,
)
from sdstudio.engine.refine.upscale_settings import DEFAULT_TILE
from sdstudio.engine.refine.upscaler_files import (
    UpscalerCache,
    display_name,
    find_upscaler,
    resize_upscaler,
)
from sdstudio.engine.request import MAX_SIZE, MIN_SIZE, GenerationRequest, Mode

if TYPE_CHECKING:
    from sdstudio.engine.refine.upscalers import Cancellable

MAX_SCHEDULE_STEPS = 1000
"""The longest schedule a hires pass may take (the models' own training timesteps)."""
LATENT_FACTOR = 8
"""Pixels per latent of every family's VAE."""


@dataclass(frozen=True, slots=True)
class HiresPass:
    """How the hires pass of a request runs on the loaded model."""

    width: int
    height: int
    cover: tuple[int, int]
    """The size the first pass is upscaled to before its centre is cut out (the final
    size, unless a resize of another shape is asked)."""
    upscaler: str
    """A built-in upscaler as A1111 spells it, or the upscaler file's name as A1111
    records it (its stem)."""
    steps: int
    """Denoising steps run."""
    schedule_steps: int
    """Steps of the schedule whose last :attr:`steps` are run (``num_inference_steps``)."""
    strength: float
    """The image-to-image strength that selects those steps."""
    sampler: str
    schedule: str
    prompt: str
    negative_prompt: str
    guidance_scale: float
    own_prompts: bool
    """Whether its prompts differ from the first pass's (and may name other LoRAs)."""
    upscaler_file: Path | None = None
    """The upscaler model file, found where the request names one."""

    @property
    def latent(self) -> bool:
        """Whether it starts from the first pass's latents, resized."""
        return self.upscaler in LATENT_MODES

    def status(self) -> str:
        """What the status line says while it runs."""
        return (
            f"Hires pass: {self.width}x{self.height} with {self.upscaler}, "
            f"{self.steps} step{'s' if self.steps != 1 else ''}…"
        )


def check_hires(request: GenerationRequest, upscaler_folders: Iterable[Path] = ()) -> Path | None:
    """Refuse, before any model loads, a hires fix that cannot run; the upscaler file it
    names, if any.

    Raises :class:`InvalidRequest` outside text-to-image, for a denoising strength of 0,
    an unknown hires sampler or schedule type, or a hires prompt over the length limit,
    and :class:`ModelError` for an upscaler that is neither built in nor an upscaler
    file found (by path, or by name in ``upscaler_folders``).
    """
    hires = request.hires
    if hires is None:
        return None
    if request.mode is not Mode.TXT2IMG:
        raise InvalidRequest(
            "The hires fix is a second pass of text-to-image (as in A1111); it does not run "
            f"with {request.mode.value}. Turn it off, or ask for the size you want."
        )
    if hires.denoise <= 0:
        raise InvalidRequest(
            "A hires denoising strength of 0 repaints nothing; raise it (A1111's default "
            "is 0.7) or turn the hires fix off."
        )
    samplers.check_names(hires.sampler or request.sampler, hires.schedule or request.schedule)
    check_prompt_length(hires.prompt, "hires prompt")
    check_prompt_length(hires.negative_prompt, "hires negative prompt")
    return upscaler_file(hires.upscaler, upscaler_folders)


def upscaler_file(upscaler: str, folders: Iterable[Path]) -> Path | None:
    """The file of a hires upscaler that is not built in (``None`` for a built-in one);
    :class:`ModelError` when it cannot be found."""
    if builtin_upscaler(upscaler) is not None or resize_upscaler(upscaler) is not None:
        return None
    names = (*LATENT_UPSCALERS, *IMAGE_UPSCALERS)
    return find_upscaler(upscaler, folders, built_in=names, what="hires upscaler")


def plan_hires(
    request: GenerationRequest,
    family: ModelFamily,
    inpainting: bool,
    upscaler_folders: Iterable[Path] = (),
) -> HiresPass | None:
    """The hires pass of ``request`` on a loaded model of ``family`` (``None``: none asked),
    with its upscaler file found in ``upscaler_folders`` where it names one.

    Raises :class:`InvalidRequest` for a family without image-to-image (Flux.2 Klein), a
    latent upscaler on an inpainting model, a hires size out of range or not a multiple
    of the family's, a schedule longer than :data:`MAX_SCHEDULE_STEPS`, and a hires
    sampler that does not take the schedule type.
    """
    hires = request.hires
    if hires is None:
        return None
    file = check_hires(request, upscaler_folders)
    upscaler = builtin_upscaler(hires.upscaler) or display_name(hires.upscaler)
    if not family.img2img:
        raise InvalidRequest(
            f"{family.label} models have no image-to-image pipeline, which the hires fix "
            "runs on; turn the hires fix off and generate at the size you want."
        )
    if inpainting and upscaler in LATENT_MODES:
        raise InvalidRequest(
            "An inpainting model's hires pass starts from an image: use the "
            f"{' or '.join(IMAGE_UPSCALERS)} upscaler instead of {upscaler}."
        )
    width, height = _target(hires, request, family)
    steps = hires.steps or request.steps
    total = int(steps / min(hires.denoise, 0.999))
    if total > MAX_SCHEDULE_STEPS:
        raise InvalidRequest(
            f"{steps} hires steps at denoising strength {hires.denoise:g} take a schedule of "
            f"{total} steps, over the {MAX_SCHEDULE_STEPS} a model has; raise the denoising "
            "strength or lower the hires steps."
        )
    sampler = hires.sampler or request.sampler
    schedule = hires.schedule or request.schedule
    try:
        samplers.check_combination(sampler, schedule, flow=family.flow)
    except InvalidRequest as error:
        if hires.schedule:
            raise
        raise InvalidRequest(
            f"The hires pass takes the first pass's schedule type: {error} "
            "Choose a hires schedule type."
        ) from None
    prompt = hires.prompt or request.prompt
    negative = hires.negative_prompt or request.negative_prompt
    return HiresPass(
        width=width,
        height=height,
        cover=_cover(hires, request.width, request.height, (width, height)),
        upscaler=upscaler,
        steps=steps,
        schedule_steps=total,
        strength=selecting_strength(steps, total, truncating=not family.flow),
        sampler=sampler,
        schedule=schedule,
        prompt=prompt,
        negative_prompt=negative,
        guidance_scale=(
            request.guidance_scale if hires.guidance_scale is None else hires.guidance_scale
        ),
        own_prompts=(prompt, negative) != (request.prompt, request.negative_prompt),
        upscaler_file=file,
    )


def selecting_strength(steps: int, total: int, *, truncating: bool) -> float:
    """The image-to-image strength that makes a pipeline of ``total`` inference steps
    run exactly its last ``steps``.

    The Stable Diffusion pipelines run ``int(total * strength)`` steps (``truncating``);
    the flow-matching ones skip ``int(total - total * strength)``. Half a step away from
    the exact fraction lands inside each one's rounding, whatever the float error.
    """
    if steps >= total:
        return 1.0
    return (steps + 0.5) / total if truncating else (steps - 0.5) / total


def start(
    pipe: Any,
    plan: HiresPass,
    output: Any,
    width: int,
    height: int,
    *,
    upscalers: UpscalerCache | None = None,
    device: str = "cpu",
    on_status: Callable[[str], None] | None = None,
    cancel: Cancellable | None = None,
) -> Any:
    """What the hires pass on ``pipe`` starts from, given the first pass's ``output``
    (its latents for a latent upscaler, else its images) at ``width`` x ``height``.

    An upscaler file runs on ``device``, kept loaded in ``upscalers`` (an
    :class:`~sdstudio.engine.refine.upscalers.UpscalerCache`), saying which tile it is at
    through ``on_status``; ``cancel`` (a token or step reporter) stops it between tiles.
    """
    if plan.latent:
        latents = first_pass_latents(output, width, height)
        return latent_start(pipe, upscale_latents(latents, plan))
    return upscale_first_pass(
        output[0], plan, upscalers=upscalers, device=device, on_status=on_status, cancel=cancel
    )


def first_pass_latents(output: Any, width: int, height: int) -> Any:
    """A first pass's ``output_type="latent"`` output as (batch, channels, h, w) latents:
    unpacked from the 2x2 patches of Flux.1, Chroma and Qwen-Image."""
    latents = output
    if latents.ndim == 3:
        latents = unpack_patches(latents, width, height)
        if latents is None:
            raise InvalidRequest("The first pass's latents do not have the expected shape.")
    if latents.ndim == 5:  # (batch, channels, frames, h, w): one frame
        latents = latents[:, :, 0]
    return latents


def upscale_latents(latents: Any, plan: HiresPass) -> Any:
    """The latents resized to the hires size by the plan's latent upscaler."""
    import torch

    mode, antialias = LATENT_MODES[plan.upscaler]
    cover_width, cover_height = plan.cover
    size = (cover_height // LATENT_FACTOR, cover_width // LATENT_FACTOR)
    resized = torch.nn.functional.interpolate(
        latents.float(), size=size, mode=mode, antialias=antialias
    ).to(latents.dtype)
    left, top = _crop_origin(plan)
    rows, columns = plan.height // LATENT_FACTOR, plan.width // LATENT_FACTOR
    left, top = left // LATENT_FACTOR, top // LATENT_FACTOR
    return resized[:, :, top : top + rows, left : left + columns]


def upscale_first_pass(
    image: Image.Image,
    plan: HiresPass,
    *,
    upscalers: UpscalerCache | None = None,
    device: str = "cpu",
    on_status: Callable[[str], None] | None = None,
    cancel: Cancellable | None = None,
) -> Image.Image:
    """The first pass's image upscaled to the hires size: resized with Pillow (Lanczos,
    Nearest), or by the upscaler file (in tiles, then resized to the exact size)."""
    from sdstudio.engine.refine.upscalers import upscale_image

    def tile_done(done: int, total: int) -> None:
        if on_status is not None and total > 1:
            on_status(f"Hires pass: upscaling with {plan.upscaler}, tile {done} of {total}…")

    resized = upscale_image(
        image.convert("RGB"),
        plan.upscaler_file or plan.upscaler,
        size=plan.cover,
        device=device,
        tile=DEFAULT_TILE,
        on_progress=tile_done,
        cancel=cancel,
        cache=upscalers,
    ).convert("RGB")
    if plan.upscaler_file is not None and on_status is not None:
        on_status(plan.status())
    if plan.cover == (plan.width, plan.height):
        return resized
    left, top = _crop_origin(plan)
    return resized.crop((left, top, left + plan.width, top + plan.height))


def latent_start(pipe: Any, latents: Any) -> Any:
    """What an image-to-image pipeline starts from for upscaled latents: the latents
    themselves where its ``image`` takes latents, else their decoded image (Chroma's and
    Z-Image's pipelines take pixels only; they encode it again)."""
    import torch

    processor = getattr(pipe, "image_processor", None)
    channels = getattr(getattr(processor, "config", None), "vae_latent_channels", None)
    if channels == latents.shape[1]:
        return latents
    vae = pipe.vae
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    scaled = latents / vae.config.scaling_factor + shift
    with torch.no_grad():
        pixels = vae.decode(scaled.to(vae.dtype), return_dict=False)[0]
    image: Image.Image = pipe.image_processor.postprocess(pixels, output_type="pil")[0]
    return image


def pass_arguments(plan: HiresPass, start: Any, *, inpainting: bool, sized: bool) -> dict[str, Any]:
    """The image-to-image arguments of the hires pass (besides prompts and guidance):
    ``sized`` for a pipeline that takes a width and height, ``inpainting`` for a model
    that repaints everything through its inpainting pipeline (with a white mask)."""
    arguments: dict[str, Any] = {
        "image": start,
        "strength": plan.strength,
        "num_inference_steps": plan.schedule_steps,
    }
    if sized or inpainting:
        arguments.update(width=plan.width, height=plan.height)
    if inpainting:
        arguments["mask_image"] = Image.new("L", (plan.width, plan.height), 255)
    return arguments


def both_passes(first: ActiveNetworks, second: ActiveNetworks) -> ActiveNetworks:
    """The LoRAs and embeddings either pass used, each once (for the image's record)."""

    def union(a: Sequence[NetworkUse], b: Sequence[NetworkUse]) -> tuple[NetworkUse, ...]:
        seen = {(use.path, use.weight) for use in a}
        return (*a, *(use for use in b if (use.path, use.weight) not in seen))

    return ActiveNetworks(
        union(first.loras, second.loras),
        union(first.embeddings, second.embeddings),
        union(first.hypernets, second.hypernets),
    )


def _target(hires: HiresFix, request: GenerationRequest, family: ModelFamily) -> tuple[int, int]:
    step = family.size_multiple
    width, height = hires.target_size(request.width, request.height, step)
    if width % step or height % step:
        raise InvalidRequest(
            f"{family.label} models need a hires size in multiples of {step}, not {width}x{height}."
        )
    for name, value in (("width", width), ("height", height)):
        if not MIN_SIZE <= value <= MAX_SIZE:
            raise InvalidRequest(
                f"The hires {name} {value} is outside {MIN_SIZE} to {MAX_SIZE} pixels; "
                "change the hires upscale or resize."
            )
    return width, height


def _cover(hires: HiresFix, width: int, height: int, target: tuple[int, int]) -> tuple[int, int]:
    """A1111's ``hr_upscale_to``: a resize of another shape is covered keeping the first
    pass's shape."""
    if not (hires.width and hires.height) or width * target[1] == height * target[0]:
        return target
    if width / height < target[0] / target[1]:
        return target[0], target[0] * height // width
    return target[1] * width // height, target[1]


def _crop_origin(plan: HiresPass) -> tuple[int, int]:
    """The top-left corner (in pixels, on the latent grid) of the centre A1111 keeps
    of the covering size: half the whole latents cut off, rounded down."""
    cut_x = (plan.cover[0] - plan.width) // LATENT_FACTOR
    cut_y = (plan.cover[1] - plan.height) // LATENT_FACTOR
    return cut_x // 2 * LATENT_FACTOR, cut_y // 2 * LATENT_FACTOR
