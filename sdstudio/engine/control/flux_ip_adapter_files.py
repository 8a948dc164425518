"""XLabs' Flux.1 IP-Adapter files: telling one from its tensor names and shapes, and
renaming its tensors to the parts diffusers' loader takes.

XLabs' ``flux-ip-adapter`` has the shape of the original IP-Adapter: an image projection
(``ip_adapter_proj_model.proj`` and ``.norm``) turns the projected image embedding of
OpenAI's CLIP ViT-L/14 (768 wide) into four tokens of the T5 width (16 tokens in files
whose projection has 65,536 rows, as diffusers reads them), and each double block gets
keys and values for those tokens
(``double_blocks.<n>.processor.ip_adapter_double_stream_k_proj`` and ``_v_proj``, with
biases). The names are diffusers' ``load_ip_adapter`` renaming, done here so that any
file sdstudio finds (safetensors or a pickle of the same names) loads the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import ModelError

FAMILY, LABEL = "flux1", "Flux.1"
_PROJECTION = "ip_adapter_proj_model."
_KEYS = ".processor.ip_adapter_double_stream_k_proj.weight"


def is_flux_ip_adapter(keys: Iterable[str]) -> bool:
    """Whether tensor names are an XLabs Flux IP-Adapter's."""
    keys = list(keys)
    return any(k.startswith(_PROJECTION) for k in keys) and any(k.endswith(_KEYS) for k in keys)


def describe(path: Path, shapes: Mapping[str, tuple[int, ...]], name: str, hint: str) -> Any:
    """The :class:`IPAdapterFile` of an XLabs Flux IP-Adapter's tensor shapes;
    :class:`ModelError` for one sdstudio cannot run."""
    from sdstudio.engine.control.ip_adapter_files import IPAdapterFile

    if not any(k.startswith(_PROJECTION) for k in shapes):
        raise ModelError(
            f"{name} is not an IP-Adapter (it holds Flux.1 transformer weights, no image "
            "projection); choose an IP-Adapter model file."
        )
    projection = shapes.get(f"{_PROJECTION}proj.weight", ())
    keys = [s for k, s in shapes.items() if k.endswith(_KEYS) and len(s) == 2]
    if len(projection) != 2 or not keys:
        raise ModelError(f"{name} is a Flux IP-Adapter of a kind sdstudio cannot run yet.")
    context = keys[0][1]
    if projection[0] != tokens(projection[0]) * context:
        raise ModelError(
            f"{name} is a Flux IP-Adapter whose image projection does not match its "
            "attention weights; it cannot run."
        )
    return IPAdapterFile(path, FAMILY, LABEL, "plain", context, False, projection[1], hint)


def tokens(rows: int) -> int:
    """The image tokens of a projection with ``rows`` rows (diffusers' rule)."""
    return 16 if rows == 65536 else 4


def diffusers_parts(tensors: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """XLabs' tensors renamed to the two parts diffusers' loader takes (as its
    ``load_ip_adapter`` renames them)."""
    parts: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in tensors.items():
        if key.startswith(_PROJECTION):
            parts["image_proj"][key[len(_PROJECTION) :]] = value
        elif key.startswith("double_blocks."):
            rest = key.split(".", 1)[1].replace("processor.", "")
            rest = rest.replace("ip_adapter_double_stream_k_proj", "to_k_ip")
            parts["ip_adapter"][rest.replace("ip_adapter_double_stream_v_proj", "to_v_ip")] = value
    return parts
