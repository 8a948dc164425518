"""ControlNets of the transformer families (Flux.1, SD 3.x, Qwen-Image, Z-Image): what
each family's diffusers pipelines can run, the checks made before anything loads, and
the control pipeline built on the model's components.

- Flux.1 runs in ``FluxControlNetPipeline`` (text to image), ``FluxControlNetImg2ImgPipeline``
  and ``FluxControlNetInpaintPipeline``; several units in ``FluxMultiControlNetModel``.
  InstantX's and Shakker's Union ControlNets read the unit's control type as their
  ``control_mode`` (:data:`FLUX_UNION_TYPES`). The image-to-image and inpainting
  pipelines take no negative prompt, so real CFG (above 1) is refused there.
- SD 3.x, Qwen-Image and Z-Image have a ControlNet pipeline for text to image only
  (their "inpainting" ControlNet pipelines repaint through an inpainting ControlNet, not
  the model). Z-Image's takes one ControlNet and no start or end.

None of these pipelines has A1111's control modes: only Balanced runs. Their seeds
stay the plain pipeline's: the starting noise is drawn before the control image is
encoded (Flux and Qwen-Image encode it by sampling from the same generator), and the
global random state the SD 3 pipeline samples from is seeded from the generator.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sdstudio.engine.control.flow_control_files import FLOW_LABELS
from sdstudio.engine.control.union import _normal, check_plain_type
from sdstudio.engine.control.units import ControlMode
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.pipeline_sharing import share_pipeline

if TYPE_CHECKING:
    from sdstudio.engine.control.control_files import ControlNetFile
    from sdstudio.engine.control.units import ControlUnit
    from sdstudio.engine.request import GenerationRequest


@dataclass(frozen=True, slots=True)
class FlowControl:
    """What a transformer family's ControlNets can do in diffusers."""

    pipelines: dict[str, str]
    """The pipeline class for each task (``txt2img``, ``img2img``, ``inpaint``)."""
    multi: str = ""
    """The class that runs several ControlNets together (empty: one only)."""
    start_end: bool = True
    """Whether its pipelines take ``control_guidance_start`` and ``_end``."""
    drawn_before: tuple[str, ...] = field(default_factory=tuple)
    """The pipeline components whose dtype the starting noise is drawn in, when the
    pipeline samples the control image's latents from the generator first."""
    own_flow_sigmas: tuple[str, ...] = ()
    """The tasks whose plain pipeline lets a scheduler with ``use_flow_sigmas`` make its
    own sigmas (``FluxPipeline`` does; its ControlNet pipeline always passes them)."""


FAMILIES: dict[str, FlowControl] = {
    "flux1": FlowControl(
        {
            "txt2img": "FluxControlNetPipeline",
            "img2img": "FluxControlNetImg2ImgPipeline",
            "inpaint": "FluxControlNetInpaintPipeline",
        },
        multi="FluxMultiControlNetModel",
        drawn_before=("text_encoder_2", "transformer"),
        own_flow_sigmas=("txt2img",),
    ),
    "sd3": FlowControl(
        {"txt2img": "StableDiffusion3ControlNetPipeline"}, multi="SD3MultiControlNetModel"
    ),
    "qwen-image": FlowControl(
        {"txt2img": "QwenImageControlNetPipeline"},
        multi="QwenImageMultiControlNetModel",
        drawn_before=("text_encoder", "transformer"),
    ),
    "zimage": FlowControl({"txt2img": "ZImageControlNetPipeline"}, start_end=False),
}

FLUX_UNION_TYPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("canny", ("canny", "lineart", "anime lineart", "lineart anime", "mlsd", "hard edge")),
    ("tile", ("tile",)),
    ("depth", ("depth", "depth midas", "depth zoe", "depth anything")),
    ("blur", ("blur", "gaussian blur")),
    ("pose", ("pose", "openpose", "dwpose", "openpose full")),
    ("gray", ("gray", "grey", "grayscale", "greyscale", "recolor")),
    ("low quality", ("low quality", "lq", "jpeg")),
)
"""InstantX's (and Shakker's) Flux Union ``control_mode`` order: canny 0, tile 1,
depth 2, blur 3, pose 4, gray 5, low quality 6."""

_NO_REAL_CFG = {"negative_prompt", "true_cfg_scale"}


def flux_union_mode(control_type: str, count: int, name: str) -> int:
    """The ``control_mode`` of a unit's control type for a Flux Union ControlNet reading
    ``count`` modes; :class:`InvalidRequest` naming the valid ones otherwise."""
    valid = ", ".join(kind for kind, _ in FLUX_UNION_TYPES[:count])
    if not control_type.strip() or _normal(control_type) == "unknown":
        raise InvalidRequest(
            f"The Flux Union ControlNet {name} needs a control type telling which control "
            f"it reads; valid: {valid}."
        )
    wanted = set()
    for part in control_type.split("/"):
        wanted |= {_normal(part), *_normal(part).split(" ")}
    for index, (_kind, names) in enumerate(FLUX_UNION_TYPES):
        if wanted & {_normal(n) for n in names}:
            if index >= count:
                break
            return index
    raise InvalidRequest(
        f"The control type {control_type!r:.60} is not one the Flux Union ControlNet {name} "
        f"reads; valid: {valid}."
    )


def check_flow_units(
    request: GenerationRequest, files: Sequence[ControlNetFile], family: str | None
) -> None:
    """Refuse, before anything loads, units a transformer family's ControlNet pipelines
    cannot run."""
    from sdstudio.engine.control.preprocessors import needs_mask
    from sdstudio.engine.request import Mode

    families = {file.family for file in files if file.family != "unknown"}
    family = family or (next(iter(families)) if len(families) == 1 else None)
    if family is None or families - {family}:
        named = ", ".join(sorted({file.label for file in files}))
        raise InvalidRequest(
            f"The control units mix ControlNets of several families ({named}); use "
            "ControlNets of the model's family only."
        )
    spec = FAMILIES[family]
    label = FLOW_LABELS[family]
    task = request.mode.value if request.mode is not Mode.UPSCALE else "upscale"
    if task not in spec.pipelines:
        raise InvalidRequest(
            f"{label} ControlNets guide {_tasks(spec)} only (diffusers has no {label} "
            f"ControlNet pipeline for {_TASK_NAMES.get(task, task)}); switch to "
            f"{_tasks(spec)} or remove the control units."
        )
    if request.hires is not None and "img2img" not in spec.pipelines:
        raise InvalidRequest(
            f"{label} ControlNets cannot guide the hires pass (diffusers has no {label} "
            "ControlNet image-to-image pipeline); turn hires fix off or remove the control "
            "units."
        )
    if request.hires is not None and family == "flux1":
        from sdstudio.engine.refine.hires_settings import LATENT_UPSCALERS, builtin_upscaler

        if builtin_upscaler(request.hires.upscaler) in LATENT_UPSCALERS:
            raise InvalidRequest(
                "Flux.1 ControlNets guide the hires pass from an upscaled image, not "
                "upscaled latents (their image-to-image pipeline reads pictures); choose an "
                "image upscaler (Lanczos, or an upscaler model) for hires fix."
            )
    later = task != "txt2img" or request.hires is not None
    if family == "flux1" and later and request.guidance_scale > 1:
        raise InvalidRequest(
            "Flux.1 ControlNets guide image to image, inpainting and the hires pass "
            "without real CFG (their pipelines take no negative prompt); set CFG to 1 "
            "and guide with the distilled CFG scale."
        )
    if len(files) > 1 and not spec.multi:
        raise InvalidRequest(f"{label} ControlNets run one at a time; keep one control unit.")
    for number, (unit, file) in enumerate(zip(request.control, files, strict=True), 1):
        _check_unit(number, unit, file, spec, label)
        if needs_mask(unit):
            raise InvalidRequest(
                f"Control unit {number}: the inpaint preprocessors make maps for SD "
                f"inpainting ControlNets; {label} ControlNets cannot read them."
            )


def _check_unit(
    number: int, unit: ControlUnit, file: ControlNetFile, spec: FlowControl, label: str
) -> None:
    if file.kind == "t2i_adapter":
        raise InvalidRequest(
            f"Control unit {number}: T2I-Adapters guide SD 1.x and SDXL models only."
        )
    if unit.mode is not ControlMode.BALANCED:
        raise InvalidRequest(
            f"Control unit {number}: {label} ControlNets run in the Balanced control mode "
            "only (their pipelines have no other)."
        )
    if not spec.start_end and (unit.start > 0 or unit.end < 1):
        raise InvalidRequest(
            f"Control unit {number}: {label} ControlNets guide every step (their pipeline "
            "takes no start or end); set start 0 and end 1."
        )
    if file.kind == "union":
        flux_union_mode(unit.control_type, len(FLUX_UNION_TYPES), file.name)
    else:
        check_plain_type(unit.control_type, file.name)


_TASK_NAMES = {"txt2img": "text to image", "img2img": "image to image", "inpaint": "inpainting"}


def _tasks(spec: FlowControl) -> str:
    names = [
        _TASK_NAMES[task] for task in ("txt2img", "img2img", "inpaint") if task in spec.pipelines
    ]
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


def check_flow_fits(controlnet: Any, transformer: Any, family: str, name: str) -> None:
    """Refuse a loaded ControlNet whose widths are not the model's (another size)."""
    config, own = controlnet.config, transformer.config
    keys = {
        "flux1": ("in_channels", "joint_attention_dim", "pooled_projection_dim"),
        "sd3": ("patch_size", "pooled_projection_dim"),
        "qwen-image": ("in_channels", "joint_attention_dim"),
        "zimage": ("dim", "n_heads"),
    }[family]
    fits = all(config.get(key) == own.get(key) for key in keys)
    if family != "zimage":
        fits = fits and _inner(config) == _inner(own)
    if family == "sd3" and config.get("joint_attention_dim") is not None:
        fits = fits and config.get("joint_attention_dim") == own.get("joint_attention_dim")
    if not fits:
        raise InvalidRequest(
            f"The ControlNet {name} does not fit the model (a {FLOW_LABELS[family]} model "
            "of another size); choose a ControlNet made for this model."
        )


def _inner(config: Any) -> int:
    return int(config.get("num_attention_heads", 0)) * int(config.get("attention_head_dim", 0))


def flow_union_modes(
    request: GenerationRequest, files: Sequence[ControlNetFile], models: Sequence[Any]
) -> list[int | None]:
    """Each unit's ``control_mode`` for a loaded Flux Union ControlNet (``None`` else)."""
    return [
        flux_union_mode(unit.control_type, int(model.config.num_mode), file.name)
        if file.kind == "union"
        else None
        for unit, file, model in zip(request.control, files, models, strict=True)
    ]


def flow_control_pipeline(base: Any, family: str, task: str, models: list[Any]) -> Any:
    """The family's ControlNet pipeline for ``task`` on ``base``'s components (no weights
    copied), several ControlNets combined."""
    import diffusers

    spec = FAMILIES[family]
    controlnet = getattr(diffusers, spec.multi)(models) if len(models) > 1 else models[0]
    factory = getattr(diffusers, spec.pipelines[task])
    pipe = share_pipeline(factory, base, controlnet=controlnet)  # kept in its precision
    return FlowGuided(pipe, spec, own_sigmas=task in spec.own_flow_sigmas)


class FlowGuided:
    """A transformer family's ControlNet pipeline, called with the plain pipeline's
    arguments: the negative prompt and real CFG go only where the pipeline takes them
    (refused above 1 where it does not), and the seed gives the plain pipeline's noise."""

    def __init__(self, pipe: Any, spec: FlowControl, *, own_sigmas: bool = False) -> None:
        object.__setattr__(self, "pipe", pipe)
        object.__setattr__(self, "spec", spec)
        object.__setattr__(self, "own_sigmas", own_sigmas)
        params = set(inspect.signature(type(pipe).__call__).parameters)
        object.__setattr__(self, "params", params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.pipe, name, value)

    def __call__(self, **kwargs: Any) -> Any:
        import torch

        cfg = kwargs.get("true_cfg_scale", 1.0)
        for key in [k for k in kwargs if k not in self.params]:
            kwargs.pop(key)
            if key in _NO_REAL_CFG and cfg <= 1:
                continue  # without real CFG the negative prompt is not read
            raise InvalidRequest(
                f"{type(self.pipe).__name__} cannot take {key} (real CFG needs a negative "
                "prompt); set CFG to 1."
                if key in _NO_REAL_CFG
                else f"{type(self.pipe).__name__} cannot take {key}."
            )
        generator = kwargs.get("generator")
        if self.spec.drawn_before and "latents" not in kwargs and "image" not in kwargs:
            kwargs["latents"] = self._noise(kwargs, generator)
        if self.own_sigmas and self.pipe.scheduler.config.get("use_flow_sigmas"):
            _keep_own_sigmas(self.pipe.scheduler)
        seed = generator.initial_seed() if generator is not None else 0
        devices = [self.pipe._execution_device] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=[d for d in devices if d.type == "cuda"]):
            torch.manual_seed(seed)
            return self.pipe(**kwargs)

    def _noise(self, kwargs: dict[str, Any], generator: Any) -> Any:
        """The starting noise the plain pipeline draws first from the generator."""
        pipe = self.pipe
        dtype = next(
            getattr(pipe, name).dtype
            for name in self.spec.drawn_before
            if getattr(pipe, name, None) is not None
        )
        channels = pipe.transformer.config.in_channels // 4
        made = pipe.prepare_latents(
            1,
            channels,
            kwargs["height"],
            kwargs["width"],
            dtype,
            pipe._execution_device,
            generator,
        )
        return made[0] if isinstance(made, tuple) else made


def _keep_own_sigmas(scheduler: Any) -> None:
    """Make ``scheduler`` (this image's own) ignore the sigmas a pipeline passes, as the
    plain pipeline leaves a scheduler with ``use_flow_sigmas`` to make its own."""
    import functools

    set_timesteps = scheduler.set_timesteps

    @functools.wraps(set_timesteps)
    def own(*args: Any, sigmas: Any = None, **kwargs: Any) -> Any:
        if not args and kwargs.get("num_inference_steps") is None and sigmas is not None:
            kwargs["num_inference_steps"] = len(sigmas)
        return set_timesteps(*args, **kwargs)

    scheduler.set_timesteps = own


def flow_arguments(
    family: str,
    units: Sequence[ControlUnit],
    maps: Sequence[Any],
    modes: Sequence[int | None],
) -> dict[str, Any]:
    """The ControlNet arguments of a transformer family's pipeline for one image."""
    several = len(units) > 1
    arguments: dict[str, Any] = {
        "control_image": list(maps) if several else maps[0],
        "controlnet_conditioning_scale": [u.weight for u in units] if several else units[0].weight,
    }
    if FAMILIES[family].start_end:
        arguments["control_guidance_start"] = [u.start for u in units]
        arguments["control_guidance_end"] = [u.end for u in units]
    if any(mode is not None for mode in modes):
        arguments["control_mode"] = list(modes) if several else modes[0]
    return arguments
