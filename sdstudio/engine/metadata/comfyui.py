"""ComfyUI: the API graph in the ``prompt`` PNG text chunk.

The graph maps node ids to ``{"class_type": ..., "inputs": {...}}``; an input
that is a list ``[node_id, output_index]`` links to another node's output.
When an image has no ``prompt`` chunk, the editor graph in ``workflow`` is
read instead (see :mod:`~sdstudio.engine.metadata.comfyui_workflow`).

Settings come from one sampler node (see
:mod:`~sdstudio.engine.metadata.comfyui_sampling` for the kinds read). When
there are several, the base pass is taken: a sampler whose latent does not
come from another sampler, preferably one that starts from an empty latent,
then ``KSampler``/``KSamplerAdvanced``/``SamplerCustom...`` before other
classes, then the lowest node id. A sampler fed (through upscale or resize
nodes, latent or image) by another one is a hires pass: its upscale, upscaler,
steps, denoise (and sampler, CFG and prompts where they differ) become the
request's hires fix (see :func:`~sdstudio.engine.metadata.comfyui_sampling.hires_pass`);
one that cannot is kept in :attr:`Parsed.extras` under AUTOMATIC1111's names
(``Hires upscale``, ``Denoising strength``...), not applied. The base
sampler's settings a request cannot hold (``start_at_step``...) are kept there
too. From the base sampler, links are followed:

- ``positive``/``negative`` back through conditioning nodes (ControlNet,
  combine and concat, whose texts are joined with ``BREAK``) to the text
  encoders (``CLIPTextEncode``, ``CLIPTextEncodeSDXL``'s ``text_g``), and their
  text through text, concatenation, switch and primitive nodes;
- the encoders' ``clip`` to ``CLIPSetLastLayer``: ``stop_at_clip_layer`` -2
  is A1111's clip skip 2;
- ``model`` through LoRA loaders (which become ``<lora:name:weight>`` tags at
  the end of the prompt) and model patches to the checkpoint (``ckpt_name``
  or ``unet_name``, and a hash when the loader node carries one);
- ``latent_image`` to an empty-latent node's ``width``/``height``; when the
  latent comes from an image, the image's own size is used;
- the ``VAEDecode`` of the sampler's output: a ``VAELoader`` names a VAE file.

The graph's ControlNet nodes are kept as ``ControlNet N`` extras, not applied: the
graph names their control images but does not hold them (see
:mod:`~sdstudio.engine.metadata.comfyui_control`); so are its IP-Adapter nodes, after
them (see :mod:`~sdstudio.engine.metadata.comfyui_ip_adapter`).

Every walk is bounded (see :mod:`~sdstudio.engine.metadata.comfyui_graph`);
a value that cannot be followed is left at sdstudio's default and the notes
say it was not read.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import comfyui_control, comfyui_flow, comfyui_ip_adapter, names
from sdstudio.engine.metadata.comfyui_graph import (
    MAX_DEPTH,
    Graph,
    Walker,
    is_link,
    is_sampler,
    parse_graph,
)
from sdstudio.engine.metadata.comfyui_sampling import (
    LatentSource,
    SamplerInputs,
    SecondPass,
    hires_pass,
    latent_source,
    sampler_inputs,
)
from sdstudio.engine.metadata.comfyui_workflow import WORKFLOW_KEY, workflow_graph
from sdstudio.engine.metadata.safe_text import text
from sdstudio.engine.metadata.values import Parsed, as_float, build_request, guarded
from sdstudio.engine.request import MAX_CLIP_SKIP, MAX_DISTILLED_GUIDANCE

PROMPT_KEY = "prompt"
SAMPLER_CLASSES = ("KSampler", "KSamplerAdvanced", "SamplerCustomAdvanced", "SamplerCustom")
_MAX_SAMPLERS = 64
# Loader inputs that hold the checkpoint's hash (image saver and hashing nodes).
_HASH_KEYS = ("ckpt_hash", "model_hash", "hash", "sha256")
_HEX = re.compile(r"[0-9a-fA-F]{8,64}")

__all__ = ["PROMPT_KEY", "WORKFLOW_KEY", "read_comfyui"]


@guarded
def read_comfyui(texts: Mapping[str, str], size: tuple[int, int] = (0, 0)) -> Parsed:
    """Read the settings of a ComfyUI graph; ``size`` is the image's own size.

    Raises :class:`InvalidRequest` when there is no graph or it has no sampler.
    """
    if texts.get(PROMPT_KEY, "").strip():
        graph = parse_graph(texts[PROMPT_KEY])
    else:
        graph = workflow_graph(texts.get(WORKFLOW_KEY, ""))
    samplers = _samplers(graph)
    base = min(samplers, key=lambda node_id: _order(graph, node_id, samplers[node_id]))
    found = sampler_inputs(Walker(graph), base)
    notes: list[str] = []
    values: dict[str, object] = {
        "seed": found.seed,
        "steps": found.steps,
        "guidance_scale": found.cfg,
    }
    sampler, scheduler = text(found.sampler_name), text(found.scheduler)
    if sampler:
        notes += names.sampler_and_schedule(sampler, scheduler).put(values)
    denoise = as_float(found.denoise)
    if denoise is not None and denoise < 1.0:
        values["strength"] = denoise
    walker = Walker(graph)
    positive = walker.prompt(found.positive)
    negative = walker.prompt(found.negative)
    if negative is None and found.negative is not None:
        notes.append("The negative prompt was not read from the graph.")
    recorded, model_hash, loras = _model(Walker(graph), found.model, notes)
    if positive is not None or loras:
        values["prompt"] = _with_loras(positive or "", loras)
    if negative is not None:
        values["negative_prompt"] = negative
    source = samplers[base]
    width_height = source.size or (size if all(size) else None)
    if width_height is not None:
        values["width"], values["height"] = width_height
    values["vae"] = _vae(Walker(graph), base)
    if comfyui_flow.is_transformer_loader(walker, found.model):
        values["text_encoders"] = comfyui_flow.text_encoders(walker)
    extras: dict[str, object] = dict(found.other)
    extras |= comfyui_flow.model_sampling(walker, found.model)
    hires = _later_passes(graph, base, samplers, found)
    extras |= hires.extras
    notes += hires.notes
    control, control_notes = comfyui_control.control_entries(graph)
    extras |= control
    notes += control_notes
    prompts, prompt_notes = comfyui_ip_adapter.image_prompt_entries(graph, first=len(control))
    extras |= prompts
    notes += prompt_notes
    parsed = build_request(
        values,
        model=names.model_name(recorded),
        model_name=recorded,
        model_hash=model_hash,
        extras=extras,
    )
    request, read = parsed.request, parsed.read
    if hires.fix is not None:
        request, read = request.replace(hires=hires.fix), read | {"hires"}
    clip_skip, clip_note = walker.clip_skip()
    if clip_skip is not None and clip_skip <= MAX_CLIP_SKIP:
        request = dataclasses.replace(request, clip_skip=clip_skip)
        read |= {"clip_skip"}
    elif clip_skip is not None:
        clip_note = f"Clip skip {clip_skip} is over sdstudio's {MAX_CLIP_SKIP}; it was not read."
    notes += [clip_note] if clip_note else []
    distilled = comfyui_flow.distilled_guidance(walker, found.positive)
    if distilled is not None and 0 <= distilled <= MAX_DISTILLED_GUIDANCE:
        request = dataclasses.replace(request, distilled_guidance=distilled)
        read |= {"distilled_guidance"}
    all_notes = tuple(dict.fromkeys((*walker.notes, *notes, *parsed.notes)))
    return dataclasses.replace(parsed, request=request, notes=all_notes, read=read)


def _samplers(graph: Graph) -> dict[str, LatentSource]:
    """The first sampler nodes (by id) and where each one's latent came from."""
    found = sorted((n for n, node in graph.items() if is_sampler(node["class_type"])), key=_id_key)
    if not found:
        raise InvalidRequest("The ComfyUI graph has no sampler.")
    return {
        node_id: latent_source(Walker(graph), graph[node_id]["inputs"].get("latent_image"))
        for node_id in found[:_MAX_SAMPLERS]
    }


def _id_key(node_id: str) -> tuple[int, int, str]:
    return (0, len(node_id), node_id) if node_id.isdecimal() else (1, 0, node_id)


def _order(graph: Graph, node_id: str, source: LatentSource) -> tuple[object, ...]:
    known = graph[node_id]["class_type"] in SAMPLER_CLASSES
    from_empty = source.size is not None or source.from_image
    return (source.sampler is not None, not from_empty, not known, _id_key(node_id))


def _later_passes(
    graph: Graph, base: str, samplers: dict[str, LatentSource], found: SamplerInputs
) -> SecondPass:
    """The hires pass: the first sampler that refines another's output, preferring the base's.

    Further passes are only counted in a note.
    """
    later = [n for n, source in samplers.items() if source.sampler is not None and n != base]
    if not later:
        return SecondPass(None, {}, [])
    first = min(later, key=lambda n: (samplers[n].sampler != base, _id_key(n)))
    walker = Walker(graph)
    hires = hires_pass(walker, sampler_inputs(walker, first), samplers[first], found)
    hires.notes[:0] = walker.notes
    if len(later) > 1:
        hires.notes.append(f"{len(later) - 1} more sampler pass(es) followed; they were not read.")
    return hires


def _model(
    walker: Walker, link: object, notes: list[str]
) -> tuple[str, str, list[tuple[str, float]]]:
    """The checkpoint behind a ``model`` input, its hash when the loader carries one, and
    the LoRAs on the way in the order applied."""
    loras: list[tuple[str, float]] = []
    for _ in range(MAX_DEPTH):
        node = walker.node(link)
        if node is None:
            break
        inputs = node.inputs
        for key in ("ckpt_name", "unet_name"):
            name = walker.value(inputs.get(key), (key, "value"))
            if isinstance(name, str) and name:
                loras.reverse()
                return name, _hash(walker, inputs), loras
        name = walker.value(inputs.get("lora_name"), ("lora_name", "value"))
        if isinstance(name, str):
            weight = walker.value(inputs.get("strength_model", inputs.get("strength")))
            _add_lora(loras, notes, name, weight)
        for key, entry in sorted(inputs.items(), reverse=True):
            if (
                key.casefold().startswith("lora_")
                and isinstance(entry, dict)
                and entry.get("on", True) is not False
                and isinstance(entry.get("lora"), str)
            ):
                _add_lora(loras, notes, entry["lora"], entry.get("strength"))
        link = inputs.get("model")
    if is_link(link):
        notes.append("The model was not read from the graph.")
    loras.reverse()
    return "", "", loras


def _hash(walker: Walker, inputs: dict[str, object]) -> str:
    """A hexadecimal hash a checkpoint loader node holds; empty when it has none."""
    for key in _HASH_KEYS:
        value = walker.value(inputs.get(key), (key, "value"))
        if isinstance(value, str) and _HEX.fullmatch(value.strip()):
            return value.strip()
    return ""


def _add_lora(loras: list[tuple[str, float]], notes: list[str], name: str, raw: object) -> None:
    if not name.strip() or name.strip().casefold() == "none":
        return
    weight = as_float(raw)
    if weight is None:
        notes.append(f"The weight of the LoRA {names.model_name(name)} was not read; 1 is used.")
        weight = 1.0
    loras.append((names.model_name(name), weight))


def _with_loras(prompt: str, loras: list[tuple[str, float]]) -> str:
    """``prompt`` with a ``<lora:name:weight>`` tag at its end for each LoRA it lacks a tag for."""
    for name, weight in loras:
        if not re.search(rf"<lora:{re.escape(name)}:", prompt, re.IGNORECASE):
            tag = f"<lora:{name}:{weight:g}>"
            prompt = f"{prompt.rstrip()} {tag}" if prompt.strip() else tag
    return prompt


def _vae(walker: Walker, sampler_id: str) -> str:
    """The VAE file the image was decoded with; empty for the model's own."""
    decoders = [n for n in walker.graph.values() if n["class_type"] == "VAEDecode"]
    direct = [
        n
        for n in decoders
        if is_link(n["inputs"].get("samples")) and str(n["inputs"]["samples"][0]) == sampler_id
    ]
    for node in (direct or decoders)[:_MAX_SAMPLERS]:
        loader = walker.node(node["inputs"].get("vae"))
        if loader is not None:
            name = walker.value(loader.inputs.get("vae_name"), ("vae_name", "value"))
            return name if isinstance(name, str) else ""
    return ""
