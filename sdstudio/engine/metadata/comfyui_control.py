"""ControlNets in a ComfyUI graph, kept under AUTOMATIC1111's ControlNet extension's names.

``ControlNetApply`` (``strength``) and ``ControlNetApplyAdvanced`` / ``ControlNetApplySD3``
(``strength``, ``start_percent``, ``end_percent``) take a ``control_net`` from a
``ControlNetLoader`` or ``DiffControlNetLoader`` (``control_net_name``) and an ``image``,
usually a ``LoadImage`` node's file, sometimes through a preprocessor node. The graph
names that file but does not hold it, so no unit can run from the graph: each is kept
in the extras as ``ControlNet N`` (see :mod:`~sdstudio.engine.metadata.control_names`),
with a note that names the control image the graph loaded.
"""

from __future__ import annotations

from sdstudio.engine.control.units import MAX_UNITS
from sdstudio.engine.metadata.comfyui_graph import MAX_DEPTH, Graph, Walker
from sdstudio.engine.metadata.values import as_float

APPLY_CLASSES = ("ControlNetApply", "ControlNetApplyAdvanced", "ControlNetApplySD3")
LOADER_CLASSES = ("ControlNetLoader", "DiffControlNetLoader")
_PREPROCESSORS = {"Canny": "canny"}
"""ComfyUI's core preprocessor nodes that are A1111's modules."""


def control_entries(graph: Graph) -> tuple[dict[str, str], list[str]]:
    """The graph's ControlNets as ``ControlNet N`` extras (in node order), and notes."""
    extras: dict[str, str] = {}
    notes: list[str] = []
    applied = sorted(
        (key for key, node in graph.items() if node["class_type"] in APPLY_CLASSES), key=_order
    )
    for node_id in applied[:MAX_UNITS]:
        walker = Walker(graph)
        inputs = graph[node_id]["inputs"]
        model = _model(walker, inputs.get("control_net"))
        key = f"ControlNet {len(extras)}"
        if model is None:
            notes.append(f"The ControlNet node {node_id:.20} loads no ControlNet; it was not read.")
            continue
        items = []
        module, image = _image(walker, inputs.get("image"))
        if module:
            items.append(f"Module: {module}")
        items.append(f"Model: {model}")
        numbers = [("Weight", "strength", 1.0)]
        if "start_percent" in inputs or "end_percent" in inputs:
            numbers += [
                ("Guidance Start", "start_percent", 0.0),
                ("Guidance End", "end_percent", 1.0),
            ]
        for name, input_name, default in numbers:
            value = as_float(walker.value(inputs.get(input_name, default)))
            items.append(f"{name}: {value!r}" if value is not None else f"{name}: unknown")
        extras[key] = ", ".join(items)
        loaded = f" (the graph loads it from {image!r:.80})" if image else ""
        notes.append(
            f"{key} ({model}, weight {_shown(walker.value(inputs.get('strength', 1.0)))}) needs "
            f"its control image, which the image does not carry{loaded}; it is kept as "
            "written, not applied."
        )
    if len(applied) > MAX_UNITS:
        notes.append(f"{len(applied) - MAX_UNITS} more ControlNet node(s) were not read.")
    return extras, notes


def _model(walker: Walker, link: object) -> str | None:
    """The ControlNet file a loader names, without quotes or commas that would break the entry."""
    node = walker.node(link)
    if node is None or node.class_type not in LOADER_CLASSES:
        return None
    name = walker.string(node.inputs.get("control_net_name"))
    if not name or not name.strip():
        return None
    return name.strip().replace(",", " ").replace('"', "'")[:200]


def _image(walker: Walker, link: object) -> tuple[str, str]:
    """The A1111 module (``none`` for an image loaded as it is, ``""`` when unknown) and
    the file name of the ``LoadImage`` behind the unit's image."""
    passed: list[str] = []  # the nodes between the loader and the unit
    for _ in range(MAX_DEPTH):
        node = walker.node(link)
        if node is None:
            break
        if node.class_type.startswith("LoadImage"):
            image = walker.string(node.inputs.get("image")) or ""
            return ("none" if not passed else _module(passed)), image
        passed.append(node.class_type)
        link = node.inputs.get("image", node.inputs.get("images"))
    return _module(passed), ""


def _module(passed: list[str]) -> str:
    """The module of one known preprocessor node; ``""`` for any other chain."""
    return _PREPROCESSORS.get(passed[0], "") if len(passed) == 1 else ""


def _order(node_id: str) -> tuple[int, int, str]:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def _shown(value: object) -> str:
    number = as_float(value)
    return f"{number:g}" if number is not None else "unknown"
