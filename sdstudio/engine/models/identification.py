"""Telling what a model file or folder found on disk is, from its header or its files.

Its kind where a folder holds several (IP-Adapters among ControlNets, the parts of
a flow model kept alone), its family and label, and the variant a diffusers folder
tells. A file's header is parsed once by the caller (see
:mod:`~sdstudio.engine.models.catalog`) and read here, never the file again; the
detectors of other modules never make a listing fail: what they cannot tell is
``("unknown", "Unknown")``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sdstudio.engine.models import layouts
from sdstudio.engine.parts import Part, Role, identify_part_quietly

log = logging.getLogger(__name__)


def family_of(path: Path) -> tuple[str, str]:
    """The model's family and its label, or ``("unknown", "Unknown")`` when it cannot be told."""
    try:
        from sdstudio.engine.models.families import detect_family

        found = detect_family(path)
        family, label = str(found.family), str(found.label)
    except Exception as error:  # the detector is another module's; never let it break listing
        log.info("Family detection failed for %s: %s", path, error)
        family, label = "unknown", "Unknown"
    if family == "unknown" and path.is_dir():
        return layouts.diffusers_family(path)
    if family == "unknown" and path.suffix.lower() in (".safetensors", ".gguf"):
        part = part_identity(path, identify_part_quietly(path))
        if part is not None:
            return part[1]
    return family, label


def file_family(path: Path, kind: str, header: dict[str, Any], data_size: int) -> tuple[str, str]:
    """A safetensors file's family from its parsed header (never reading the file again)."""
    if kind == "lora":  # LoHa, LoKr… are named in the label
        from sdstudio.engine.prompting.lycoris import labelled_family

        return labelled_family(header)
    if kind == "embedding":
        return layouts.network_family(header)
    if kind == "controlnet":
        from sdstudio.engine.control.control_files import safetensors_family

        return safetensors_family(header)
    if kind == "ipadapter":
        from sdstudio.engine.control.ip_adapter_files import header_family

        return header_family(header)
    if kind in ("vae", "upscaler", "clip_vision"):
        return "unknown", "Unknown"
    try:
        from sdstudio.engine.models.families import (
            detect_family_from_header,
            with_sidecar_prediction,
        )

        shapes = layouts.header_shapes(header, data_size)
        found = with_sidecar_prediction(detect_family_from_header(shapes), path)
        return str(found.family), str(found.label)
    except Exception as error:  # the detector is another module's; never let it break listing
        log.info("Family detection failed for %s: %s", path, error)
        return "unknown", "Unknown"


def part_identity(
    path: Path, part: Part | None
) -> tuple[str, tuple[str, str], tuple[str, ...], str] | None:
    """A part file's kind, family, flags and variant: a transformer kept alone is a model
    (``checkpoint``) of its family; a text encoder or VAE of the flow families is a part."""
    if part is None:
        return None
    flags = tuple(f for f in (part.quantization.split(" ")[0].lower(),) if f)
    if part.role is Role.TRANSFORMER:
        from sdstudio.engine.families import family
        from sdstudio.engine.models.split_layout import embedded_parts

        label = family(part.kind).label + (f" {part.variant}" if part.variant else "")
        whole = "all-in-one" if embedded_parts(path)[0] else "transformer"
        return "checkpoint", (part.kind, label), (whole, *flags), part.variant
    return part.role.value, (part.kind, part.label), flags, ""


def ip_adapter_kind(path: Path, kind: str, header: dict[str, Any] | None) -> str:
    """``ipadapter`` for an IP-Adapter among ControlNets (A1111 keeps them together)."""
    if kind != "controlnet":
        return kind
    from sdstudio.engine.control.ip_adapter_files import catalog_kind

    return catalog_kind(path, header)


def is_controlnet_folder(sub: Path, root: Path, kind: str) -> bool:
    """Whether a folder with a ``config.json`` is where ControlNets are kept."""
    return layouts.kind_from_path(sub / "config.json", root, kind) == "controlnet"


def controlnet_folder_family(folder: Path) -> tuple[str, str]:
    """A diffusers ControlNet folder's family, its label naming the kind of ControlNet
    (or the reason it cannot be told, as the label of ``unknown``)."""
    from sdstudio.engine.control.control_files import KIND_LABELS, folder_family, folder_kind
    from sdstudio.engine.errors import ModelError

    try:
        family, label = folder_family(folder)
        return family, label + KIND_LABELS[folder_kind(folder)]
    except ModelError as error:
        return "unknown", str(error)


def image_prompt_folder(sub: Path, root: Path, kind: str, source: str) -> Any:
    """``(kind, family)`` of an InvokeAI IP-Adapter folder or a CLIP vision encoder folder
    where such models are kept, else ``None``."""
    from sdstudio.engine.control.ip_adapter_files import folder_entry

    if source in ("app", "folder"):
        kind = layouts.kind_from_path(sub / "x", root, kind)
    return folder_entry(sub, kind)


def folder_variant(path: Path) -> str:
    """The variant a diffusers folder's transformer config tells (``dev``, ``Large``)."""
    try:
        from sdstudio.engine.models.families import detect_folder_family

        return detect_folder_family(path).variant
    except Exception as error:  # the detector is another module's; never let it break listing
        log.info("Variant detection failed for %s: %s", path, error)
        return ""
