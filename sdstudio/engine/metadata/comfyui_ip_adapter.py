"""IP-Adapters in a ComfyUI graph (cubiq's ComfyUI_IPAdapter_plus), kept as image prompts.

``IPAdapter`` and ``IPAdapterAdvanced`` (and the earlier ``IPAdapterApply``) patch the
model with ``weight``, ``start_at``, ``end_at`` and a ``weight_type``; their ``ipadapter``
comes from an ``IPAdapterModelLoader`` (``ipadapter_file``) or an
``IPAdapterUnifiedLoader`` (a ``preset``: ``STANDARD (medium strength)``, ``PLUS (high
strength)``...; the file depends on the checkpoint's family), the encoder from a
``CLIPVisionLoader`` (``clip_name``) or the preset, the reference ``image`` from
``LoadImage`` nodes (through batch and prep nodes), an optional ``attn_mask``. The graph
names those files but does not hold them, so no image prompt runs from the graph: each
is kept in the extras as a ``ControlNet N`` entry in the format of A1111's ControlNet
extension (see :mod:`~sdstudio.engine.metadata.ip_adapter_names`), numbered after the
graph's ControlNets, with a note naming the images. A setting sdstudio would not apply
(a weight type other than linear, another way of combining or scaling the embeddings, a
negative image) gets its own note; other IPAdapter nodes (FaceID, tiled, style and
composition...) are named in a note, not read.
"""

from __future__ import annotations

from typing import Any

from sdstudio.engine.control.image_prompts import MAX_IMAGE_PROMPTS, MAX_REFERENCE_IMAGES
from sdstudio.engine.metadata.comfyui_graph import MAX_DEPTH, Graph, Walker, is_link
from sdstudio.engine.metadata.ip_adapter_names import ENCODER_MODULES, guess_encoder
from sdstudio.engine.metadata.values import as_float

APPLY_CLASSES = ("IPAdapter", "IPAdapterAdvanced", "IPAdapterApply")
_LINEAR = ("linear", "standard", "original")
"""Weight types that weigh every layer alike, as sdstudio's image prompts do."""
_DEFAULTS = {"combine_embeds": "concat", "embeds_scaling": "V only"}
_PRESETS: dict[str, tuple[str, str, str]] = {
    "light - sd1.5 only (low strength)": ("ip-adapter_sd15_light_v11", "", "ViT-H"),
    "standard (medium strength)": ("ip-adapter_sd15", "ip-adapter_sdxl_vit-h", "ViT-H"),
    "vit-g (medium strength)": ("ip-adapter_sd15_vit-G", "ip-adapter_sdxl", "ViT-bigG"),
    "plus (high strength)": ("ip-adapter-plus_sd15", "ip-adapter-plus_sdxl_vit-h", "ViT-H"),
    "plus face (portraits)": (
        "ip-adapter-plus-face_sd15",
        "ip-adapter-plus-face_sdxl_vit-h",
        "ViT-H",
    ),
    "full face - sd1.5 only (portraits stronger)": ("ip-adapter-full-face_sd15", "", "ViT-H"),
}
"""The unified loader's presets: the SD 1.x file, the SDXL file, the encoder."""


def image_prompt_entries(graph: Graph, first: int = 0) -> tuple[dict[str, str], list[str]]:
    """The graph's IP-Adapters as ``ControlNet N`` extras from ``first`` on (in node
    order), and notes."""
    extras: dict[str, str] = {}
    notes: list[str] = []
    applied = sorted((k for k, n in graph.items() if n["class_type"] in APPLY_CLASSES), key=_order)
    for node_id in applied[:MAX_IMAGE_PROMPTS]:
        key = f"ControlNet {first + len(extras)}"
        entry, entry_notes = _entry(Walker(graph), node_id, graph[node_id], key)
        if entry:
            extras[key] = entry
        notes += entry_notes
    if len(applied) > MAX_IMAGE_PROMPTS:
        notes.append(f"{len(applied) - MAX_IMAGE_PROMPTS} more IPAdapter node(s) were not read.")
    others = sorted(
        (k for k, n in graph.items() if _other_apply(n["class_type"], n["inputs"])), key=_order
    )
    for node_id in others[:MAX_IMAGE_PROMPTS]:
        notes.append(
            f"The {graph[node_id]['class_type']:.40} node {node_id:.20} is an IP-Adapter "
            "sdstudio does not read (only IPAdapter and IPAdapterAdvanced are); it was not read."
        )
    return extras, notes


def _entry(walker: Walker, node_id: str, node: dict[str, Any], key: str) -> tuple[str, list[str]]:
    """One apply node's entry (empty when it cannot be read) and its notes."""
    inputs = node["inputs"]
    what = f"The {node['class_type']} node {node_id:.20}"
    if "weight" not in inputs:
        unnamed = "holds no settings (an editor graph does not name them)"
        return "", [f"{what} {unnamed}; it was not read."]
    model, preset_encoder, problem = _adapter(walker, inputs.get("ipadapter"))
    if problem:
        return "", [f"{what} {problem}; it was not read."]
    clip_name = _loaded(walker, inputs.get("clip_vision"), "CLIPVisionLoader", "clip_name")
    encoder = preset_encoder or guess_encoder(model, clip_name)
    items = [f"Module: {ENCODER_MODULES[encoder]}", f"Model: {model}"]
    numbers: dict[str, float | None] = {}
    for name, input_name, default in (
        ("Weight", "weight", 1.0),
        ("Guidance Start", "start_at", 0.0),
        ("Guidance End", "end_at", 1.0),
    ):
        numbers[name] = as_float(walker.value(inputs.get(input_name, default)))
        shown = repr(numbers[name]) if numbers[name] is not None else "unknown"
        items.append(f"{name}: {shown}")
    images = _images(Walker(walker.graph), inputs.get("image"))
    loaded = f" (the graph loads {', '.join(repr(i[:80]) for i in images)})" if images else ""
    weight = numbers["Weight"]
    notes = [
        f"{key} (IP-Adapter {model}, weight {f'{weight:g}' if weight is not None else 'unknown'}) "
        f"needs its reference images, which the image does not carry{loaded}; it is kept as "
        "written, not applied."
    ]
    if clip_name:
        notes.append(f"{key} encodes its images with the CLIP vision file {clip_name!r:.120}.")
    notes += _unapplied(walker, inputs, key)
    return ", ".join(items), notes


def _adapter(walker: Walker, link: object) -> tuple[str, str, str]:
    """The IP-Adapter file's name, the preset's encoder (``""``: not given by a preset),
    and why the adapter cannot be read."""
    node = walker.node(link)
    if node is None:
        return "", "", "loads no IP-Adapter"
    if node.class_type == "IPAdapterModelLoader":
        name = walker.string(node.inputs.get("ipadapter_file"))
        if not name or not name.strip():
            return "", "", "loads no IP-Adapter"
        if "faceid" in name.casefold():
            return "", "", f"loads the FaceID model {_clean(name)!r}, which needs InsightFace"
        return _clean(name), "", ""
    if node.class_type == "IPAdapterUnifiedLoader":
        preset = walker.string(node.inputs.get("preset")) or ""
        files = _PRESETS.get(preset.strip().casefold())
        if files is None:
            return "", "", f"uses the preset {preset!r:.60}, which sdstudio does not know"
        sdxl = "xl" in _checkpoint(walker, node.inputs.get("model")).casefold()
        name = files[1] if sdxl else files[0]
        if not name:
            return "", "", f"uses the preset {preset!r:.60}, which has no SDXL model"
        return name, files[2], ""
    other = f"loads its IP-Adapter with a {node.class_type:.40} node, which sdstudio does not read"
    return "", "", other


def _unapplied(walker: Walker, inputs: dict[str, Any], key: str) -> list[str]:
    """Notes on the node's settings an image prompt would not apply."""
    notes: list[str] = []
    weight_type = walker.string(inputs.get("weight_type"))
    if weight_type and weight_type.strip().casefold() not in _LINEAR:
        notes.append(
            f"{key}: its weight type {weight_type!r:.40} would not apply; sdstudio's image "
            "prompts weigh every layer alike (linear)."
        )
    for name, default in _DEFAULTS.items():
        value = walker.string(inputs.get(name))
        if value and value.strip() != default:
            notes.append(
                f"{key}: its {name.replace('_', ' ')} {value!r:.40} would not apply "
                f"(sdstudio's is {default!r})."
            )
    noise = as_float(walker.value(inputs.get("noise", 0.0)))
    if noise:
        notes.append(f"{key}: its noise {noise:g} would not apply.")
    if is_link(inputs.get("image_negative")):
        notes.append(f"{key}: its negative image would not apply.")
    if is_link(inputs.get("attn_mask")):
        mask = _images(Walker(walker.graph), inputs["attn_mask"])
        named = f" ({mask[0][:80]!r})" if mask else ""
        notes.append(f"{key} has an attention mask{named}, which the image does not carry.")
    return notes


def _images(walker: Walker, link: object) -> list[str]:
    """The files of the ``LoadImage`` nodes behind an image input, through batch, prep and
    other image nodes, in input order."""
    found: list[str] = []
    pending = [link]
    for _ in range(MAX_DEPTH):
        if not pending or len(found) >= MAX_REFERENCE_IMAGES:
            break
        node = walker.node(pending.pop(0))
        if node is None:
            continue
        if node.class_type.startswith("LoadImage"):
            name = walker.string(node.inputs.get("image", node.inputs.get("value")))
            if name:
                found.append(name)
            continue
        pending += [v for k, v in sorted(node.inputs.items()) if k.startswith(("image", "mask"))]
    return found


def _loaded(walker: Walker, link: object, class_type: str, name: str) -> str:
    node = walker.node(link)
    if node is None or node.class_type != class_type:
        return ""
    return _clean(walker.string(node.inputs.get(name)) or "")


def _checkpoint(walker: Walker, link: object) -> str:
    """The checkpoint file behind a ``model`` input; ``""`` when not found."""
    for _ in range(MAX_DEPTH):
        node = walker.node(link)
        if node is None:
            return ""
        for name in ("ckpt_name", "unet_name"):
            value = walker.string(node.inputs.get(name))
            if value:
                return value
        link = node.inputs.get("model")
    return ""


def _other_apply(class_type: str, inputs: dict[str, Any]) -> bool:
    """Another IPAdapter node that patches a model (FaceID, tiled, style...)."""
    return (
        class_type.startswith("IPAdapter")
        and class_type not in APPLY_CLASSES
        and "Loader" not in class_type
        and "model" in inputs
    )


def _clean(name: str) -> str:
    """A file name without quotes or commas that would break the entry."""
    return name.strip().replace(",", " ").replace('"', "'")[:200]


def _order(node_id: str) -> tuple[int, int, str]:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)
