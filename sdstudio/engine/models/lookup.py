"""Finding a model by its path or by the name the catalog lists it under.

Names are what ``sdstudio-cli models list`` and the app's model picker show:
``org/name`` for a model in the Hugging Face cache, the folder name of a
diffusers model, the file name without extension of a checkpoint. A name is
only ever compared with the catalog's entries, never joined into a path, so a
name read from an image cannot reach a file outside the model folders.

A path given by the user (``--model``, the app's model box, the history) is
taken as it is. A path read from an image is another tool's (or another
person's) and is taken only by :meth:`ModelFinder.find_recorded`: when it lies
in a model folder or the Hugging Face cache, or is the path of a model the
catalog lists.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from sdstudio.engine.errors import ModelError
from sdstudio.engine.hashing import HashCache
from sdstudio.engine.models.catalog import ModelEntry, hf_cache_dir, list_models
from sdstudio.engine.models.families import Family
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.settings import Settings

_SHA256_HEX = re.compile(r"[0-9a-f]{10}|[0-9a-f]{64}")
# The long side of the images a family makes at its native size.
_NATIVE_SIDE: dict[str, int] = {Family.SD1: 512, Family.SD2: 768, Family.SDXL: 1024}

HOW_TO_LIST = (
    'See the models sdstudio knows with "sdstudio-cli models list" '
    "(in the app: Models ▸ Manage models)."
)


class UnknownModel(ModelError):
    """No file or folder, and no model of that name, was found."""


class AmbiguousModel(ModelError):
    """Several models carry the name given."""


class ModelOutsideFolders(ModelError):
    """A path read from an image names a model outside the model folders and the cache."""


def model_roots(paths: AppPaths, settings: Settings) -> list[Path]:
    """The folders a path read from an image may name a model in: the app's models
    folder, the user's model folders and the Hugging Face cache."""
    folders = [paths.models_dir, *(Path(f).expanduser() for f in settings.model_folders)]
    return [*folders, hf_cache_dir()]


def is_inside(path: Path, folders: Iterable[Path]) -> bool:
    """Whether ``path`` (links resolved) lies in one of ``folders`` (links resolved)."""
    try:
        resolved = path.resolve()
        return any(resolved.is_relative_to(Path(folder).resolve()) for folder in folders)
    except (OSError, RuntimeError, ValueError):  # a link loop, an odd name
        return False


def hf_repo_id(path: Path) -> str | None:
    """``org/name`` for a snapshot folder of the Hugging Face cache, else ``None``.

    The cache keeps a model in ``models--org--name/snapshots/<revision>``;
    repository ids never hold ``--``, so the folder name gives the id back.
    """
    parts = path.parts
    if len(parts) < 3 or parts[-2] != "snapshots" or not parts[-3].startswith("models--"):
        return None
    repo = parts[-3].removeprefix("models--")
    return repo.replace("--", "/") if repo else None


def display_name(path: Path) -> str:
    """The name users see and the catalog lists: ``org/name`` for the Hugging Face cache,
    the file name without extension, or the folder name."""
    repo = hf_repo_id(path)
    if repo:
        return repo
    return path.stem if path.is_file() else path.name


def sha256_of_recorded(written: str) -> str | None:
    """The SHA-256 in lower case, or its first 10 hex digits (A1111's ``Model hash``,
    Civitai's AutoV2), that a recorded model hash gives; ``None`` for other hashes
    (A1111's old 8-digit hash, Civitai's CRC32)."""
    text = written.strip().casefold()
    return text if _SHA256_HEX.fullmatch(text) else None


def fits_image(entry: ModelEntry, width: int, height: int) -> bool:
    """Whether a checkpoint of ``entry``'s family could have made a ``width`` x ``height``
    image: not an SDXL refiner (it never makes an image by itself), and not an SD 1.x or
    2.x model for an image over three times its native size. Smaller images than native
    are common (SDXL-Turbo makes 512 px), so they rule nothing out."""
    if entry.family == Family.SDXL_REFINER:
        return False
    native = _NATIVE_SIDE.get(entry.family)
    return native is None or entry.family == Family.SDXL or max(width, height) <= native * 3


def _likeliness(entry: ModelEntry, width: int, height: int) -> float:
    """How far ``entry``'s native size is from the image's (families unknown last)."""
    native = _NATIVE_SIDE.get(entry.family)
    return abs(math.log(max(width, height, 1) / native)) if native else math.inf


def named_entries(name: str, entries: Iterable[ModelEntry]) -> list[ModelEntry]:
    """The checkpoints called ``name``: exactly, or else ignoring case."""
    checkpoints = [e for e in entries if e.kind == "checkpoint"]
    exact = [e for e in checkpoints if e.name == name]
    if exact:
        return exact
    folded = name.casefold()
    return [e for e in checkpoints if e.name.casefold() == folded]


class ModelFinder:
    """Finds a model from an absolute path or a name in the catalog.

    ``entries`` gives the catalog's entries; it is called only when a name is
    looked up. Without it only paths are found. ``roots`` gives the folders
    in which :meth:`find_recorded` takes a path.
    """

    def __init__(
        self,
        entries: Callable[[], Iterable[ModelEntry]] | None = None,
        roots: Callable[[], Iterable[Path]] | None = None,
    ) -> None:
        self._entries = entries
        self._roots = roots

    @classmethod
    def for_catalog(
        cls, paths: AppPaths, settings: Callable[[], Settings], *, remember: bool = False
    ) -> ModelFinder:
        """A finder over the models of the app's folder, the user's folders and the
        Hugging Face cache. ``settings`` is read at each look-up; with ``remember``
        the catalog is read once (for a command that ends soon)."""

        def entries() -> list[ModelEntry]:
            return list_models(paths, settings()).entries

        return cls(
            functools.cache(entries) if remember else entries,
            lambda: model_roots(paths, settings()),
        )

    def __call__(self, model: str) -> Path:
        """The path of ``model``, or :class:`ModelError` saying what is wrong."""
        return self.find(model)[0]

    def find(self, model: str) -> tuple[Path, ModelEntry | None]:
        """The path of ``model`` and, when it was found by name, its catalog entry.

        An absolute path (``~`` allowed) is taken as it is; anything else is a
        name looked up in the catalog.
        """
        text = model.strip()
        path = _absolute_path(text)
        if path is not None:
            return path, None
        return self._named(text)

    def find_recorded(self, model: str) -> tuple[Path, ModelEntry | None]:
        """Like :meth:`find`, for a model named by an image's metadata.

        A name is looked up in the catalog; a path is taken only when it lies
        in a model folder or the Hugging Face cache, or is the path of a model
        the catalog lists. Other paths raise :class:`ModelOutsideFolders`.
        """
        text = model.strip()
        path = _absolute_path(text)
        if path is None:
            return self._named(text)
        if is_inside(path, self._roots() if self._roots else ()):
            return path, None
        for entry in self._entries() if self._entries else ():
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                if entry.kind == "checkpoint" and Path(entry.path).resolve() == path:
                    return path, entry
        raise ModelOutsideFolders(
            f"The model {text} is outside sdstudio's model folders and the Hugging Face "
            "cache, so a path read from an image does not load it."
        )

    def find_by_hash(
        self,
        written: str,
        hashes: HashCache,
        *,
        size: tuple[int, int] | None = None,
        on_hashing: Callable[[list[ModelEntry]], None] | None = None,
    ) -> ModelEntry | None:
        """The single-file checkpoint whose SHA-256 matches ``written`` (see
        :func:`sha256_of_recorded`), or ``None``.

        Only checkpoints that could have made an image of ``size`` are looked at
        (:func:`fits_image`). Files whose hash ``hashes`` holds are compared first;
        the others are then read and hashed once, the family nearest the image's
        size first (``on_hashing`` is told which, before), and ``hashes`` keeps
        their hash for the next time. Diffusers folders have no file hash.
        """
        wanted = sha256_of_recorded(written)
        if wanted is None or self._entries is None:
            return None
        candidates = [
            entry
            for entry in self._entries()
            if entry.kind == "checkpoint"
            and entry.format != "diffusers"
            and entry.family != Family.SDXL_REFINER
            and (size is None or fits_image(entry, *size))
        ]
        unhashed = []
        for entry in candidates:
            with contextlib.suppress(OSError):
                digest = hashes.cached_sha256(Path(entry.path))
                if digest is None:
                    unhashed.append(entry)
                elif digest.startswith(wanted):
                    return entry
        if size is not None:
            unhashed.sort(key=lambda entry: _likeliness(entry, *size))
        if unhashed and on_hashing is not None:
            on_hashing(unhashed)
        for entry in unhashed:
            with contextlib.suppress(OSError):
                if hashes.sha256(Path(entry.path)).startswith(wanted):
                    return entry
        return None

    def _named(self, text: str) -> tuple[Path, ModelEntry | None]:
        matches = named_entries(text, self._entries() if self._entries else ())
        if len(matches) == 1:
            return Path(matches[0].path).resolve(), matches[0]
        if matches:
            found = "; ".join(f"{e.path} ({e.source})" for e in matches)
            raise AmbiguousModel(
                f"{len(matches)} models are named {text!r}: {found}. "
                "Give the path of the one to use instead of the name."
            )
        raise UnknownModel(
            f"No model named {text!r} was found, and it is not the path of a file or folder. "
            f"{HOW_TO_LIST}"
        )


def _absolute_path(text: str) -> Path | None:
    """The existing file or folder an absolute path (``~`` allowed) names, links
    resolved; ``None`` for a name; :class:`UnknownModel` for a path that is not there."""
    path: Path | None = None
    with contextlib.suppress(RuntimeError):  # ~user of an unknown user
        path = Path(text).expanduser()
    if path is None or not path.is_absolute():
        return None
    with contextlib.suppress(OSError, RuntimeError, ValueError):
        if path.exists():
            return path.resolve()
    raise UnknownModel(f"The model {text} does not exist.")
