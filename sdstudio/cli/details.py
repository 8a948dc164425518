"""``history show`` in words: everything stored about one image, one setting a line.

The settings are read from the stored :class:`GenerationRequest`, field by field,
so a field added to the request is shown without a change here; the known ones
get the names the app and A1111 use.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any

from sdstudio.engine.control.image_prompts import ImagePrompt
from sdstudio.engine.control.units import ControlUnit
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.history import HistoryEntry
from sdstudio.engine.metadata import control_names, ip_adapter_names
from sdstudio.engine.metadata.record import ImageRecord
from sdstudio.engine.refine.detailer_settings import Detailer, detailed_text
from sdstudio.engine.refine.hires_settings import HiresFix
from sdstudio.engine.refine.refiner_settings import Refiner

REQUEST_LABELS = {
    "prompt": "Prompt",
    "negative_prompt": "Negative prompt",
    "mode": "Mode",
    "model": "Model",
    "sampler": "Sampler",
    "schedule": "Schedule",
    "steps": "Steps",
    "guidance_scale": "CFG scale",
    "seed": "Seed",
    "width": "Width",
    "height": "Height",
    "batch_size": "Batch size",
    "init_image": "Init image",
    "mask": "Mask",
    "strength": "Strength",
    "clip_skip": "Clip skip",
    "vae": "VAE",
    "resize_mode": "Resize mode",
    "mask_blur": "Mask blur",
    "inpaint_area": "Inpaint area",
    "masked_padding": "Masked area padding",
    "masked_content": "Masked content",
    "distilled_guidance": "Distilled CFG scale",
    "text_encoders": "Text encoders",
    "hires": "Hires fix",
    "refiner": "Refiner",
    "detailer": "Detailer",
    "control": "ControlNet",
    "ip_adapters": "Image prompts",
}
"""Names for people of the request's fields; others are named from the field."""

_EXTRA_LABELS = {
    "loras": "LoRAs",
    "embeddings": "Embeddings",
    "vae": "VAE file",
    "refiner": "Refiner file",
    "detailer": "Faces detailed",
    "control": "ControlNet files",
    "ip_adapters": "IP-Adapter files",
}
_EMPTY = {"vae": "the model's own", "text_encoders": "the model's own", "hires": "none"}


def label(name: str) -> str:
    """The name shown for a request field or record entry."""
    return REQUEST_LABELS.get(name) or name.replace("_", " ").capitalize()


def entry_lines(entry: HistoryEntry) -> list[str]:
    """One history entry as aligned ``Label: value`` lines, under two headings."""
    about: list[tuple[str, Any]] = [
        ("File", entry.path),
        ("Created", entry.created),
        ("Favourite", entry.favorite),
        ("Model name", entry.model_name),
        ("Model hash", entry.model_hash or "unknown"),
        ("Made by", entry.source),
        ("Duration", f"{entry.duration_s:.2f} s" if entry.duration_s else "unknown"),
    ]
    record = _record(entry)
    if record is not None:
        about += [("Device", record.device), ("App version", record.app_version)]
        about += [(_EXTRA_LABELS.get(key) or label(key), v) for key, v in record.extra.items()]
    request = entry.request
    settings = [
        (label(f.name), _setting(f.name, getattr(request, f.name)))
        for f in dataclasses.fields(request)
    ]
    rows = [(name, _text(value)) for name, value in about if value not in ("", None)]
    width = max(len(name) for name, _value in rows + settings) + 2
    lines = [f"Image {entry.id}"]
    lines += [_line(name, value, width) for name, value in rows]
    lines.append("Settings")
    lines += [_line(name, value, width) for name, value in settings]
    return lines


def _setting(name: str, value: Any) -> str:
    """A request field in words."""
    if name == "seed_resize_from":
        return "off" if value == (0, 0) else f"{value[0]}x{value[1]}"
    describe = getattr(value, "describe", None)  # a settings part (fast mode …)
    if callable(describe) and not isinstance(value, HiresFix | Refiner | Detailer):
        return str(describe())
    return _text(value, _EMPTY.get(name, "none"))


def _record(entry: HistoryEntry) -> ImageRecord | None:
    try:
        return ImageRecord.from_json(entry.record_json)
    except InvalidRequest:
        return None


def _text(value: Any, empty: str = "none") -> str:
    if value is None or value == "":
        return empty
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, HiresFix | Refiner | Detailer):
        return value.describe()
    if isinstance(value, tuple) and value and all(isinstance(v, ControlUnit) for v in value):
        return "\n".join(control_names.describe(unit) for unit in value)  # one line a unit
    if isinstance(value, tuple) and value and all(isinstance(v, ImagePrompt) for v in value):
        return "\n".join(_image_prompt(prompt) for prompt in value)
    if isinstance(value, dict) and "faces" in value and "boxes" in value:
        return detailed_text(value)
    if isinstance(value, dict) and "name" in value:
        return _network(value)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return ", ".join(value) or empty
    if isinstance(value, list | tuple) and all(isinstance(v, dict) for v in value):
        return ", ".join(_text(v) for v in value) or empty
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _image_prompt(prompt: ImagePrompt) -> str:
    """An image prompt's line, then its reference images and mask, one a line."""
    lines = [ip_adapter_names.describe(prompt)]
    lines += [f"  image: {image}" for image in prompt.images]
    lines += [f"  mask: {prompt.mask}"] if prompt.mask else []
    lines += [f"  encoder: {prompt.encoder}"] if prompt.encoder else []
    return "\n".join(lines)


def _network(use: dict[str, Any]) -> str:
    """A LoRA, embedding or VAE file as ``name (weight 0.8, hash 1234abcd)``."""
    details = [f"{key} {_text(use[key])}" for key in ("weight", "hash") if use.get(key)]
    return f"{use['name']} ({', '.join(details)})" if details else str(use["name"])


def _line(name: str, value: str, width: int) -> str:
    head = f"  {name + ':':<{width}}"
    continuation = "\n" + " " * len(head)
    return head + continuation.join(value.splitlines() or [""])
