"""Finding the models a user already has, where they are, without copying or loading them.

Sources: the app's own models folder, folders the user added (plain folders of
checkpoints or the roots of AUTOMATIC1111/Forge/SD.Next, ComfyUI and InvokeAI),
and the Hugging Face cache. Listing reads file headers at most, never tensors,
each file's header once per scan and only up to the limits in :mod:`layouts`,
and never fails on an unreadable file or folder: it is skipped and reported.
What each file or folder is (its kind, family and variant) is told by
:mod:`~sdstudio.engine.models.identification`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sdstudio.engine.models import layouts
from sdstudio.engine.models.identification import (
    controlnet_folder_family,
    family_of,
    file_family,
    folder_variant,
    image_prompt_folder,
    ip_adapter_kind,
    is_controlnet_folder,
    part_identity,
)
from sdstudio.engine.parts import identify_header, identify_part_quietly
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.settings import Settings

log = logging.getLogger(__name__)

FEW_STEP_WORDS = ("turbo", "lcm", "lightning", "hyper")
"""Words in a model's name that mark a model made for a few steps."""


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model found on disk."""

    name: str
    kind: str
    """``checkpoint``, ``lora``, ``hypernetwork``, ``embedding``, ``vae``, ``text_encoder``,
    ``upscaler``, ``detector`` (the detailer's face detectors), ``controlnet``, ``ipadapter``
    (IP-Adapters) or ``clip_vision`` (the CLIP vision encoders IP-Adapters read)."""
    format: str
    """``diffusers``, ``safetensors``, ``gguf``, ``ckpt``, ``pt``, ``pth`` (upscalers),
    ``onnx`` (detectors) or ``bin``."""
    path: str
    size_bytes: int
    source: str
    """``app``, ``folder``, ``a1111``, ``comfyui``, ``invokeai`` or ``huggingface``."""
    family: str = "unknown"
    family_label: str = "Unknown"
    flags: tuple[str, ...] = ()
    """``few-step`` for turbo, LCM, lightning and hyper models; ``transformer`` for a
    transformer kept alone (its text encoders and VAE are separate files), ``all-in-one``
    for a flow model's checkpoint that holds them; ``fp8`` or ``gguf`` for quantized
    weights."""
    variant: str = ""
    """Which model of its family, where the files tell (``dev``, ``schnell``, ``Large``)."""

    @property
    def few_step(self) -> bool:
        """Whether the model is made for a few steps (and low guidance)."""
        return "few-step" in self.flags

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        data = asdict(self)
        data["flags"] = list(self.flags)
        return data


@dataclass(slots=True)
class Catalog:
    """The models found, and what was skipped with the reason."""

    entries: list[ModelEntry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def extend(self, other: Catalog) -> None:
        """Add another catalog's entries and skips."""
        self.entries.extend(other.entries)
        self.skipped.extend(other.skipped)


def list_models(
    paths: AppPaths, settings: Settings, *, hf_cache: Path | None = None, with_hf: bool = True
) -> Catalog:
    """Every model from the app's folder, the user's folders and the Hugging Face cache."""
    catalog = Catalog()
    seen_files: set[Path] = set()
    if paths.models_dir.is_dir():
        catalog.extend(scan_folder(paths.models_dir, source="app", seen=seen_files))
    for folder in settings.model_folders:
        root = Path(folder).expanduser()
        if not root.is_dir():
            catalog.skipped.append((str(root), "folder not found"))
            continue
        catalog.extend(scan_folder(root, seen=seen_files))
    if with_hf:
        catalog.extend(scan_hf_cache(hf_cache))
    seen: set[str] = set()
    unique = []
    for entry in catalog.entries:
        if entry.path not in seen:
            seen.add(entry.path)
            unique.append(entry)
    catalog.entries = unique
    return catalog


def network_folders(paths: AppPaths, settings: Settings, kind: str) -> list[Path]:
    """The folders to search for models of ``kind`` (``lora``, ``hypernetwork``, ``embedding``,
    ``vae``, ``text_encoder``, ``upscaler``, ``detector``, ``controlnet``, ``ipadapter`` or
    ``clip_vision``).

    A tool's root gives its own folders of that kind (A1111's IP-Adapters are in its
    ControlNet folders); the app's models folder and plain user folders are given whole
    (their files are of mixed kinds).
    """
    roots = [paths.models_dir, *(Path(f).expanduser() for f in settings.model_folders)]
    found: list[Path] = []
    for root in roots:
        if not root.is_dir():
            continue
        tool = layouts.detect_tool(root)
        if tool is None:
            found.append(root)
        else:
            shared = tool == "a1111" and kind == "ipadapter"
            found += [
                folder
                for folder, k in layouts.model_folders(root, tool)
                if k == kind or (shared and k == "controlnet")
            ]
    return list(dict.fromkeys(found))


def scan_folder(root: Path, *, source: str | None = None, seen: set[Path] | None = None) -> Catalog:
    """The models under ``root``: a tool's root (detected) or a plain folder of models.

    ``source`` overrides the detected source (``folder`` for a plain folder).
    Files in ``seen`` (listed by an earlier scan of an overlapping folder) are not
    read again; the files found are added to it.
    """
    tool = layouts.detect_tool(root)
    catalog = Catalog()
    seen = set() if seen is None else seen
    for folder, kind in layouts.model_folders(root, tool):
        catalog.extend(_scan_tree(folder, kind, source or tool or "folder", seen))
    return catalog


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache in effect (``HF_HUB_CACHE``, ``HF_HOME``, or the default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def scan_hf_cache(cache_dir: Path | None = None) -> Catalog:
    """Diffusers models in the Hugging Face cache (newest revision with a ``model_index.json``)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    catalog = Catalog()
    directory = cache_dir or hf_cache_dir()
    if not directory.is_dir():
        return catalog
    try:
        info = scan_cache_dir(directory)
    except (CacheNotFound, OSError, ValueError) as error:
        log.warning("Cannot scan the Hugging Face cache %s: %s", directory, error)
        catalog.skipped.append((str(directory), f"unreadable cache: {error}"))
        return catalog
    for warning in info.warnings:
        catalog.skipped.append((str(directory), str(warning)))
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        usable = [r for r in repo.revisions if (r.snapshot_path / "model_index.json").is_file()]
        if not usable:
            continue
        newest = max(usable, key=lambda r: r.last_modified)
        catalog.entries.append(
            _entry(
                repo.repo_id, "checkpoint", "diffusers", newest.snapshot_path, "huggingface",
                size=newest.size_on_disk,
            )
        )  # fmt: skip
    return catalog


def add_model_folder(settings: Settings, folder: str | Path) -> Settings:
    """A copy of ``settings`` with ``folder`` (made absolute) added to the model folders."""
    from sdstudio.engine.errors import InvalidRequest

    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise InvalidRequest(f"The folder {path} does not exist.")
    if str(path) in settings.model_folders:
        return settings
    return replace(settings, model_folders=(*settings.model_folders, str(path)))


def remove_model_folder(settings: Settings, folder: str | Path) -> Settings:
    """A copy of ``settings`` without ``folder``; :class:`InvalidRequest` if it was not added."""
    from sdstudio.engine.errors import InvalidRequest

    wanted = {str(folder), str(Path(folder).expanduser().resolve())}
    kept = tuple(f for f in settings.model_folders if f not in wanted)
    if len(kept) == len(settings.model_folders):
        raise InvalidRequest(f"{folder} is not one of the model folders.")
    return replace(settings, model_folders=kept)


def _scan_tree(folder: Path, kind: str, source: str, seen: set[Path]) -> Catalog:
    """Model files and diffusers folders under ``folder``, skipping what cannot be read."""
    catalog = Catalog()

    def on_error(error: OSError) -> None:
        catalog.skipped.append((str(error.filename or folder), f"unreadable: {error.strerror}"))

    if (folder / "model_index.json").is_file():
        catalog.entries.append(_entry(folder.name, kind, "diffusers", folder, source))
        return catalog
    for directory, dirnames, filenames in os.walk(folder, onerror=on_error):
        base = Path(directory)
        for name in sorted(dirnames):
            sub = base / name
            if name.startswith(".") or name == "annotators":  # preprocessors' networks
                dirnames.remove(name)
            elif (sub / "model_index.json").is_file():
                dirnames.remove(name)
                catalog.entries.append(_entry(name, kind, "diffusers", sub, source))
            elif layouts.kind_from_path(sub / "x", folder, kind) == "tiny_vae":
                dirnames.remove(name)  # a tiny VAE folder or download, or nothing to list
                catalog.entries += _tiny_vae_folder(sub, source)
            elif (sub / "config.json").is_file() and is_controlnet_folder(sub, folder, kind):
                dirnames.remove(name)  # a diffusers ControlNet: its config and weights
                family = controlnet_folder_family(sub)
                catalog.entries.append(_entry(name, kind, "diffusers", sub, source, family=family))
            elif (found := image_prompt_folder(sub, folder, kind, source)) is not None:
                dirnames.remove(name)  # an InvokeAI IP-Adapter or a CLIP vision encoder
                found_kind, family = found
                catalog.entries.append(
                    _entry(name, found_kind, "diffusers", sub, source, family=family)
                )
        for name in sorted(filenames):
            path = base / name
            if path not in seen:
                seen.add(path)
                _add_file(catalog, path, folder, kind, source)
    return catalog


def _add_file(catalog: Catalog, path: Path, root: Path, kind: str, source: str) -> None:
    """Add one model file; a plain folder's kinds are told by sub-folder names and headers.

    A safetensors header is read once here and gives the kind and the family.
    """
    plain = source in ("app", "folder")
    if plain:
        kind = layouts.kind_from_path(path, root, kind)
    if kind == "tiny_vae":
        _add_tiny_vae(catalog, path, source)
        return
    formats = layouts.UPSCALER_FORMATS if kind == "upscaler" else layouts.FORMATS
    formats = layouts.DETECTOR_FORMATS if kind == "detector" else formats
    image_prompt_kinds = ("controlnet", "ipadapter", "clip_vision")
    formats = layouts.CONTROLNET_FORMATS if kind in image_prompt_kinds else formats
    file_format = formats.get(path.suffix.lower())
    if file_format is None:
        return
    family = ("unknown", "Unknown")
    part = None
    try:
        size = path.stat().st_size
        if file_format == "safetensors":
            header, data_size = layouts.read_safetensors_layout(path)
            if plain and kind == "checkpoint":
                kind = layouts.kind_from_header(header, kind)
            kind = ip_adapter_kind(path, kind, header)
            family = file_family(path, kind, header, data_size)
        else:
            kind = ip_adapter_kind(path, kind, None)
        unknown = family[0] == "unknown" and kind not in ("upscaler", *image_prompt_kinds)
        if file_format == "safetensors" and unknown:
            part = part_identity(path, identify_header(header, data_size))
        elif file_format == "gguf":
            part = part_identity(path, identify_part_quietly(path))
        if part is not None:
            kind, family, part_flags, variant = part
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        log.warning("Skipping model file %s: %s", path, reason)
        catalog.skipped.append((str(path), reason))
        return
    entry = _entry(path.stem, kind, file_format, path, source, size=size, family=family)
    if part is not None:
        entry = replace(entry, flags=(*entry.flags, *part_flags), variant=variant)
    catalog.entries.append(entry)


def _tiny_vae_folder(sub: Path, source: str) -> list[ModelEntry]:
    """A tiny VAE's diffusers folder (or its download) as an entry."""
    from sdstudio.engine.tiny_vae_files import catalog_family, diffusers_folder

    family = catalog_family(sub.name)
    found = diffusers_folder(sub) if family is not None else None
    if found is None or family is None:
        return []
    return [_entry(sub.name, "tiny_vae", "diffusers", found, source, family=family)]


def _add_tiny_vae(catalog: Catalog, path: Path, source: str) -> None:
    """A tiny VAE decoder file (its encoder, and A1111's own approximation, are not listed)."""
    from sdstudio.engine.tiny_vae_files import SUFFIXES, catalog_family

    family = catalog_family(path.name)
    if family is None or path.suffix.lower() not in SUFFIXES:
        return
    file_format = path.suffix.lower().lstrip(".")
    size = path.stat().st_size
    catalog.entries.append(
        _entry(path.stem, "tiny_vae", file_format, path, source, size=size, family=family)
    )


def _entry(
    name: str,
    kind: str,
    file_format: str,
    path: Path,
    source: str,
    *,
    size: int | None = None,
    family: tuple[str, str] | None = None,
) -> ModelEntry:
    """An entry; a folder's family is detected here, a file's is given."""
    if family is None:
        family = family_of(path) if kind != "vae" else ("unknown", "Unknown")
    flags = ("few-step",) if _few_step(name) else ()
    variant = folder_variant(path) if file_format == "diffusers" else ""
    return ModelEntry(
        name=name,
        kind=kind,
        format=file_format,
        path=str(path),
        size_bytes=_folder_size(path) if size is None else size,
        source=source,
        family=family[0],
        family_label=family[1],
        flags=flags,
        variant=variant,
    )


def _few_step(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in FEW_STEP_WORDS)


def _folder_size(path: Path) -> int:
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(directory) / name).stat().st_size
            except OSError:
                continue
    return total


def describe(entries: Iterable[ModelEntry]) -> list[dict[str, Any]]:
    """JSON-ready dictionaries of entries."""
    return [entry.to_dict() for entry in entries]
