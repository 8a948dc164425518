"""ComfyUI's editor graph (the ``workflow`` PNG text chunk), turned into an API graph.

Used when an image has no ``prompt`` chunk. The editor graph lists ``nodes``
(``id``, ``type``, ``inputs`` with a ``link`` id each, ``widgets_values``) and
``links`` (``[id, from_node, from_slot, to_node, to_slot, type]``, or objects
with ``origin_id``/``origin_slot``). A node's widget values are a list in the
order of its widgets, which the file does not name: they are named here for
the core nodes that hold settings. Other nodes keep their first widget value
as ``value`` (primitive and text nodes). Muted and bypassed nodes are left out.
"""

from __future__ import annotations

from typing import Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata.comfyui_graph import Graph
from sdstudio.engine.metadata.safe_text import load_json

WORKFLOW_KEY = "workflow"
_MAX_NODES = 20_000
_SEED = ("seed", "_control")
# Widget names in order; "_control" is the UI's "control after generate" value.
_WIDGETS: dict[str, tuple[str, ...]] = {
    "KSampler": (*_SEED, "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": (
        "add_noise",
        "noise_seed",
        "_control",
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "start_at_step",
        "end_at_step",
        "return_with_leftover_noise",
    ),
    "SamplerCustom": ("add_noise", "noise_seed", "_control", "cfg"),
    "RandomNoise": ("noise_seed", "_control"),
    "CFGGuider": ("cfg",),
    "KSamplerSelect": ("sampler_name",),
    "BasicScheduler": ("scheduler", "steps", "denoise"),
    "KarrasScheduler": ("steps", "sigma_max", "sigma_min", "rho"),
    "ExponentialScheduler": ("steps", "sigma_max", "sigma_min"),
    "CLIPTextEncode": ("text",),
    "CLIPTextEncodeSDXL": (
        "width",
        "height",
        "crop_w",
        "crop_h",
        "target_width",
        "target_height",
        "text_g",
        "text_l",
    ),
    "CheckpointLoaderSimple": ("ckpt_name",),
    "UNETLoader": ("unet_name", "weight_dtype"),
    "VAELoader": ("vae_name",),
    "LoraLoader": ("lora_name", "strength_model", "strength_clip"),
    "LoraLoaderModelOnly": ("lora_name", "strength_model"),
    "CLIPSetLastLayer": ("stop_at_clip_layer",),
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "EmptySD3LatentImage": ("width", "height", "batch_size"),
    "LatentUpscale": ("upscale_method", "width", "height", "crop"),
    "LatentUpscaleBy": ("upscale_method", "scale_by"),
    "ImageScale": ("upscale_method", "width", "height", "crop"),
    "ImageScaleBy": ("upscale_method", "scale_by"),
    "UpscaleModelLoader": ("model_name",),
    "LoadImage": ("image", "_upload"),
    "LoadImageMask": ("image", "channel", "_upload"),
    "ControlNetLoader": ("control_net_name",),
    "DiffControlNetLoader": ("control_net_name",),
    "ControlNetApply": ("strength",),
    "ControlNetApplyAdvanced": ("strength", "start_percent", "end_percent"),
    "ControlNetApplySD3": ("strength", "start_percent", "end_percent"),
    "CLIPVisionLoader": ("clip_name",),
    # cubiq's ComfyUI_IPAdapter_plus
    "IPAdapterModelLoader": ("ipadapter_file",),
    "IPAdapterUnifiedLoader": ("preset",),
    "IPAdapter": ("weight", "start_at", "end_at", "weight_type"),
    "IPAdapterAdvanced": (
        "weight",
        "weight_type",
        "combine_embeds",
        "start_at",
        "end_at",
        "embeds_scaling",
    ),
    # The plugin's first version; each release appended widgets, so older lists are a prefix.
    "IPAdapterApply": ("weight", "noise", "weight_type", "start_at", "end_at", "unfold_batch"),
}
_OFF_MODES = (2, 4)


def workflow_graph(workflow: str) -> Graph:
    """The API graph equivalent to an editor graph; raises :class:`InvalidRequest` when none."""
    data = load_json(workflow) if workflow.lstrip().startswith("{") else None
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(nodes, list):
        raise InvalidRequest("No ComfyUI graph.")
    links = _links(data.get("links"))
    graph: Graph = {}
    for node in nodes[:_MAX_NODES]:
        if not isinstance(node, dict) or node.get("mode") in _OFF_MODES:
            continue
        node_id, class_type = node.get("id"), node.get("type")
        if not isinstance(node_id, int | str) or isinstance(node_id, bool):
            continue
        if not isinstance(class_type, str):
            continue
        graph[str(node_id)] = {"class_type": class_type, "inputs": _inputs(node, links)}
    return graph


def _links(raw: object) -> dict[object, list[object]]:
    """Link id to ``[from_node, from_slot]``."""
    links: dict[object, list[object]] = {}
    for link in raw[: _MAX_NODES * 4] if isinstance(raw, list) else ():
        if isinstance(link, list) and len(link) >= 3:
            link_id, origin, slot = link[0], link[1], link[2]
        elif isinstance(link, dict):
            link_id, origin, slot = link.get("id"), link.get("origin_id"), link.get("origin_slot")
        else:
            continue
        if (
            isinstance(origin, int | str)
            and isinstance(slot, int)
            and not isinstance(slot, bool)
            and isinstance(link_id, int | str)
            and not isinstance(link_id, bool)
        ):
            links[link_id] = [str(origin), slot]
    return links


def _inputs(node: dict[str, Any], links: dict[object, list[object]]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    widgets = node.get("widgets_values")
    if isinstance(widgets, dict):
        inputs.update((str(key), value) for key, value in widgets.items())
    elif isinstance(widgets, list):
        widget_names = _WIDGETS.get(str(node.get("type")))
        if widget_names is not None:
            inputs.update(
                (name, value)
                for name, value in zip(widget_names, widgets, strict=False)
                if not name.startswith("_")
            )
        elif widgets and isinstance(widgets[0], str | int | float):
            inputs["value"] = widgets[0]
    for slot in node.get("inputs") or ():
        if not isinstance(slot, dict) or not isinstance(slot.get("name"), str):
            continue
        link = slot.get("link")
        if isinstance(link, int | str) and not isinstance(link, bool) and link in links:
            inputs[slot["name"]] = links[link]
    return inputs
