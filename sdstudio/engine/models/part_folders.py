"""Where the part files of models kept as separate files are, and what each one is.

The search is bounded (:data:`MAX_DEPTH` folders deep) and each file's header is read
once while it is unchanged: the folders are searched for every generation.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from sdstudio.engine.parts import PART_SUFFIXES, Part, identify_part_quietly

TEXT_ENCODER_FOLDERS = ("text_encoders", "clip", "text_encoder")
"""Where ComfyUI (``text_encoders``, older ``clip``) and Forge (``text_encoder``) keep them."""
VAE_FOLDERS = ("vae", "VAE")
MAX_DEPTH = 3
"""How deep part folders are searched (ComfyUI allows sub-folders)."""


def tool_part_folders(model: Path, names: Sequence[str]) -> list[Path]:
    """The folders called ``names`` beside the ``models`` folder (or the folder that
    holds the model's folder) ``model`` lies in: its own tool's part folders."""
    found: list[Path] = []
    for ancestor in list(model.parents)[: MAX_DEPTH + 1]:
        for name in names:
            folder = ancestor / name
            if folder.is_dir() and folder not in found:
                found.append(folder)
        if ancestor.name.lower() == "models":
            break
    return found


def part_files(folders: Iterable[Path]) -> list[Path]:
    """The safetensors and GGUF files in ``folders`` (sub-folders too), sorted by name."""
    found: dict[Path, None] = {}
    for folder in folders:
        base_depth = len(folder.parts)
        for root, dirs, files in os.walk(folder, onerror=lambda error: None):
            if len(Path(root).parts) - base_depth >= MAX_DEPTH:
                dirs[:] = []
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.lower().endswith(PART_SUFFIXES):
                    found[Path(root) / name] = None
    return sorted(found, key=lambda path: (path.name.lower(), str(path)))


def identify(path: Path) -> Part | None:
    """:func:`~sdstudio.engine.parts.identify_part` of a file, remembered while the file
    is unchanged (folders are searched for every generation)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _identify_cached(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=512)
def _identify_cached(path: str, size: int, mtime: int) -> Part | None:
    return identify_part_quietly(Path(path))


def file_names(values: Sequence[str]) -> tuple[str, ...]:
    """Part names from a record that is not sdstudio's own, as file names only: such a
    record may name any file on the computer, so its parts are looked up by name in the
    part folders."""
    return tuple(name for value in values if (name := Path(value).name))
