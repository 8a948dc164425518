"""What one ComfyUI sampler node ran with, and where its latent came from.

Two kinds of sampler nodes are read:

- ``KSampler``-like nodes (``KSampler``, ``KSamplerAdvanced``, ``SamplerCustom``
  and custom ``KSampler ...`` classes) hold ``seed``/``noise_seed``, ``steps``,
  ``cfg``, ``sampler_name``, ``scheduler``, ``denoise``, ``positive``,
  ``negative`` and ``model`` themselves;
- ``SamplerCustomAdvanced`` links to ``RandomNoise`` (``noise_seed``), a guider
  (``CFGGuider``: ``cfg``, ``positive``, ``negative``, ``model``;
  ``BasicGuider``: ``conditioning``, ``model``), ``KSamplerSelect``
  (``sampler_name``) and a sigmas node (``BasicScheduler``: ``scheduler``,
  ``steps``, ``denoise``; ``KarrasScheduler`` and the like: ``steps``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata.comfyui_graph import LATENT_KEYS, MAX_DEPTH, Walker, is_sampler
from sdstudio.engine.metadata.hires_names import comfyui_upscaler
from sdstudio.engine.metadata.names import model_name, sampler_and_schedule
from sdstudio.engine.metadata.safe_text import text
from sdstudio.engine.metadata.values import MAX_GUIDANCE, as_float, as_int
from sdstudio.engine.refine.hires_settings import MAX_HIRES_SCALE, HiresFix
from sdstudio.engine.request import MAX_STEPS

# Sigmas nodes whose class names the schedule.
_SCHEDULE_CLASSES = {
    "KarrasScheduler": "karras",
    "ExponentialScheduler": "exponential",
    "BetaSamplingScheduler": "beta",
}
_RESIZERS = ("Upscale", "Scale", "Resize")
_MODEL_FACTOR = re.compile(r"(?i)(?:^|[^a-z0-9])(\d)x|x(\d)(?:[^0-9]|$)")
# Sampler inputs a request has no field for, and the value that changes nothing.
_PLAIN = {
    "add_noise": ("enable", True),
    "start_at_step": (0,),
    "return_with_leftover_noise": ("disable", False),
}
_LAST_STEP = 10000  # KSamplerAdvanced's end_at_step default: run to the end


@dataclass(slots=True)
class SamplerInputs:
    """The raw settings of one sampler node; ``None`` where a value was not read."""

    seed: object = None
    steps: object = None
    cfg: object = None
    sampler_name: object = None
    scheduler: object = None
    denoise: object = None
    positive: object = None
    negative: object = None
    model: object = None
    latent: object = None
    other: dict[str, object] = field(default_factory=dict)
    """Settings a request cannot hold, by input name, where they change the sampling."""


@dataclass(slots=True)
class LatentSource:
    """Where a sampler's latent came from."""

    size: tuple[int, int] | None = None
    """The size of the empty latent it started from."""
    sampler: str | None = None
    """The sampler whose output it is (the latent of a second, hires pass)."""
    from_image: bool = False
    scale: float | None = None
    target: tuple[int, int] | None = None
    upscaler: str = ""
    """A1111's upscaler, an upscale model's name, or the ComfyUI method A1111 lacks."""
    upscaler_known: bool = True
    """Whether :attr:`upscaler` is one of A1111's or an upscale model."""
    scale_known: bool = True
    resizers: list[str] = field(default_factory=list)


def sampler_inputs(walker: Walker, node_id: str) -> SamplerInputs:
    """The raw settings of the sampler ``node_id``, following its links."""
    node = walker.graph[node_id]
    inputs = node["inputs"]
    found = SamplerInputs(latent=inputs.get("latent_image"))
    if node["class_type"] == "SamplerCustomAdvanced":
        noise = walker.node(inputs.get("noise"))
        if noise is not None:
            found.seed = walker.value(noise.inputs.get("noise_seed", noise.inputs.get("seed")))
        guider = walker.node(inputs.get("guider"))
        if guider is not None:
            found.cfg = walker.value(guider.inputs.get("cfg"))
            if guider.class_type == "BasicGuider":
                found.cfg = 1.0  # one conditioning, no classifier-free guidance
            found.positive = next(
                (
                    guider.inputs[key]
                    for key in ("positive", "conditioning", "cond1")
                    if key in guider.inputs
                ),
                None,
            )
            found.negative = guider.inputs.get("negative")
            found.model = guider.inputs.get("model")
    else:
        found.seed = walker.value(inputs.get("seed", inputs.get("noise_seed")))
        found.cfg = walker.value(inputs.get("cfg"))
        found.positive, found.negative = inputs.get("positive"), inputs.get("negative")
        found.model = inputs.get("model")
    found.sampler_name = _name(walker, inputs, "sampler_name", "sampler")
    found.scheduler = walker.value(inputs.get("scheduler"), ("scheduler", "value"))
    found.steps = walker.value(inputs.get("steps"))
    found.denoise = walker.value(inputs.get("denoise"))
    if "sigmas" in inputs:
        _read_sigmas(walker, inputs["sigmas"], found)
    _read_other(walker, inputs, found)
    return found


def _read_other(walker: Walker, inputs: dict[str, object], found: SamplerInputs) -> None:
    for key, plain in _PLAIN.items():
        if key in inputs:
            value = walker.value(inputs[key], (key, "value", "boolean"))
            if value is not None and value not in plain:
                found.other[key] = value
    if "end_at_step" in inputs:
        end, steps = as_int(walker.value(inputs["end_at_step"])), as_int(found.steps)
        if end is not None and end < _LAST_STEP and (steps is None or end < steps):
            found.other["end_at_step"] = end


def _name(walker: Walker, inputs: dict[str, object], key: str, link_key: str) -> object:
    if key in inputs:
        return walker.value(inputs[key], (key, "value"))
    node = walker.node(inputs.get(link_key))
    if node is None:
        return None
    return walker.value(node.inputs.get(key), (key, "value"))


def _read_sigmas(walker: Walker, link: object, found: SamplerInputs) -> None:
    """Steps, schedule and denoise from the node that makes a sampler's sigmas."""
    for _ in range(MAX_DEPTH):
        node = walker.node(link)
        if node is None:
            return
        inputs = node.inputs
        if "steps" in inputs:
            found.steps = walker.value(inputs["steps"])
            found.denoise = walker.value(inputs.get("denoise"))
            if "scheduler" in inputs:
                found.scheduler = walker.value(inputs["scheduler"], ("scheduler", "value"))
            else:
                found.scheduler = _SCHEDULE_CLASSES.get(node.class_type)
            return
        link = inputs.get("sigmas")


def latent_source(walker: Walker, link: object) -> LatentSource:
    """Follow a sampler's ``latent_image`` back to an empty latent, an image or another sampler.

    Upscale and resize nodes on the way (latent or image, by factor, to a size
    or with an upscale model) are recorded: they make a second pass a hires fix.
    """
    source = LatentSource()
    for _ in range(MAX_DEPTH):
        node = walker.node(link)
        if node is None:
            break
        if is_sampler(node.class_type):
            source.sampler = node.id
            break
        inputs = node.inputs
        width, height = (
            as_int(walker.value(inputs.get("width"))),
            as_int(walker.value(inputs.get("height"))),
        )
        if any(word in node.class_type for word in _RESIZERS):
            _read_resizer(walker, node.class_type, inputs, source, width, height)
        elif "Encode" in node.class_type or node.class_type.startswith("LoadImage"):
            source.from_image = True
        elif width and height:
            source.size = (width, height)
            break
        link = next((inputs[key] for key in LATENT_KEYS if key in inputs), None)
    return source


def _read_resizer(
    walker: Walker,
    class_type: str,
    inputs: dict[str, object],
    source: LatentSource,
    width: int | None,
    height: int | None,
) -> None:
    source.resizers.append(class_type)
    scale = as_float(walker.value(inputs.get("scale_by", inputs.get("upscale_factor"))))
    if scale is not None and scale > 0:
        source.scale = (source.scale or 1.0) * scale
    if width and height and source.target is None:
        source.target = (width, height)
    model = walker.node(inputs.get("upscale_model"))
    if model is not None:
        name = walker.value(model.inputs.get("model_name"), ("model_name", "value"))
        if isinstance(name, str) and name:
            source.upscaler = model_name(name)
            source.upscaler_known = True
        factor = _MODEL_FACTOR.search(name) if isinstance(name, str) else None
        # An upscale model's factor is known only from a name such as "4x-UltraSharp".
        source.scale = (source.scale or 1.0) * int(factor[1] or factor[2]) if factor else None
        source.scale_known = factor is not None and source.scale_known
        return
    method = walker.value(inputs.get("upscale_method"), ("upscale_method", "value"))
    if not source.upscaler:
        latent = class_type.startswith("Latent")
        named = method if isinstance(method, str) and method else ""
        a1111 = comfyui_upscaler(named, latent)
        source.upscaler_known = a1111 is not None
        if a1111 is not None:
            source.upscaler = a1111
        elif latent:
            source.upscaler = f"Latent ({named})" if named else "Latent"
        else:
            source.upscaler = named.capitalize() if named else class_type


def hires_extras(hires: SamplerInputs, source: LatentSource) -> dict[str, object]:
    """A second (hires) pass under AUTOMATIC1111's key names, with what was read of it.

    ``Hires upscale`` is the factor (not written when a model's factor is not
    in its name), ``Hires resize-1``/``-2`` the size scaled to, ``Hires
    upscaler`` the upscale model's name or ``Latent (method)``, ``Hires
    steps`` and ``Denoising strength`` the pass's own.
    """
    extras: dict[str, object] = {}
    scale = source.scale if source.scale_known else None
    if scale is not None and not source.target:
        extras["Hires upscale"] = f"{scale:g}"
    if source.target:
        extras["Hires resize-1"], extras["Hires resize-2"] = source.target
    if source.upscaler:
        extras["Hires upscaler"] = source.upscaler
    steps = as_int(hires.steps)
    if steps is not None:
        extras["Hires steps"] = steps
    denoise = as_float(hires.denoise)
    if denoise is not None:
        extras["Denoising strength"] = f"{denoise:g}"
    return extras


@dataclass(slots=True)
class SecondPass:
    """A second sampler's pass as sdstudio's hires fix, or kept under A1111's names."""

    fix: HiresFix | None
    extras: dict[str, object]
    notes: list[str]


def hires_pass(
    walker: Walker, hires: SamplerInputs, source: LatentSource, base: SamplerInputs
) -> SecondPass:
    """The hires fix a sampler that refines ``base``'s upscaled output is.

    ComfyUI's second ``KSampler`` with ``steps`` N and ``denoise`` d runs the last N
    steps of a schedule of ``int(N / d)``, as A1111's hires pass does: they are its
    ``Hires steps`` and ``Denoising strength``. Its sampler, schedule, CFG and prompts
    are read where they differ from the base's. A pass that cannot be read as one
    (no upscale on the way, other start or end steps, an unknown factor, an upscale
    method A1111 lacks) is kept in extras (see :func:`hires_extras`), with a note.
    """
    extras = hires_extras(hires, source)
    problem = _problem(hires, source)
    if problem:
        return SecondPass(None, extras, [f"A second sampler pass is kept, not applied: {problem}."])
    values: dict[str, object] = {
        "denoise": as_float(hires.denoise),
        "steps": as_int(hires.steps),
        "upscaler": source.upscaler,
    }
    if source.target:
        values["width"], values["height"] = source.target
    else:
        values["scale"] = source.scale
    notes: list[str] = []
    if (hires.sampler_name, hires.scheduler) != (base.sampler_name, base.scheduler):
        first = sampler_and_schedule(text(base.sampler_name), text(base.scheduler))
        choice = sampler_and_schedule(text(hires.sampler_name), text(hires.scheduler))
        if text(hires.sampler_name) and choice.sampler != first.sampler:
            values["sampler"] = choice.sampler
        if text(hires.sampler_name) and choice.schedule != first.schedule:
            values["schedule"] = choice.schedule
        notes += [f"Hires: {note}" for note in choice.notes]
    cfg = as_float(hires.cfg)
    if cfg is not None and cfg != as_float(base.cfg) and 0 <= cfg <= MAX_GUIDANCE:
        values["guidance_scale"] = cfg
    for name, link, first_link in (
        ("prompt", hires.positive, base.positive),
        ("negative_prompt", hires.negative, base.negative),
    ):
        written = walker.prompt(link)
        if written and written != walker.prompt(first_link):
            values[name] = written
    kept: dict[str, object] = {}
    seed = as_int(hires.seed)
    if seed is not None and seed != as_int(base.seed):
        kept["Hires seed"] = seed
        notes.append(
            "The hires pass drew its noise from another seed; sdstudio's hires fix uses "
            "the first pass's."
        )
    try:
        fix = HiresFix(**values)  # type: ignore[arg-type]
    except InvalidRequest as error:
        return SecondPass(None, extras, [f"A second sampler pass is kept, not applied: {error}"])
    return SecondPass(fix, kept, notes)


def _problem(hires: SamplerInputs, source: LatentSource) -> str:
    """Why a second pass is not a hires fix sdstudio can run; empty when it is."""
    steps, denoise = as_int(hires.steps), as_float(hires.denoise)
    scale = source.scale if source.scale_known else None
    if not source.resizers:
        return "it repaints at the size of the first pass (no upscale on the way)"
    if hires.other:
        return f"it sets {', '.join(hires.other)}"
    if not source.upscaler_known:
        return f"its upscale method {source.upscaler} is none of A1111's hires upscalers"
    if source.target is None and (scale is None or not 1 <= scale <= MAX_HIRES_SCALE):
        return f"its upscale factor is unknown or outside 1 to {MAX_HIRES_SCALE:g}"
    if steps is None or not 1 <= steps <= MAX_STEPS or denoise is None or not 0 < denoise <= 1:
        return "its steps or denoise are unusable"
    return ""
