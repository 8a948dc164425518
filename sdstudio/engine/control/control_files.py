"""ControlNet files: finding one by path or name, and telling its family from its header.

Users keep ControlNets where their tools look for them: AUTOMATIC1111 and Forge in
``models/ControlNet`` (or the extension's ``extensions/sd-webui-controlnet/models``),
ComfyUI in ``models/controlnet``, InvokeAI in ``models/<base>/controlnet``, sdstudio in
its models folder's ``controlnet`` sub-folder (the catalog kind ``controlnet``).

A file's family is read from its safetensors header only (a diffusers folder's from its
``config.json``): the cross-attention width of the ControlNet's transformer blocks is the
text encoder's (768 for SD 1.x, 1024 for SD 2.x, 2048 for SDXL), and SDXL ControlNets
have ``add_embedding`` (the size conditioning). T2I-Adapters (see
:mod:`~sdstudio.engine.control.t2i_adapters`) and Union ControlNets (see
:mod:`~sdstudio.engine.control.union`) run as control units too, and so do the ControlNets
of the transformer families (Flux.1, SD 3.x, Qwen-Image, Z-Image; see
:mod:`~sdstudio.engine.control.flow_control_files`); Control-LoRAs and style adapters
are recognised and refused as not supported yet. Pickled files (``.pth``, ``.ckpt``) are read only
through the restricted loader, which refuses any that hold code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.models import layouts
from sdstudio.engine.network_files import find_file

CONTROLNET_SUFFIXES = (".safetensors", ".pth", ".ckpt", ".pt", ".bin")
"""The suffixes of ControlNet files (lllyasviel's originals are ``.pth``)."""

SUPPORTED_FAMILIES = ("sd1", "sd2", "sdxl")
"""The UNet families whose ControlNets run (the transformer families' are
:data:`~sdstudio.engine.control.flow_control_files.FLOW_LABELS`)."""

_WIDTHS = {768: ("sd1", "SD 1.x"), 1024: ("sd2", "SD 2.x"), 2048: ("sdxl", "SDXL")}

UNKNOWN = ("unknown", "Unknown")

_HASH_TAIL = re.compile(r"\s*\[[0-9a-fA-F]{6,64}\]\s*$")
"""A1111 names a ControlNet with its short hash: ``control_v11p_sd15_canny [d14c016b]``."""


@dataclass(frozen=True, slots=True)
class ControlNetFile:
    """A ControlNet that can run, and the family of models it guides."""

    path: Path
    family: str
    """``sd1``, ``sd2``, ``sdxl``, or ``unknown`` for a width no family has (checked
    against the model's UNet once loaded)."""
    label: str
    folder: bool
    """A diffusers folder (``config.json`` and its weights) rather than one file."""
    kind: str = "controlnet"
    """``controlnet``, ``union`` (a Union ControlNet) or ``t2i_adapter``."""

    @property
    def name(self) -> str:
        """The name records give it: the file's stem, or the folder's name."""
        return self.path.name if self.folder else self.path.stem


def find_controlnet(value: str, folders: Iterable[Path]) -> Path:
    """The ControlNet ``value`` names: a path, or a file name, stem or folder name in
    ``folders`` (A1111's ``name [hash]`` too). Raises :class:`InvalidRequest` when none
    is found."""
    path = Path(value).expanduser()
    if (path.is_absolute() or len(path.parts) > 1) and path.exists():  # a path, not a name
        return path.resolve()
    folders = [Path(folder) for folder in folders]
    name = _HASH_TAIL.sub("", Path(value.replace("\\", "/")).name)
    stem = Path(name).stem if Path(name).suffix.lower() in CONTROLNET_SUFFIXES else name
    if stem and stem not in (".", ".."):
        for folder in folders:
            candidate = folder / stem
            if (candidate / "config.json").is_file():
                return candidate.resolve()
        found = find_file(stem, folders, CONTROLNET_SUFFIXES)
        if found is not None:
            return found.resolve()
        for folder in folders:
            for candidate in _diffusers_folders(folder):
                if candidate.name.lower() == stem.lower():
                    return candidate.resolve()
    where = ", ".join(str(folder) for folder in folders) or "no ControlNet folders are set"
    raise InvalidRequest(
        f"The ControlNet '{value}' was not found (looked in {where}). Put it in a ControlNet "
        "folder (A1111's models/ControlNet, ComfyUI's models/controlnet) or give its path."
    )


def inspect_controlnet(path: Path) -> ControlNetFile:
    """The ControlNet at ``path`` with its family; :class:`ModelError` for a file that is
    not a ControlNet, or one of a kind that does not run yet."""
    if path.is_dir():
        family, label = folder_family(path)
        return ControlNetFile(path, family, label, True, folder_kind(path))
    if not path.is_file():
        raise ModelError(f"The ControlNet {path} does not exist.")
    shapes = file_shapes(path)
    family, label = controlnet_family(shapes, path.name)
    return ControlNetFile(path, family, label, False, control_kind(list(shapes)))


def file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a ControlNet file (a pickle through the restricted
    loader, which refuses one holding code)."""
    if path.suffix.lower() == ".safetensors":
        try:
            header, data_size = layouts.read_safetensors_layout(path)
            return layouts.header_shapes(header, data_size)
        except (OSError, ValueError) as error:
            raise ModelError(f"The ControlNet {path.name} cannot be read: {error}.") from None
    from sdstudio.engine.models.loading import load_pickle_state_dict

    return {key: tuple(value.shape) for key, value in load_pickle_state_dict(path).items()}


def controlnet_family(shapes: Mapping[str, Any], name: str = "The file") -> tuple[str, str]:
    """``(family, label)`` of a ControlNet from its tensor names and shapes (an entry's
    value is its shape, or a safetensors header entry with a ``shape``).

    Raises :class:`ModelError` for a file that is not a ControlNet or is one of a kind
    that does not run yet.
    """
    keys = [key for key in shapes if key != "__metadata__"]
    if any(k.startswith("ip_adapter.") for k in keys) and any(
        k.startswith("image_proj.") for k in keys
    ):
        raise ModelError(f"{name} is an IP-Adapter; give it as an image prompt, not a ControlNet.")
    from sdstudio.engine.control.flow_control_files import flow_file_family

    flow = flow_file_family(keys, name)
    if flow is not None:
        return flow
    refusal = _unsupported_kind(keys)
    if refusal is not None:
        raise ModelError(f"{name} is {refusal}, which sdstudio cannot run yet; use a ControlNet.")
    kind = control_kind(keys)
    if kind == "t2i_adapter":
        from sdstudio.engine.control import t2i_adapters

        return t2i_adapters.adapter_family(t2i_adapters.adapter_config(shapes, name))
    if kind == "union":
        from sdstudio.engine.control.union import union_family

        union_marks = ("task_embedding", "control_add_embedding.")
        plain_shapes = {k: v for k, v in shapes.items() if not k.startswith(union_marks)}
        return union_family(controlnet_family(plain_shapes, name), name)
    plain = [key.removeprefix("control_model.") for key in keys]
    marks = ("controlnet_cond_embedding.", "input_hint_block.", "zero_convs.")
    if not any(key.startswith(marks) for key in plain):
        raise ModelError(
            f"{name} is not a ControlNet (it has no control-image encoder); choose a "
            "ControlNet model file."
        )
    for key, full in zip(plain, keys, strict=True):
        if "attn2.to_k.weight" in key:
            shape = _shape(shapes[full])
            if len(shape) == 2 and shape[1] in _WIDTHS:
                return _WIDTHS[shape[1]]
            return UNKNOWN  # told against the model's UNet once both are loaded
    if any(key.startswith(("add_embedding.", "label_emb.")) for key in plain):
        return _WIDTHS[2048]
    return _WIDTHS[768]  # no cross-attention and no size conditioning: SD 1.x's layout


def folder_family(folder: Path) -> tuple[str, str]:
    """``(family, label)`` of a diffusers ControlNet folder from its ``config.json``."""
    try:
        config = json.loads((folder / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        raise ModelError(
            f"{folder.name} is not a diffusers ControlNet folder (no readable config.json)."
        ) from None
    if not isinstance(config, dict):
        raise ModelError(f"{folder.name}'s config.json is not a ControlNet's config.")
    kind = str(config.get("_class_name", ""))
    from sdstudio.engine.control.flow_control_files import flow_folder_family

    flow = flow_folder_family(config)
    if flow is not None:
        return flow
    if kind == "T2IAdapter":
        from sdstudio.engine.control.t2i_adapters import adapter_family

        return adapter_family(config)
    if kind == "ControlNetUnionModel":
        from sdstudio.engine.control.union import union_family

        return union_family(_config_family(config), folder.name)
    others = {
        "ControlNetXSAdapter": "a ControlNet-XS",
        "MultiAdapter": "a set of T2I-Adapters saved together (MultiAdapter)",
        "SparseControlNetModel": "an AnimateDiff ControlNet",
    }
    if kind in others:
        raise ModelError(
            f"{folder.name} is {others[kind]}, which sdstudio cannot run yet; use a ControlNet."
        )
    if kind != "ControlNetModel":
        raise ModelError(f"{folder.name} is not a diffusers ControlNet folder ({kind or '?'}).")
    return _config_family(config)


def _config_family(config: dict[str, Any]) -> tuple[str, str]:
    if config.get("addition_embed_type") == "text_time":
        return _WIDTHS[2048]
    width = config.get("cross_attention_dim")
    if isinstance(width, int) and width in _WIDTHS:
        return _WIDTHS[width]
    return UNKNOWN  # told against the model's UNet once both are loaded


def safetensors_family(header: dict[str, Any]) -> tuple[str, str]:
    """The catalog's ``(family, label)`` of a ControlNet file's header, never raising:
    ``("unknown", <what it is>)`` for one that cannot run."""
    try:
        family, label = controlnet_family(header)
        return family, label + KIND_LABELS[control_kind(list(header))]
    except ModelError:
        keys = [key for key in header if key != "__metadata__"]
        kind = _unsupported_kind(keys)
        if kind is None and control_kind(keys) != "controlnet":
            return "unknown", KIND_LABELS[control_kind(keys)].strip()
        return "unknown", kind.split(" ", 1)[1] if kind else "Not a ControlNet"


def control_kind(keys: list[str]) -> str:
    """``t2i_adapter``, ``union`` or ``controlnet``: what a control file's tensor names
    are."""
    from sdstudio.engine.control.t2i_adapters import looks_like_adapter

    if looks_like_adapter(keys):
        return "t2i_adapter"
    if "task_embedding" in keys or any(key.startswith("control_add_embedding.") for key in keys):
        return "union"
    if "controlnet_mode_embedder.weight" in keys:  # a Flux Union ControlNet
        return "union"
    return "controlnet"


def folder_kind(folder: Path) -> str:
    """:func:`control_kind` of a diffusers folder, from its config's class."""
    try:
        config = json.loads((folder / "config.json").read_text("utf-8"))
        kind = config.get("_class_name")
    except (OSError, ValueError, AttributeError):
        return "controlnet"
    if kind == "FluxControlNetModel" and config.get("num_mode"):
        return "union"
    return {"T2IAdapter": "t2i_adapter", "ControlNetUnionModel": "union"}.get(kind, "controlnet")


KIND_LABELS = {"controlnet": "", "union": " Union", "t2i_adapter": " T2I-Adapter"}
"""What the catalog adds to a control file's family label, by kind."""


def _unsupported_kind(keys: list[str]) -> str | None:
    """What a file is when it is a control model that does not run yet."""
    if any("lora" in key.lower() for key in keys):
        return "a Control-LoRA"
    if "style_embedding" in keys:
        return "a T2I style adapter (it reads a CLIP image embedding)"
    if "task_embedding" in keys and any(key.startswith("spatial_feat_mapping") for key in keys):
        return "a CoAdapter fuser"
    if any(key.startswith(("controlnet_x_embedder.", "double_blocks.")) for key in keys):
        return "a Flux ControlNet"
    if any("single_transformer_blocks." in key for key in keys):
        return "a Flux ControlNet"
    if any(key.startswith("pos_embed.") for key in keys) and any(
        key.startswith("transformer_blocks.") for key in keys
    ):
        return "an SD 3 ControlNet"
    return None


def _shape(entry: Any) -> tuple[int, ...]:
    if isinstance(entry, dict):
        entry = entry.get("shape", ())
    return tuple(int(n) for n in entry) if isinstance(entry, (list, tuple)) else ()


def _diffusers_folders(folder: Path) -> list[Path]:
    """Diffusers ControlNet folders directly in ``folder`` or one level down."""
    found = []
    try:
        for child in folder.iterdir():
            if (child / "config.json").is_file():
                found.append(child)
            elif child.is_dir():
                found += [sub for sub in child.iterdir() if (sub / "config.json").is_file()]
    except OSError:
        return found
    return found
