"""Following links in a ComfyUI API graph without trusting it.

A graph from an image may hold cycles, links to missing nodes, values of the
wrong type or chains of thousands of nodes. A :class:`Walker` reads it with
two bounds: no walk goes deeper than :data:`MAX_DEPTH` links, and one walker
visits at most :data:`MAX_VISITS` nodes in all. A walk that hits a bound, a
missing node or a value of the wrong type gives ``None`` ("not read"), never
an exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata.safe_text import load_json

MAX_DEPTH = 64
MAX_VISITS = 4000

Graph = dict[str, dict[str, Any]]

# Inputs that hold a prompt's text, most specific first (a wildcard node's
# ``populated_text`` is what was generated from, not its template).
TEXT_KEYS = ("populated_text", "text", "value", "string", "prompt", "text_g", "STRING")
# Inputs that hold a number on primitive and converter nodes.
NUMBER_KEYS = ("value", "int", "float", "number", "seed", "INT", "FLOAT")
# Inputs through which a latent (or the image it was made from) arrives.
LATENT_KEYS = ("samples", "latent_image", "latent", "pixels", "image", "images")
# Parts of text concatenation nodes, in order (WAS, pysssss, core and others).
_PARTS = re.compile(r"^(?:text|string)_?([a-f]|\d+)$")
_RESOLUTION = re.compile(r"(\d{2,5})\s*[x×]\s*(\d{2,5})")


@dataclass(frozen=True, slots=True)
class Node:
    """A node a link points to, and which of its outputs the link takes."""

    id: str
    class_type: str
    inputs: dict[str, Any]
    slot: int


def parse_graph(prompt: str) -> Graph:
    """The well-formed nodes of an API graph; raises :class:`InvalidRequest` when there is none."""
    data = load_json(prompt) if prompt.lstrip().startswith("{") else None
    if not isinstance(data, dict):
        raise InvalidRequest("No ComfyUI graph.")
    return {
        str(node_id): node
        for node_id, node in data.items()
        if isinstance(node, dict)
        and isinstance(node.get("class_type"), str)
        and isinstance(node.get("inputs"), dict)
    }


def is_link(value: object) -> bool:
    """Whether an input value is a link ``[node_id, output_index]``."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str | int)
        and not isinstance(value[0], bool)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def is_sampler(class_type: str) -> bool:
    """Whether a node class runs a sampler (``KSamplerSelect`` only names one)."""
    return (class_type.startswith("KSampler") and class_type != "KSamplerSelect") or class_type in (
        "SamplerCustom",
        "SamplerCustomAdvanced",
    )


@dataclass(slots=True)
class Walker:
    """Bounded reads of one graph; see the module's description."""

    graph: Graph
    visits: int = 0
    clip_links: list[object] = field(default_factory=list)
    """The ``clip`` inputs of the text encoders the prompt walks reached."""
    notes: list[str] = field(default_factory=list)

    def node(self, link: object) -> Node | None:
        """The node ``link`` points to; ``None`` for a non-link, a missing node, a spent budget."""
        if not is_link(link) or self.visits >= MAX_VISITS:
            return None
        self.visits += 1
        node_id = str(link[0])  # type: ignore[index]
        found = self.graph.get(node_id)
        if found is None:
            return None
        return Node(node_id, found["class_type"], found["inputs"], link[1])  # type: ignore[index]

    def value(self, value: object, keys: tuple[str, ...] = NUMBER_KEYS) -> object:
        """A literal input, following links through nodes that hold it under one of ``keys``."""
        for _ in range(MAX_DEPTH):
            if not is_link(value):
                return value
            node = self.node(value)
            if node is None:
                return None
            value = next((node.inputs[key] for key in keys if key in node.inputs), None)
            if value is None:
                return _resolution_part(node)
        return None

    def string(self, value: object, depth: int = 0) -> str | None:
        """The text behind an input: a literal, or text, concatenation, switch, primitive nodes."""
        if isinstance(value, str):
            return value
        if depth >= MAX_DEPTH:
            return None
        node = self.node(value)
        if node is None:
            return None
        inputs = node.inputs
        chosen = _switched(self, inputs)
        if chosen is not None:
            return self.string(chosen, depth + 1)
        parts = sorted((match[1].rjust(3), key) for key in inputs if (match := _PARTS.match(key)))
        if len(parts) >= 2:
            texts = [self.string(inputs[key], depth + 1) for _, key in parts]
            return _joined(self, node, texts, depth)
        for key in TEXT_KEYS:
            if key in inputs:
                return self.string(inputs[key], depth + 1)
        return None

    def prompt(self, link: object, depth: int = 0) -> str | None:
        """The prompt text behind a conditioning input; ``None`` when it cannot be followed."""
        if depth >= MAX_DEPTH:
            return None
        node = self.node(link)
        if node is None:
            return None
        inputs = node.inputs
        if node.class_type == "ConditioningZeroOut":
            return ""
        if "text_g" in inputs or "text_l" in inputs:
            self.clip_links.append(inputs.get("clip"))
            big, small = self.string(inputs.get("text_g")), self.string(inputs.get("text_l"))
            if big and small and big.strip() != small.strip():
                self.notes.append("The SDXL text_l prompt differs from text_g; text_g is used.")
            return big if big is not None else small
        for key in TEXT_KEYS:
            if key in inputs:
                self.clip_links.append(inputs.get("clip"))
                return self.string(inputs[key], depth + 1)
        for first, second in (
            ("conditioning_1", "conditioning_2"),
            ("conditioning_to", "conditioning_from"),
        ):
            if first in inputs or second in inputs:
                texts = [self.prompt(inputs.get(key), depth + 1) for key in (first, second)]
                if all(text is None for text in texts):
                    return None
                return " BREAK ".join(text for text in texts if text)
        if "positive" in inputs and "negative" in inputs:
            return self.prompt(inputs["positive" if node.slot == 0 else "negative"], depth + 1)
        for key in ("conditioning", "positive", "cond", "conditioning_a"):
            if key in inputs:
                return self.prompt(inputs[key], depth + 1)
        return None

    def clip_skip(self) -> tuple[int | None, str]:
        """A1111's clip skip from a ``CLIPSetLastLayer`` on the text encoders' ``clip`` path.

        ``(None, "")`` when there is none (the last layer is used), ``(None, note)``
        when its value is unusable.
        """
        for link in self.clip_links[:8]:
            for _ in range(MAX_DEPTH):
                node = self.node(link)
                if node is None:
                    break
                if "stop_at_clip_layer" in node.inputs:
                    layer = self.value(node.inputs["stop_at_clip_layer"])
                    if (
                        isinstance(layer, int)
                        and not isinstance(layer, bool)
                        and -24 <= layer <= -1
                    ):
                        return -layer, ""
                    return None, f"The CLIP layer {str(layer)[:40]} is unusable; it was not read."
                link = node.inputs.get("clip")
        return None, ""


def _switched(walker: Walker, inputs: dict[str, Any]) -> object | None:
    """The input a switch node passes on (Impact, Crystools, rgthree); ``None`` for other nodes."""
    if "select" in inputs and any(key.startswith("input") for key in inputs):
        select = walker.value(inputs["select"])
        if isinstance(select, int) and not isinstance(select, bool):
            return inputs.get(f"input{select}")
        return None
    if "boolean" in inputs and ("on_true" in inputs or "on_false" in inputs):
        flag = walker.value(inputs["boolean"], ("boolean", "value"))
        if isinstance(flag, bool):
            return inputs.get("on_true" if flag else "on_false")
        return None
    anys = sorted(key for key in inputs if key.startswith("any_"))
    for key in anys:
        if walker.string(inputs[key], MAX_DEPTH - 8):
            return inputs[key]
    return None


def _joined(walker: Walker, node: Node, texts: list[str | None], depth: int) -> str | None:
    """What a concatenation node outputs from its parts."""
    if all(text is None for text in texts):
        return None
    parts = [text or "" for text in texts]
    inputs = node.inputs
    action = walker.value(inputs.get("action"), ("action", "value"))
    if action == "replace" and len(parts) >= 3:
        return parts[0].replace(parts[1], parts[2]) if parts[1] else parts[0]
    if "delimiter" in inputs:
        delimiter = walker.string(inputs["delimiter"], depth + 1) or ""
    else:
        tidy = walker.value(inputs.get("tidy_tags"), ("tidy_tags", "value"))
        delimiter = ", " if tidy in ("yes", True) else ""
    clean = walker.value(inputs.get("clean_whitespace"), ("clean_whitespace", "value"))
    if clean in ("true", True):
        parts = [part.strip() for part in parts]
    return delimiter.join(part for part in parts if part)


def _resolution_part(node: Node) -> int | None:
    """Width (output 0) or height (output 1) of a resolution-picker node's ``"1024x1024"`` text."""
    for key in ("resolution", "dimensions", "size"):
        found = node.inputs.get(key)
        match = _RESOLUTION.search(found) if isinstance(found, str) else None
        if match and node.slot in (0, 1):
            return int(match[node.slot + 1])
    return None
