"""Removing a model the app downloaded from the shared Hugging Face cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.settings import Settings


def remove_downloaded(settings: Settings, repo_id: str, cache_dir: Path | None = None) -> Settings:
    """Delete every cached revision of ``repo_id`` if the app downloaded it.

    Models another tool put in the cache are never touched. Returns the
    settings without the repo in ``downloaded_models``.
    """
    if repo_id not in settings.downloaded_models:
        raise InvalidRequest(
            f"{repo_id} was not downloaded by sdstudio, so sdstudio will not delete it."
        )
    from huggingface_hub import scan_cache_dir

    from sdstudio.engine.models.catalog import hf_cache_dir

    cache = scan_cache_dir(cache_dir or hf_cache_dir())
    hashes = [
        revision.commit_hash
        for repo in cache.repos
        if repo.repo_id == repo_id and repo.repo_type == "model"
        for revision in repo.revisions
    ]
    if hashes:
        cache.delete_revisions(*hashes).execute()
    remaining = tuple(r for r in settings.downloaded_models if r != repo_id)
    return dataclasses.replace(settings, downloaded_models=remaining)


def repo_id_of(snapshot: Path) -> str | None:
    """The repo id of a Hugging Face cache snapshot folder, if it is one."""
    for part in snapshot.parts:
        if part.startswith("models--"):
            return part[len("models--") :].replace("--", "/")
    return None
