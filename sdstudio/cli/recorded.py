"""The model and VAE a re-run uses when they come from a record or an image.

A record from sdstudio's history is trusted; settings read from any other image
are another tool's or another person's, so their model and VAE are looked for
only in the model and VAE folders and the Hugging Face cache, by path, by name
and, for a checkpoint, by the hash of its file.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.models.lookup import (
    HOW_TO_LIST,
    AmbiguousModel,
    ModelFinder,
    ModelOutsideFolders,
)

if TYPE_CHECKING:
    from sdstudio.cli import Context
    from sdstudio.engine.models.catalog import ModelEntry


@dataclass(frozen=True, slots=True)
class Recorded:
    """The model as a record or image gives it, and the size of the image it made."""

    model: str
    name: str
    hash: str
    width: int
    height: int


def recorded_model(
    recorded: Recorded, source: str, finder: ModelFinder, context: Context, trusted: bool
) -> str:
    """The recorded model, or the model of the recorded name when its path is gone
    (a Hugging Face model updated since, say), or else the checkpoint whose file has
    the recorded hash. Unless ``trusted``, a path is taken only inside the model
    folders (:meth:`ModelFinder.find_recorded`)."""
    model, model_name = recorded.model, recorded.name
    outside: ModelOutsideFolders | None = None
    try:
        finder.find(model) if trusted else finder.find_recorded(model)
        return model
    except AmbiguousModel as error:
        raise InvalidRequest(f"{error} Re-run with --model PATH.") from None
    except ModelOutsideFolders as error:
        outside = error
    except ModelError:
        pass
    if model_name and model_name != model:
        # A name read from the image: looked up in the catalog only.
        with contextlib.suppress(ModelError):
            path, entry = finder.find_recorded(model_name)
            found = entry.name if entry is not None else str(path)
            gone = "is not used" if outside is not None else "is gone"
            message = f"The model {model} {gone}; using {found}, which has its name."
            context.reporter.event("notice", message, message=message)
            return found
    if recorded.hash and not trusted:
        by_hash = _model_by_hash(recorded, finder, context)
        if by_hash:
            return by_hash
    if outside is not None:
        raise InvalidRequest(f"{outside} Give the model to use with --model PATH.")
    raise InvalidRequest(
        f"The model {model!r} recorded in {source} was not found; give it with --model PATH. "
        f"{HOW_TO_LIST}"
    )


def _model_by_hash(recorded: Recorded, finder: ModelFinder, context: Context) -> str:
    """The name (or, when several share it, the path) of the catalog checkpoint whose
    file has the recorded hash, with a notice; ``""`` when none has."""
    from sdstudio.engine.hashing import HashCache

    reporter = context.reporter

    def on_hashing(entries: list[ModelEntry]) -> None:
        gigabytes = sum(entry.size_bytes for entry in entries) / 1e9
        message = (
            f"Looking for the model by its hash {recorded.hash} in {len(entries)} "
            f"checkpoint(s) ({gigabytes:.1f} GB, read once and remembered)…"
        )
        reporter.event("notice", message, message=message)

    hashes = HashCache(context.paths.cache_dir / "model-hashes.json")
    entry = finder.find_by_hash(
        recorded.hash, hashes, size=(recorded.width, recorded.height), on_hashing=on_hashing
    )
    if entry is None:
        return ""
    found = entry.path
    with contextlib.suppress(ModelError):  # a name several models share: the path
        if finder.find(entry.name)[0] == Path(entry.path).resolve():
            found = entry.name
    if not recorded.name:
        name = "It names no model"
    else:
        name = f"No model named {recorded.name!r} was found"
    message = f"The model was found by its hash: {recorded.hash} is {found} ({entry.path}). {name}."
    reporter.event("notice", message, message=message)
    return found


def recorded_vae(value: str, context: Context) -> str:
    """The VAE an image names, found only in the VAE folders (a path elsewhere is not
    used): the value itself when the engine finds the same file by it, else its path."""
    from sdstudio.engine.models.catalog import hf_cache_dir, network_folders
    from sdstudio.engine.vae import find_recorded_vae, find_vae

    folders = network_folders(context.paths, context.settings, "vae")
    try:
        found = find_recorded_vae(value, folders, also=[hf_cache_dir()])
    except InvalidRequest as error:
        raise InvalidRequest(
            f"{error} Give the VAE to use with --vae PATH, or --vae none for the model's own."
        ) from None
    with contextlib.suppress(InvalidRequest):
        if find_vae(value, folders) == found:
            return value
    return str(found)
