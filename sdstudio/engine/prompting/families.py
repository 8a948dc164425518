"""Which model family a network file is made for, and refusing one made for another.

The model's family: SD by its UNet's cross-attention width (the text encoder's
width), the flow families by pipeline class. The file's: from its safetensors header
(:func:`sdstudio.engine.prompting.lycoris.network_family`), never its tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdstudio.engine import flow_loras
from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.models import layouts
from sdstudio.engine.prompting import lycoris

_SD_FAMILIES = {768: ("sd1", "SD 1.x"), 1024: ("sd2", "SD 2.x"), 2048: ("sdxl", "SDXL")}


def model_family(pipe: Any) -> tuple[str, str] | None:
    """The family (id, label) of a pipeline's model when known."""
    unet = getattr(pipe, "unet", None)
    width = getattr(getattr(unet, "config", None), "cross_attention_dim", None)
    if unet is not None:
        return _SD_FAMILIES.get(width) if isinstance(width, int) else None
    return flow_loras.flow_family(pipe)


def check_family(pipe: Any, path: Path) -> None:
    """Refuse a LoRA or LyCORIS file made for another model family, when both are known."""
    model = model_family(pipe)
    if model is None or path.suffix.lower() != ".safetensors":
        return
    try:
        header = layouts.read_safetensors_header(path)
        family_id, label = lycoris.network_family(header)
        kind = lycoris.KIND_LABELS[lycoris.header_kind(header)]
    except (OSError, ValueError, ModelError):
        return  # loading it will say what is wrong
    if family_id != "unknown" and family_id != model[0]:
        raise InvalidRequest(
            f"The {kind} {path.stem} is made for {label} models; the chosen model is {model[1]}."
        )
