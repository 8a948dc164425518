"""What a ComfyUI graph of a flow model (Flux, SD3, Z-Image, Qwen-Image) adds to the
settings of its sampler.

- ``FluxGuidance`` on the positive conditioning is Flux.1 dev's distilled guidance
  (Forge's "Distilled CFG Scale"); the sampler's ``cfg`` stays real CFG.
- A model loaded by ``UNETLoader`` (or the GGUF loaders' ``UnetLoaderGGUF``) is a
  transformer kept alone: its text encoders are the files the loaders behind the text
  encoders' ``clip`` input name (``CLIPLoader``, ``DualCLIPLoader``,
  ``TripleCLIPLoader``, ``QuadrupleCLIPLoader`` and their GGUF versions).
- ``ModelSampling*`` nodes on the model path set the schedule's shift; sdstudio takes
  the model's own, so a shift that differs from it is kept in the extras, not applied.
"""

from __future__ import annotations

from sdstudio.engine.metadata.comfyui_graph import MAX_DEPTH, Walker
from sdstudio.engine.metadata.values import as_float

CLIP_NAME_KEYS = ("clip_name", "clip_name1", "clip_name2", "clip_name3", "clip_name4")
SHIFT_DEFAULTS = {
    "ModelSamplingFlux": {"max_shift": 1.15, "base_shift": 0.5},
    "ModelSamplingSD3": {"shift": 3.0},
    "ModelSamplingAuraFlow": {"shift": 3.0},
}
"""The model sampling nodes and the values that are the models' own (shift 3 for SD3
and Z-Image, Flux.1's dynamic shift between 0.5 and 1.15)."""


def distilled_guidance(walker: Walker, link: object) -> float | None:
    """The ``guidance`` of a ``FluxGuidance`` node on a conditioning path, if any."""
    for _ in range(MAX_DEPTH):
        node = walker.node(link)
        if node is None:
            return None
        if node.class_type == "FluxGuidance":
            return as_float(walker.value(node.inputs.get("guidance")))
        link = next(
            (node.inputs[key] for key in ("conditioning", "positive") if key in node.inputs), None
        )
    return None


def text_encoders(walker: Walker) -> tuple[str, ...]:
    """The text encoder files named by the loaders behind the prompts' ``clip`` inputs
    (followed through CLIP-layer and LoRA nodes)."""
    for link in walker.clip_links[:8]:
        for _ in range(MAX_DEPTH):
            node = walker.node(link)
            if node is None:
                break
            names = [walker.value(node.inputs.get(key), (key, "value")) for key in CLIP_NAME_KEYS]
            found = tuple(name for name in names if isinstance(name, str) and name.strip())
            if found:
                return found
            link = node.inputs.get("clip")
    return ()


def model_sampling(walker: Walker, link: object) -> dict[str, object]:
    """The ``ModelSampling*`` settings on the model path that differ from the model's
    own, as extras (``ModelSamplingSD3 shift: 6``)."""
    extras: dict[str, object] = {}
    for _ in range(MAX_DEPTH):
        node = walker.node(link)
        if node is None:
            break
        defaults = SHIFT_DEFAULTS.get(node.class_type)
        if defaults is not None:
            for key, default in defaults.items():
                value = as_float(walker.value(node.inputs.get(key)))
                if value is not None and abs(value - default) > 1e-6:
                    extras[f"{node.class_type} {key}"] = value
        link = node.inputs.get("model")
    return extras


def is_transformer_loader(walker: Walker, link: object) -> bool:
    """Whether the model path ends at a loader of a transformer alone (``unet_name``)."""
    for _ in range(MAX_DEPTH):
        node = walker.node(link)
        if node is None:
            return False
        if "unet_name" in node.inputs:
            return True
        if "ckpt_name" in node.inputs:
            return False
        link = node.inputs.get("model")
    return False
