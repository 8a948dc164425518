"""IP-Adapter files: finding one by path or name, and telling from its tensors what it is.

Users keep IP-Adapters where their tools look for them: AUTOMATIC1111 and Forge beside
the ControlNets (``models/ControlNet``, ``extensions/sd-webui-controlnet/models``),
ComfyUI in ``models/ipadapter``, InvokeAI as a folder ``models/<base>/ip_adapter/<name>/``
holding ``ip_adapter.bin`` (or ``.safetensors``) and ``image_encoder.txt``, sdstudio in
its models folder's ``ipadapter`` sub-folder (the catalog kind ``ipadapter``).

An IP-Adapter has two parts: ``image_proj.*`` turns a CLIP vision encoder's output into
a few extra tokens, and ``ip_adapter.<n>.to_k_ip/to_v_ip`` are the UNet's extra
cross-attention keys and values for them. Their input width is the model's text width
(768 for SD 1.x, 2048 for SDXL). The projection tells the kind and the encoder it reads:
a plain adapter (``image_proj.proj.weight``) reads the encoder's projected image
embedding (1024 wide for ViT-H, 1280 for ViT-bigG, 768 for ViT-L); a "plus" adapter
(a Resampler: ``image_proj.latents``, ``proj_in``) and a "full" one (``proj.0`` to
``proj.3``) read its penultimate hidden states (1280, 1664, 1024 wide). FaceID adapters
read face embeddings made by insightface, which sdstudio does not ship: they are
recognised and refused. XLabs' Flux.1 IP-Adapters (``ip_adapter_proj_model.*``,
``double_blocks.<n>.processor.ip_adapter_double_stream_k_proj``) are told apart here and
described by :mod:`~sdstudio.engine.control.flux_ip_adapter_files`. Safetensors files are
read from their header only; pickles (``.bin``, ``.pth``) only through
``torch.load(weights_only=True)``, which refuses any that hold code.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.models import layouts
from sdstudio.engine.network_files import find_file, list_files

IP_ADAPTER_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")
FOLDER_WEIGHTS = ("ip_adapter.safetensors", "ip_adapter.bin")
"""The weight files of a diffusers-style (InvokeAI) IP-Adapter folder."""

_FAMILIES = {768: ("sd1", "SD 1.x"), 1024: ("sd2", "SD 2.x"), 2048: ("sdxl", "SDXL")}
EMBED_ENCODERS = {1024: "ViT-H", 1280: "ViT-bigG", 768: "ViT-L"}
"""An encoder's projected image-embedding width, and the encoder that has it."""
HIDDEN_ENCODERS = {1280: "ViT-H", 1664: "ViT-bigG", 1024: "ViT-L"}
"""An encoder's hidden width, and the encoder that has it."""

_HASH_TAIL = re.compile(r"\s*\[[0-9a-fA-F]{6,64}\]\s*$")


@dataclass(frozen=True, slots=True)
class IPAdapterFile:
    """An IP-Adapter that can run, and what it needs."""

    path: Path
    """The weights file, or an InvokeAI folder."""
    family: str
    """``sd1``, ``sd2``, ``sdxl``, ``flux1``, or ``unknown`` (told against the model's UNet)."""
    label: str
    kind: str
    """``plain``, ``light``, ``plus`` or ``full``."""
    cross_dim: int
    hidden_states: bool
    """Whether it reads the encoder's penultimate hidden states (else its image embeds)."""
    encoder_width: int
    """The width of what it reads from the encoder."""
    encoder_hint: str = ""
    """The encoder an InvokeAI folder's ``image_encoder.txt`` names."""

    @property
    def folder(self) -> bool:
        """Whether this is a folder (InvokeAI's layout) rather than one file."""
        return self.path.is_dir()

    @property
    def name(self) -> str:
        """The name records give it: the file's stem, or the folder's name."""
        return self.path.name if self.folder else self.path.stem

    @property
    def encoder(self) -> str:
        """``ViT-H``, ``ViT-bigG``, ``ViT-L``, or empty for a width none of them has."""
        table = HIDDEN_ENCODERS if self.hidden_states else EMBED_ENCODERS
        return table.get(self.encoder_width, "")

    def weights(self) -> Path:
        """The file holding the weights."""
        return self.path if not self.folder else _folder_weights(self.path)


def find_ip_adapter(value: str, folders: Iterable[Path]) -> Path:
    """The IP-Adapter ``value`` names: a path, or a file stem or folder name in ``folders``
    (A1111's ``name [hash]`` too). Raises :class:`InvalidRequest` when none is found."""
    path = Path(value).expanduser()
    if (path.is_absolute() or len(path.parts) > 1) and path.exists():
        return path.resolve()
    folders = [Path(folder) for folder in folders]
    name = _HASH_TAIL.sub("", Path(value.replace("\\", "/")).name)
    stem = Path(name).stem if Path(name).suffix.lower() in IP_ADAPTER_SUFFIXES else name
    if stem and stem not in (".", ".."):
        for folder in ip_adapter_folders(folders):
            if folder.name.lower() == stem.lower():
                return folder.resolve()
        found = find_file(stem, folders, IP_ADAPTER_SUFFIXES)
        if found is not None:
            return found.resolve()
    where = ", ".join(str(folder) for folder in folders) or "no IP-Adapter folders are set"
    raise InvalidRequest(
        f"The IP-Adapter '{value}' was not found (looked in {where}). Put it in an IP-Adapter "
        "folder (ComfyUI's models/ipadapter, A1111's models/ControlNet) or give its path."
    )


def ip_adapter_folders(folders: Iterable[Path]) -> list[Path]:
    """InvokeAI's IP-Adapter folders directly in ``folders`` or one level down."""
    found = []
    for folder in folders:
        try:
            children = [c for c in sorted(Path(folder).iterdir()) if c.is_dir()]
        except OSError:
            continue
        for child in children:
            if any((child / weights).is_file() for weights in FOLDER_WEIGHTS):
                found.append(child)
    return found


def list_ip_adapters(folders: Iterable[Path]) -> list[IPAdapterFile]:
    """Every IP-Adapter file and folder in ``folders`` (files that are something else, such
    as the ControlNets beside them, and unreadable ones are left out)."""
    folders = list(folders)
    found: list[IPAdapterFile] = []
    candidates = [*ip_adapter_folders(folders), *list_files(folders, IP_ADAPTER_SUFFIXES).values()]
    for path in candidates:
        if path.is_file() and path.name in FOLDER_WEIGHTS:
            continue  # a folder's weights, listed as the folder
        if path.is_file() and path.suffix.lower() != ".safetensors" and not named_ip_adapter(path):
            continue  # a pickle is read only when its name says it is one
        try:
            found.append(inspect_ip_adapter(path))
        except ModelError:
            continue
    return found


def named_ip_adapter(path: Path) -> bool:
    """Whether a file's name says it is an IP-Adapter (for pickles, whose tensors are not
    read while listing)."""
    lowered = path.name.lower().replace("-", "_")
    return "ip_adapter" in lowered or "ipadapter" in lowered


def inspect_ip_adapter(path: Path) -> IPAdapterFile:
    """The IP-Adapter at ``path`` and what it needs; :class:`ModelError` for a file that is
    not an IP-Adapter or one that cannot run (FaceID, other model families).

    A file is read once while it is unchanged (a pickle is read whole to see its
    tensors, and a request looks its adapters up more than once)."""
    try:
        stat = (_folder_weights(path) if path.is_dir() else path).stat()
    except OSError:
        raise ModelError(f"The IP-Adapter {path} does not exist.") from None
    return _inspect(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _inspect(path: Path, _size: int, _mtime: int) -> IPAdapterFile:
    if path.is_dir():
        weights = _folder_weights(path)
        hint = ""
        if (path / "image_encoder.txt").is_file():
            hint = (path / "image_encoder.txt").read_text("utf-8", errors="replace").strip()
        return _described(path, file_shapes(weights), path.name, hint)
    if not path.is_file():
        raise ModelError(f"The IP-Adapter {path} does not exist.")
    return _described(path, file_shapes(path), path.name, "")


def file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names (flattened: ``image_proj.proj.weight``) and shapes of an IP-Adapter."""
    if path.suffix.lower() == ".safetensors":
        try:
            header, data_size = layouts.read_safetensors_layout(path)
            return layouts.header_shapes(header, data_size)
        except (OSError, ValueError) as error:
            raise ModelError(f"The IP-Adapter {path.name} cannot be read: {error}.") from None
    return {key: tuple(value.shape) for key, value in load_state_dict(path).items()}


def load_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of an IP-Adapter file, flattened to ``image_proj.*`` and
    ``ip_adapter.*`` names (h94's pickles nest them in two dictionaries)."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (OSError, SafetensorError) as error:
            raise ModelError(f"The IP-Adapter {path.name} cannot be read: {error}.") from None
    import pickle

    import torch

    from sdstudio.engine.models.loading import pickle_refusal

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise pickle_refusal(path) from None
    except (OSError, EOFError, RuntimeError, ValueError):
        raise ModelError(
            f"The IP-Adapter {path.name} could not be read: it is truncated or damaged."
        ) from None
    if not isinstance(data, dict):
        raise ModelError(f"{path.name} is not an IP-Adapter (it holds no weights).")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items() if isinstance(v, torch.Tensor)})
        elif isinstance(value, torch.Tensor):
            flat[str(key)] = value
    return flat


def split_state_dict(tensors: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The two parts diffusers' IP-Adapter loader takes (``image_proj``, ``ip_adapter``)."""
    parts: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in tensors.items():
        head, _, rest = key.partition(".")
        if head in parts:
            parts[head][rest] = value
    return parts


def is_ip_adapter(keys: Iterable[str]) -> bool:
    """Whether tensor names are an IP-Adapter's (its two parts; XLabs' Flux layout too)."""
    keys = list(keys)
    from sdstudio.engine.control.flux_ip_adapter_files import is_flux_ip_adapter

    if is_flux_ip_adapter(keys):
        return True
    return any(k.startswith("image_proj.") for k in keys) and any(
        k.startswith("ip_adapter.") for k in keys
    )


def header_family(header: Mapping[str, Any]) -> tuple[str, str]:
    """The catalog's ``(family, label)`` of an IP-Adapter header, never raising."""
    shapes = {k: _shape(v) for k, v in header.items() if k != "__metadata__"}
    try:
        found = _described(Path("x"), shapes, "The file", "")
    except ModelError:
        return "unknown", "Unknown"
    return found.family, found.label


def _described(
    path: Path, shapes: Mapping[str, tuple[int, ...]], name: str, hint: str
) -> IPAdapterFile:
    keys = list(shapes)
    faceid = any(k.startswith("image_proj.perceiver_resampler.") or "lora" in k for k in keys)
    faceid = faceid or (
        "image_proj.norm.weight" in shapes and "image_proj.proj.weight" not in shapes
    )
    if faceid or "faceid" in name.lower().replace("-", "").replace("_", ""):
        raise ModelError(
            f"{name} is an IP-Adapter FaceID model: it reads face embeddings made by "
            "insightface, which sdstudio does not have. Use a plain or plus IP-Adapter."
        )
    if any(k.startswith(("ip_adapter_proj_model.", "double_blocks.")) for k in keys):
        from sdstudio.engine.control import flux_ip_adapter_files

        return flux_ip_adapter_files.describe(path, shapes, name, hint)
    widths = [s[1] for k, s in shapes.items() if k.endswith("to_k_ip.weight") and len(s) == 2]
    if not is_ip_adapter(keys) or not widths:
        raise ModelError(
            f"{name} is not an IP-Adapter (it has no image projection and IP attention "
            "weights); choose an IP-Adapter model file."
        )
    family, label = _FAMILIES.get(widths[0], ("unknown", "Unknown"))
    if "image_proj.proj.weight" in shapes:
        kind = "light" if "light" in name.lower() else "plain"
        hidden, width = False, shapes["image_proj.proj.weight"][-1]
    elif "image_proj.latents" in shapes and "image_proj.proj_in.weight" in shapes:
        kind, hidden, width = "plus", True, shapes["image_proj.proj_in.weight"][1]
    elif "image_proj.proj.3.weight" in shapes and "image_proj.proj.0.weight" in shapes:
        kind, hidden, width = "full", True, shapes["image_proj.proj.0.weight"][-1]
    else:
        raise ModelError(f"{name} is an IP-Adapter of a kind sdstudio cannot run yet.")
    return IPAdapterFile(path, family, label, kind, widths[0], hidden, width, hint)


def _folder_weights(folder: Path) -> Path:
    for weights in FOLDER_WEIGHTS:
        if (folder / weights).is_file():
            return folder / weights
    raise ModelError(
        f"{folder.name} is not an IP-Adapter folder (it has no ip_adapter.bin or "
        "ip_adapter.safetensors)."
    )


def _shape(entry: Any) -> tuple[int, ...]:
    if isinstance(entry, dict):
        entry = entry.get("shape", ())
    return tuple(int(n) for n in entry) if isinstance(entry, (list, tuple)) else ()


def catalog_kind(path: Path, header: Mapping[str, Any] | None) -> str:
    """The catalog kind of a file among ControlNets: ``ipadapter`` for an IP-Adapter (told
    by its tensor names, or a pickle, whose tensors are not read while listing, by its
    name), else ``controlnet``."""
    if header is not None:
        return "ipadapter" if is_ip_adapter(header) else "controlnet"
    return "ipadapter" if named_ip_adapter(path) else "controlnet"


def folder_entry(folder: Path, kind: str) -> tuple[str, tuple[str, str]] | None:
    """The catalog ``(kind, (family, label))`` of a folder where IP-Adapters (``kind``
    ``ipadapter`` or ``controlnet``) or encoders (``clip_vision``) are kept: an InvokeAI
    IP-Adapter folder or a CLIP vision encoder folder; ``None`` for anything else."""
    if kind in ("ipadapter", "controlnet") and any((folder / w).is_file() for w in FOLDER_WEIGHTS):
        try:
            found = inspect_ip_adapter(folder)
        except ModelError as error:
            return "ipadapter", ("unknown", str(error))
        return "ipadapter", (found.family, found.label)
    if kind == "clip_vision" and (folder / "config.json").is_file():
        return "clip_vision", ("unknown", "Unknown")
    return None
