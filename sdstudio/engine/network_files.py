"""Finding LoRA and embedding files by name, as AUTOMATIC1111 does, without loading them."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from sdstudio.engine.models import layouts

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
MAX_EMBEDDING_BYTES = 50 * 1024 * 1024
"""Larger files are not embeddings (a checkpoint that shares a prompt word's name)."""


def find_file(name: str, folders: Iterable[Path], suffixes: tuple[str, ...]) -> Path | None:
    """The first file under ``folders`` whose stem is ``name`` (any case), or ``None``."""
    wanted = name.lower()
    for folder, files in _walk(folders, suffixes):
        for file_name in files:
            if Path(file_name).stem.lower() == wanted:
                return folder / file_name
    return None


def list_files(folders: Iterable[Path], suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Lower-cased stem → file for every file under ``folders`` (the first one wins)."""
    found: dict[str, Path] = {}
    for folder, files in _walk(folders, suffixes):
        for file_name in files:
            found.setdefault(Path(file_name).stem.lower(), folder / file_name)
    return found


def named_in(stem: str, texts: Iterable[str]) -> bool:
    """Whether ``stem`` appears as a whole word in any of ``texts`` (any case)."""
    pattern = re.compile(rf"(?<![\w-]){re.escape(stem)}(?![\w-])", re.IGNORECASE)
    return any(pattern.search(text) for text in texts)


def may_be_embedding(path: Path) -> bool:
    """False for files that are surely something else (a LoRA, a VAE, a checkpoint)."""
    try:
        if path.stat().st_size > MAX_EMBEDDING_BYTES:
            return False
        if path.suffix.lower() == ".safetensors":
            header = layouts.read_safetensors_header(path)
            return layouts.kind_from_header(header, "embedding") == "embedding"
    except (OSError, ValueError):
        return False
    return True


def _walk(folders: Iterable[Path], suffixes: tuple[str, ...]) -> Iterable[tuple[Path, list[str]]]:
    for root in folders:
        for directory, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files = sorted(f for f in filenames if f.lower().endswith(suffixes))
            if files:
                yield Path(directory), files
