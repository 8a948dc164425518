"""CLIP vision encoders for IP-Adapters: finding the one an adapter needs, and loading it
offline.

The encoders users have are Hugging Face ``CLIPVisionModelWithProjection`` weights in
three wrappings: ComfyUI's single files in ``models/clip_vision``
(``CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors``), A1111's ControlNet extension's
``annotator/downloads/clip_vision/clip_h.pth`` and ``clip_g.pth`` (pickles of the same
``vision_model.*`` and ``visual_projection.weight`` tensors, which that extension loads
into ``CLIPVisionModelWithProjection``), and diffusers folders (h94's
``models/image_encoder``: ``config.json`` and weights). A single file carries no config:
it is made from the tensor shapes (layers, widths, patch and image size, projection
width); the attention heads, which shapes do not tell, are those of the released
encoders (16 for ViT-L, ViT-H and ViT-bigG; one per 64 channels otherwise). Nothing is
downloaded. OpenCLIP's own layout (``visual.transformer.resblocks.*``) is refused with a
message.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.engine.control.ip_adapter_files import (
    EMBED_ENCODERS,
    HIDDEN_ENCODERS,
    IPAdapterFile,
)
from sdstudio.engine.errors import InvalidRequest, ModelError, first_line
from sdstudio.engine.fileio import file_key
from sdstudio.engine.models import layouts
from sdstudio.engine.network_files import find_file, list_files

ENCODER_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
_HEADS = {768: 12, 1024: 16, 1280: 16, 1664: 16}
"""Attention heads of the released CLIP vision widths (ViT-B, ViT-L, ViT-H, ViT-bigG)."""
_FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_LABEL_NAMES = {"vit-h": "ViT-H", "vit-bigg": "ViT-bigG", "vit-g": "ViT-bigG", "vit-l": "ViT-L"}


@dataclass(frozen=True, slots=True)
class ClipVisionFile:
    """A CLIP vision encoder and its widths."""

    path: Path
    hidden: int
    embed: int
    """The projected image-embedding width."""

    @property
    def folder(self) -> bool:
        """Whether this is a diffusers/transformers folder."""
        return self.path.is_dir()

    @property
    def name(self) -> str:
        """The file's stem, or the folder's name."""
        return self.path.name if self.folder else self.path.stem

    @property
    def label(self) -> str:
        """``ViT-H``, ``ViT-bigG``, ``ViT-L``, or the file's name for another encoder."""
        by_hidden = HIDDEN_ENCODERS.get(self.hidden, "")
        return by_hidden if by_hidden and EMBED_ENCODERS.get(self.embed) == by_hidden else self.name

    def fits(self, adapter: IPAdapterFile) -> bool:
        """Whether ``adapter`` reads what this encoder makes."""
        return adapter.encoder_width == (self.hidden if adapter.hidden_states else self.embed)


def choose_encoder(adapter: IPAdapterFile, value: str, folders: Iterable[Path]) -> ClipVisionFile:
    """The encoder for ``adapter``: the one ``value`` names (a path or name, or ``ViT-H``,
    ``ViT-bigG``, ``ViT-L``: one of those), else the first in ``folders`` that fits it (an
    InvokeAI adapter's named one first). Raises
    :class:`InvalidRequest` when none is found or the named one does not fit."""
    folders = [Path(folder) for folder in folders]
    label = _LABEL_NAMES.get(value.strip().lower())
    where = ", ".join(str(folder) for folder in folders) or "no CLIP vision folders are set"
    if label is not None:  # an encoder named by what it is, not by its file
        for encoder in list_encoders(folders):
            if encoder.label == label and encoder.fits(adapter):
                return encoder
        raise InvalidRequest(
            f"No {label} CLIP vision encoder that fits the IP-Adapter {adapter.name} (it "
            f"needs {_needed(adapter)}) was found (looked in {where})."
        )
    if value.strip():
        encoder = inspect_encoder(find_encoder(value, folders))
        if not encoder.fits(adapter):
            raise InvalidRequest(
                f"The CLIP vision encoder {encoder.name} ({encoder.label}) does not fit the "
                f"IP-Adapter {adapter.name}, which needs {_needed(adapter)}."
            )
        return encoder
    candidates = list_encoders(folders)
    hint = Path(adapter.encoder_hint.replace("\\", "/")).name.lower()
    candidates.sort(key=lambda e: not hint or e.name.lower() != hint)
    for encoder in candidates:
        if encoder.fits(adapter):
            return encoder
    raise InvalidRequest(
        f"The IP-Adapter {adapter.name} needs {_needed(adapter)}, and none was found (looked "
        f"in {where}). Put it in a CLIP vision folder (ComfyUI's models/clip_vision, A1111's "
        "extensions/sd-webui-controlnet/annotator/downloads/clip_vision) or name it."
    )


def find_encoder(value: str, folders: Iterable[Path]) -> Path:
    """The encoder ``value`` names: a path, or a file stem or folder name in ``folders``."""
    path = Path(value).expanduser()
    if (path.is_absolute() or len(path.parts) > 1) and path.exists():
        return path.resolve()
    folders = list(folders)
    name = Path(value.replace("\\", "/")).name
    stem = Path(name).stem if Path(name).suffix.lower() in ENCODER_SUFFIXES else name
    for folder in _encoder_folders(folders):
        if folder.name.lower() == stem.lower():
            return folder.resolve()
    found = find_file(stem, folders, ENCODER_SUFFIXES) if stem else None
    if found is None:
        where = ", ".join(str(folder) for folder in folders) or "no CLIP vision folders are set"
        raise InvalidRequest(
            f"The CLIP vision encoder '{value}' was not found (looked in {where})."
        )
    return found.resolve()


def list_encoders(folders: Iterable[Path]) -> list[ClipVisionFile]:
    """Every readable CLIP vision encoder in ``folders`` (others left out)."""
    folders = list(folders)
    found: list[ClipVisionFile] = []
    for path in [*_encoder_folders(folders), *list_files(folders, ENCODER_SUFFIXES).values()]:
        if path.is_file() and path.parent in found_paths(found):
            continue
        try:
            found.append(inspect_encoder(path))
        except ModelError:
            continue
    return found


def found_paths(encoders: list[ClipVisionFile]) -> set[Path]:
    """The folders among ``encoders`` (their weight files are not listed again)."""
    return {encoder.path for encoder in encoders if encoder.folder}


def inspect_encoder(path: Path) -> ClipVisionFile:
    """The widths of the encoder at ``path``; :class:`ModelError` for anything else (read
    once while the file is unchanged: a pickle is opened whole)."""
    try:
        stat = path.stat()
    except OSError:
        raise ModelError(f"The CLIP vision encoder {path} does not exist.") from None
    return _inspect(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _inspect(path: Path, _size: int, _mtime: int) -> ClipVisionFile:
    if path.is_dir():
        config = _folder_config(path)
        hidden = int(config.get("hidden_size", 0))
        embed = int(config.get("projection_dim", 0))
        return ClipVisionFile(path, hidden, embed)
    shapes = _shapes(path)
    config = config_from_shapes(shapes, path.name)
    return ClipVisionFile(path, config["hidden_size"], config["projection_dim"])


def config_from_shapes(shapes: dict[str, tuple[int, ...]], name: str) -> dict[str, Any]:
    """A ``CLIPVisionConfig``'s values from an encoder's tensor shapes."""
    if any(k.startswith(("visual.transformer.", "transformer.resblocks.")) for k in shapes):
        raise ModelError(
            f"{name} is a CLIP vision encoder in OpenCLIP's layout, which sdstudio cannot "
            "read; use the Hugging Face layout (ComfyUI's CLIP-ViT-H-14-laion2B-s32B-b79K)."
        )
    patch = shapes.get("vision_model.embeddings.patch_embedding.weight")
    positions = shapes.get("vision_model.embeddings.position_embedding.weight")
    projection = shapes.get("visual_projection.weight")
    fc1 = shapes.get("vision_model.encoder.layers.0.mlp.fc1.weight")
    if not (patch and positions and projection and fc1):
        raise ModelError(
            f"{name} is not a CLIP vision encoder with a projection (no vision_model.* and "
            "visual_projection.weight tensors)."
        )
    layers = 1 + max(
        int(k.split(".")[3]) for k in shapes if k.startswith("vision_model.encoder.layers.")
    )
    hidden = patch[0]
    side = math.isqrt(positions[0] - 1)
    openai_l = hidden == 1024 and layers == 24
    return {
        "hidden_size": hidden,
        "intermediate_size": fc1[0],
        "num_hidden_layers": layers,
        "num_attention_heads": _HEADS.get(hidden, max(1, hidden // 64)),
        "patch_size": patch[-1],
        "image_size": side * patch[-1],
        "projection_dim": projection[0],
        "num_channels": patch[1],
        "hidden_act": "quick_gelu" if openai_l else "gelu",
        "layer_norm_eps": 1e-5,
    }


def load_encoder(encoder: ClipVisionFile, *, dtype: Any, device: str) -> Any:
    """The ``CLIPVisionModelWithProjection`` of ``encoder``, in ``dtype`` on ``device``."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    model: Any
    try:
        if encoder.folder:
            model = CLIPVisionModelWithProjection.from_pretrained(
                encoder.path, local_files_only=True, dtype=dtype
            )
        else:
            tensors = _tensors(encoder.path)
            shapes = {k: tuple(v.shape) for k, v in tensors.items()}
            config = CLIPVisionConfig(**config_from_shapes(shapes, encoder.path.name))
            model = CLIPVisionModelWithProjection(config)
            wanted = model.state_dict()
            missing = [k for k in wanted if k not in tensors]
            if missing:
                raise ModelError(
                    f"The CLIP vision encoder {encoder.name} is incomplete (no {missing[0]})."
                )
            model.load_state_dict({k: tensors[k] for k in wanted})
            model.to(dtype=dtype)
    except (ModelError, InvalidRequest):
        raise
    except MemoryError:
        raise ModelError(f"Not enough memory to load the encoder {encoder.name}.") from None
    except Exception as error:  # transformers raises many types for a bad file
        raise ModelError(
            f"Could not load the CLIP vision encoder {encoder.name}: {first_line(error)}"
        ) from None
    model.to(device)
    model.eval()
    return model


def _needed(adapter: IPAdapterFile) -> str:
    what = "hidden width" if adapter.hidden_states else "image-embedding width"
    name = adapter.encoder or "a CLIP vision encoder"
    return f"{name} (CLIP vision, {what} {adapter.encoder_width})"


def _encoder_folders(folders: Iterable[Path]) -> list[Path]:
    """Encoder folders (a ``config.json`` of a CLIP vision model) in or one level below
    ``folders``, or the folders themselves."""
    found = []
    for folder in folders:
        candidates = [Path(folder)]
        try:
            candidates += [c for c in sorted(Path(folder).iterdir()) if c.is_dir()]
        except OSError:
            continue
        for candidate in candidates:
            try:
                if _folder_config(candidate):
                    found.append(candidate)
            except ModelError:
                continue
    return found


def _folder_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        raise ModelError(f"{folder.name} is not a CLIP vision encoder folder.") from None
    if not isinstance(config, dict) or config.get("model_type") not in ("clip_vision_model",):
        raise ModelError(f"{folder.name} is not a CLIP vision encoder folder.")
    if not any((folder / weights).is_file() for weights in _FOLDER_WEIGHTS):
        raise ModelError(f"The encoder folder {folder.name} has no weights.")
    return config


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    if path.suffix.lower() == ".safetensors":
        try:
            header, data_size = layouts.read_safetensors_layout(path)
            return layouts.header_shapes(header, data_size)
        except (OSError, ValueError) as error:
            raise ModelError(f"The encoder {path.name} cannot be read: {error}.") from None
    return {k: tuple(v.shape) for k, v in _tensors(path).items()}


def _tensors(path: Path) -> dict[str, Any]:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    from sdstudio.engine.models.loading import load_pickle_state_dict

    return load_pickle_state_dict(path)


class EncoderCache:
    """The CLIP vision encoders loaded, by file (unchanged since), dtype and device."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[Any, ...], Any] = {}

    def clear(self) -> None:
        """Free every encoder."""
        self._loaded.clear()

    def keep_only(self, files: list[ClipVisionFile], *, dtype: Any, device: str) -> None:
        """Free the encoders that are not among ``files`` (in ``dtype`` on ``device``)."""
        wanted = {(*file_key(f.path), str(dtype), device) for f in files}
        self._loaded = {k: v for k, v in self._loaded.items() if k in wanted}

    def load(
        self,
        file: ClipVisionFile,
        *,
        dtype: Any,
        device: str,
        on_status: Callable[[str], None] | None = None,
    ) -> Any:
        """The encoder of ``file`` in ``dtype`` on ``device`` (loaded once)."""
        key = (*file_key(file.path), str(dtype), device)
        if key not in self._loaded:
            if on_status:
                on_status(f"Loading the CLIP vision encoder {file.name}…")
            self._loaded[key] = load_encoder(file, dtype=dtype, device=device)
        return self._loaded[key]
