"""ComfyUI: the API graph in the ``prompt`` PNG text chunk.

The graph maps node ids to ``{"class_type": ..., "inputs": {...}}``; an input
that is a list ``[node_id, output_index]`` links to another node's output.
Settings come from a sampler node (``KSampler``, ``KSamplerAdvanced``, then
any other ``KSampler...`` class). When there are several, the first is taken
in this order: samplers whose latent does not come from another sampler (the
base pass, not a hires-fix pass) before the others, then by node id
(numerically). From it, links are followed:

- ``positive``/``negative`` to ``CLIPTextEncode`` nodes, through conditioning
  nodes (ControlNet, combine, area); a ``text`` that is itself a link is
  followed to the node that holds the text (a primitive or string node);
- ``model`` through LoRA loaders and model patches to ``CheckpointLoaderSimple``
  (``ckpt_name``) or ``UNETLoader`` (``unet_name``);
- ``latent_image`` to ``EmptyLatentImage`` for the size; when the latent comes
  from an image or another sampler, the image's own size is used;
- the ``VAEDecode`` of the sampler's output (any ``VAEDecode`` when none is
  fed by it directly): a ``vae`` input from ``VAELoader`` names a VAE file
  (``vae_name``); from a checkpoint loader it is the model's own.

Every walk is bounded and remembers the nodes it has seen, so cycles and
very long chains in hostile graphs end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import names
from sdstudio.engine.metadata.values import (
    Parsed,
    as_float,
    as_int,
    build_request,
    guarded,
    load_json,
    text,
)

PROMPT_KEY = "prompt"
SAMPLER_CLASSES = ("KSampler", "KSamplerAdvanced")
_MAX_DEPTH = 32
_TEXT_KEYS = ("text", "text_g", "value", "string", "prompt", "text_l")
_CONDITIONING_KEYS = ("conditioning", "conditioning_to", "conditioning_1", "conditioning_from")
_LATENT_KEYS = ("samples", "latent_image", "latent")

Graph = dict[str, dict[str, Any]]


@guarded
def read_comfyui(texts: Mapping[str, str], size: tuple[int, int] = (0, 0)) -> Parsed:
    """Read the settings of a ComfyUI API graph; ``size`` is the image's own size.

    Raises :class:`InvalidRequest` when there is no graph or it has no sampler.
    """
    graph = _graph(texts.get(PROMPT_KEY, ""))
    sampler_id = _pick_sampler(graph)
    inputs = graph[sampler_id]["inputs"]
    seed = inputs.get("seed", inputs.get("noise_seed"))
    values: dict[str, object] = {
        "seed": _resolve(graph, seed, ("seed", "noise_seed", "value", "int")),
        "steps": _resolve(graph, inputs.get("steps"), ("steps", "value", "int")),
        "guidance_scale": _resolve(graph, inputs.get("cfg"), ("cfg", "value", "float")),
        "prompt": _prompt(graph, inputs.get("positive"), "positive"),
        "negative_prompt": _prompt(graph, inputs.get("negative"), "negative"),
    }
    sampler = text(_resolve(graph, inputs.get("sampler_name"), ("sampler_name", "value")))
    scheduler = text(_resolve(graph, inputs.get("scheduler"), ("scheduler", "value")))
    if sampler:
        values["sampler"], values["schedule"] = names.comfyui_sampler(sampler, scheduler)
    denoise = as_float(_resolve(graph, inputs.get("denoise"), ("denoise", "value", "float")))
    if denoise is not None and denoise < 1.0:
        values["strength"] = denoise
    latent_size, _ = _latent(graph, inputs.get("latent_image"))
    values["width"], values["height"] = latent_size or size
    recorded, lora_notes = _model(graph, inputs.get("model"))
    values["vae"] = _vae(graph, sampler_id)
    parsed = build_request(values, model=names.model_name(recorded), model_name=recorded)
    return Parsed(parsed.request, parsed.model_name, parsed.notes + lora_notes)


def _graph(prompt: str) -> Graph:
    data = load_json(prompt) if prompt.lstrip().startswith("{") else None
    if not isinstance(data, dict):
        raise InvalidRequest("No ComfyUI graph.")
    graph: Graph = {}
    for node_id, node in data.items():
        if (
            isinstance(node, dict)
            and isinstance(node.get("class_type"), str)
            and isinstance(node.get("inputs"), dict)
        ):
            graph[str(node_id)] = node
    return graph


def _is_sampler(node: dict[str, Any]) -> bool:
    return str(node["class_type"]).startswith("KSampler")


def _pick_sampler(graph: Graph) -> str:
    candidates = [node_id for node_id, node in graph.items() if _is_sampler(node)]
    if not candidates:
        raise InvalidRequest("The ComfyUI graph has no sampler.")

    def order(node_id: str) -> tuple[int, bool, int, int, str]:
        node = graph[node_id]
        tier = 0 if node["class_type"] in SAMPLER_CLASSES else 1
        _, from_sampler = _latent(graph, node["inputs"].get("latent_image"))
        if node_id.isdecimal():
            return (tier, from_sampler, 0, len(node_id), node_id)
        return (tier, from_sampler, 1, 0, node_id)

    return min(candidates, key=order)


def _is_link(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str | int)
        and not isinstance(value[0], bool)
    )


def _follow(graph: Graph, link: object, seen: set[str]) -> dict[str, Any] | None:
    """The inputs of the node a link points to, unless it was seen before."""
    if not _is_link(link):
        return None
    node_id = str(link[0])  # type: ignore[index]
    if node_id in seen or node_id not in graph:
        return None
    seen.add(node_id)
    inputs: dict[str, Any] = graph[node_id]["inputs"]
    return inputs


def _resolve(graph: Graph, value: object, keys: tuple[str, ...]) -> object:
    """A literal input, following links through nodes that hold it under one of ``keys``."""
    seen: set[str] = set()
    for _ in range(_MAX_DEPTH):
        if not _is_link(value):
            return value
        inputs = _follow(graph, value, seen)
        if inputs is None:
            return None
        value = next((inputs[key] for key in keys if key in inputs), None)
    return None


def _prompt(graph: Graph, link: object, polarity: str) -> str:
    """The prompt text behind a conditioning input."""
    seen: set[str] = set()
    pending = [link]
    while pending and len(seen) < _MAX_DEPTH:
        inputs = _follow(graph, pending.pop(0), seen)
        if inputs is None:
            continue
        for key in _TEXT_KEYS:
            found = _resolve(graph, inputs.get(key), _TEXT_KEYS)
            if isinstance(found, str):
                return found
        pending += [inputs.get(key) for key in (polarity, *_CONDITIONING_KEYS)]
    return ""


def _latent(graph: Graph, link: object) -> tuple[tuple[int, int] | None, bool]:
    """The size of an empty latent behind ``link``, and whether a sampler made the latent."""
    seen: set[str] = set()
    for _ in range(_MAX_DEPTH):
        if not _is_link(link) or str(link[0]) not in graph:  # type: ignore[index]
            return None, False
        if _is_sampler(graph[str(link[0])]):  # type: ignore[index]
            return None, True
        inputs = _follow(graph, link, seen)
        if inputs is None:
            return None, False
        width = as_int(_resolve(graph, inputs.get("width"), ("width", "value", "int")))
        height = as_int(_resolve(graph, inputs.get("height"), ("height", "value", "int")))
        if width and height:
            return (width, height), False
        link = next((inputs[key] for key in _LATENT_KEYS if key in inputs), None)
    return None, False


def _vae(graph: Graph, sampler_id: str) -> str:
    """The VAE file the image was decoded with; empty for the model's own."""
    decoders = [n for n in graph.values() if n.get("class_type") == "VAEDecode"]
    fed = [n for n in decoders if _is_link(n["inputs"].get("samples"))]
    direct = [n for n in fed if str(n["inputs"]["samples"][0]) == sampler_id]
    for node in direct or decoders:
        inputs = _follow(graph, node["inputs"].get("vae"), set())
        if inputs is not None:
            name = _resolve(graph, inputs.get("vae_name"), ("vae_name", "value"))
            return name if isinstance(name, str) else ""
    return ""


def _model(graph: Graph, link: object) -> tuple[str, tuple[str, ...]]:
    """The checkpoint behind a ``model`` input, and notes on the LoRAs on the way."""
    seen: set[str] = set()
    notes: list[str] = []
    for _ in range(_MAX_DEPTH):
        inputs = _follow(graph, link, seen)
        if inputs is None:
            break
        lora = _resolve(graph, inputs.get("lora_name"), ("lora_name", "value"))
        if isinstance(lora, str):
            weight = as_float(_resolve(graph, inputs.get("strength_model"), ("value",)))
            shown = f" at weight {weight:g}" if weight is not None else ""
            notes.append(f"The image used the LoRA {names.model_name(lora)}{shown}.")
        for key in ("ckpt_name", "unet_name"):
            name = _resolve(graph, inputs.get(key), (key, "value"))
            if isinstance(name, str):
                return name, tuple(notes)
        link = inputs.get("model")
    return "", tuple(notes)
