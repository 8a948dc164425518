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

from sdstudio.engine.metadata.comfyui_graph import LATENT_KEYS, MAX_DEPTH, Walker, is_sampler
from sdstudio.engine.metadata.names import model_name
from sdstudio.engine.metadata.values import as_float, as_int

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
        factor = _MODEL_FACTOR.search(name) if isinstance(name, str) else None
        # An upscale model's factor is known only from a name such as "4x-UltraSharp".
        source.scale = (source.scale or 1.0) * int(factor[1] or factor[2]) if factor else None
        source.scale_known = factor is not None and source.scale_known
        return
    method = walker.value(inputs.get("upscale_method"), ("upscale_method", "value"))
    if not source.upscaler:
        named = isinstance(method, str) and method
        if class_type.startswith("Latent"):
            source.upscaler = f"Latent ({method})" if named else "Latent"
        else:
            source.upscaler = str(method).capitalize() if named else class_type


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
