"""Resumable fetching of one file into the Hugging Face cache's blob store.

huggingface_hub 2.x resumes a dropped connection within one call, but deletes
its partial file when a download stops (cancel, crash, closed app). Here the
bytes go to ``blobs/<etag>.sdstudio-partial`` instead, which survives, and the
next run asks only for the rest with an HTTP Range request. The finished blob
is renamed into place; ``hf_hub_download`` then links it into the snapshot.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".sdstudio-partial"


def blob_path(
    cache: Path, repo_id: str, name: str, *, revision: str, token: str | None, endpoint: str | None
) -> tuple[Path, str, int | None]:
    """Where the file's blob lives in ``cache``, the URL to fetch it from, and its size."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo_id, name, revision=revision, endpoint=endpoint)
    meta = get_hf_file_metadata(url, token=token)
    if not meta.etag or not meta.location:
        raise OSError(f"The Hub sent no ETag or location for {name}.")
    folder = cache / f"models--{repo_id.replace('/', '--')}" / "blobs"
    return folder / meta.etag, meta.location, meta.size


def fetch_blob(
    url: str, blob: Path, *, size: int | None, token: str | None, tqdm_class: Any
) -> None:
    """Download ``url`` to ``blob``, continuing a partial file left by an earlier run."""
    from filelock import FileLock
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    blob.parent.mkdir(parents=True, exist_ok=True)
    partial = blob.with_name(blob.name + PARTIAL_SUFFIX)
    lock = blob.parents[2] / ".locks" / blob.parents[1].name / f"{blob.name}.sdstudio.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        if blob.exists():
            return
        start = partial.stat().st_size if partial.exists() else 0
        if size is not None and start > size:
            log.warning("Discarding %s: larger than the file it should become", partial)
            partial.unlink()
            start = 0
        if start:
            log.info("Resuming %s at byte %d", url, start)
        with partial.open("ab") as file:
            http_get(
                url,
                file,
                resume_size=start,
                headers=build_hf_headers(token=token),
                expected_size=size,
                tqdm_class=tqdm_class,
            )
        os.replace(partial, blob)
