"""Finding a model by its path or by the name the catalog lists it under.

Names are what ``sdstudio-cli models list`` and the app's model picker show:
``org/name`` for a model in the Hugging Face cache, the folder name of a
diffusers model, the file name without extension of a checkpoint. A name is
only ever compared with the catalog's entries, never joined into a path, so a
name read from an image cannot reach a file outside the model folders.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable
from pathlib import Path

from sdstudio.engine.errors import ModelError
from sdstudio.engine.models.catalog import ModelEntry, list_models
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.settings import Settings

HOW_TO_LIST = (
    'See the models sdstudio knows with "sdstudio-cli models list" '
    "(in the app: Models ▸ Manage models)."
)


class UnknownModel(ModelError):
    """No file or folder, and no model of that name, was found."""


class AmbiguousModel(ModelError):
    """Several models carry the name given."""


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
    looked up. Without it only paths are found.
    """

    def __init__(self, entries: Callable[[], Iterable[ModelEntry]] | None = None) -> None:
        self._entries = entries

    @classmethod
    def for_catalog(
        cls, paths: AppPaths, settings: Callable[[], Settings], *, remember: bool = False
    ) -> ModelFinder:
        """A finder over the models of the app's folder, the user's folders and the
        Hugging Face cache. ``settings`` is read at each look-up; with ``remember``
        the catalog is read once (for a command that ends soon)."""

        def entries() -> list[ModelEntry]:
            return list_models(paths, settings()).entries

        return cls(functools.cache(entries) if remember else entries)

    def __call__(self, model: str) -> Path:
        """The path of ``model``, or :class:`ModelError` saying what is wrong."""
        return self.find(model)[0]

    def find(self, model: str) -> tuple[Path, ModelEntry | None]:
        """The path of ``model`` and, when it was found by name, its catalog entry.

        An absolute path (``~`` allowed) is taken as it is; anything else is a
        name looked up in the catalog.
        """
        text = model.strip()
        path: Path | None = None
        with contextlib.suppress(RuntimeError):  # ~user of an unknown user
            path = Path(text).expanduser()
        if path is not None and path.is_absolute():
            with contextlib.suppress(OSError, ValueError):
                if path.exists():
                    return path.resolve(), None
            raise UnknownModel(f"The model {text} does not exist.")
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
