"""Writing a repo's files into the Hugging Face cache: resumable, checked, and only inside it.

huggingface_hub 2.x resumes a dropped connection within one call, but deletes
its partial file when a download stops (cancel, crash, closed app). Here the
bytes go to ``blobs/<digest>.sdstudio-partial`` instead, which survives, and the
next run asks only for the rest with an HTTP Range request. The finished blob
is checked against its digest, renamed into place and linked into the snapshot
in the cache's own layout (``blobs/``, ``snapshots/<commit>/``, ``refs/``).

Every name that becomes a path comes from the server (the file listing, the
``ETag`` naming each blob, the commit), so each is checked first: a blob is
named by the hex digest of its bytes (SHA-256 for LFS files, git's SHA-1 for
the others), file names are plain relative paths, and every path written must
lie inside the cache folder. ``hf_hub_download`` is not used for the linking
because it builds paths from the server's headers as they come.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import ModelError

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".sdstudio-partial"

_DIGEST = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_FORBIDDEN_CHARACTERS = re.compile(r"[\\:\x00-\x1f\x7f]")
_CHUNK = 1024 * 1024


def server_name(endpoint: str | None) -> str:
    """The Hub server in effect: ``endpoint``, else ``HF_ENDPOINT`` or huggingface.co."""
    from huggingface_hub import constants

    return endpoint or constants.ENDPOINT


def unsafe_name(name: str) -> bool:
    """Whether a repo file name could leave the folder it is written under.

    Names are relative, ``/``-separated, without empty, ``.`` or ``..`` parts,
    backslashes, drive colons or control characters.
    """
    if not name or name.startswith("/") or _FORBIDDEN_CHARACTERS.search(name):
        return True
    return any(part in ("", ".", "..") for part in name.split("/"))


def check_names(names: Iterable[str], repo_id: str, server: str) -> None:
    """:class:`ModelError` when the server lists a file name that is not a plain relative path."""
    for name in names:
        if unsafe_name(name):
            raise ModelError(
                f"The server {server} lists a file named {_shown(name)} in {repo_id}, which is not "
                "a plain path inside the model folder; nothing was downloaded."
            )


def check_commit(commit: str, repo_id: str, server: str) -> str:
    """``commit`` when it is a 40-hex git commit id, else :class:`ModelError`."""
    if not _COMMIT.fullmatch(commit):
        raise ModelError(
            f"The server {server} gave {repo_id} the revision {_shown(commit)}, which is not "
            "a git commit id; nothing was downloaded."
        )
    return commit


def inside(root: Path, path: Path) -> Path:
    """``path`` when it lies inside ``root`` (compared as written, ``..`` resolved), else
    :class:`ModelError`."""
    base = os.path.normpath(os.path.abspath(root))
    target = os.path.normpath(os.path.abspath(path))
    if os.path.commonpath([base, target]) != base or target == base:
        raise ModelError(f"Refusing to write {target}: it is outside the cache folder {base}.")
    return path


def repo_folder(cache: Path, repo_id: str) -> Path:
    """The cache folder of a model repo, ``models--org--name``."""
    return inside(cache, cache / f"models--{repo_id.replace('/', '--')}")


def blob_path(
    cache: Path, repo_id: str, name: str, *, commit: str, token: str | None, endpoint: str | None
) -> tuple[Path, str, int | None]:
    """Where the file's blob lives in ``cache``, the URL to fetch it from, and its size.

    Raises :class:`ModelError` when the server's ETag for the file is not a hex digest.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo_id, name, revision=commit, endpoint=endpoint)
    meta = get_hf_file_metadata(url, token=token)
    server = server_name(endpoint)
    if not meta.etag or not meta.location:
        raise ModelError(f"The server {server} sent no ETag or location for {name}.")
    if not _DIGEST.fullmatch(meta.etag):
        raise ModelError(
            f"The server {server} names {name} by {_shown(meta.etag)}, which is not a SHA-256 "
            "or git hash of its content; the file was not downloaded."
        )
    folder = repo_folder(cache, repo_id) / "blobs"
    return inside(cache, folder / meta.etag), meta.location, meta.size


def fetch_blob(
    url: str, blob: Path, *, size: int | None, token: str | None, tqdm_class: Any, label: str
) -> None:
    """Download ``url`` to ``blob``, continuing a partial file left by an earlier run.

    The bytes must hash to the blob's name; otherwise they are deleted and
    :class:`ModelError` names ``label`` (the file and where it came from).
    """
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
        if file_digest(partial, len(blob.name)) != blob.name:
            partial.unlink()
            raise ModelError(
                f"{label} does not match its checksum (damaged or altered on the way); "
                "it was deleted, try again."
            )
        os.replace(partial, blob)


def file_digest(path: Path, length: int) -> str:
    """The hex SHA-256 (``length`` 64) or git blob SHA-1 (``length`` 40) of a file."""
    digest = hashlib.sha256() if length == 64 else hashlib.sha1(usedforsecurity=False)
    if length != 64:
        digest.update(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def link_into_snapshot(cache: Path, snapshot: Path, name: str, blob: Path) -> Path:
    """Make ``snapshot/name`` point at ``blob`` (a relative symlink, as huggingface_hub does).

    Where symbolic links cannot be made, the blob is moved there instead.
    """
    pointer = inside(snapshot, snapshot / name)
    inside(cache, pointer)
    pointer.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        pointer.unlink()
    try:
        os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    except OSError:
        log.info("Symbolic links are not available here; moving %s into the snapshot", blob)
        os.replace(blob, pointer)
    return pointer


def write_ref(repo: Path, revision: str, commit: str) -> None:
    """Record that ``revision`` (a branch or tag) points at ``commit``, as the cache does."""
    if revision == commit:
        return
    ref = inside(repo / "refs", repo / "refs" / revision)
    ref.parent.mkdir(parents=True, exist_ok=True)
    if ref.is_file() and ref.read_text("utf-8") == commit:
        return
    temporary = ref.with_name(ref.name + PARTIAL_SUFFIX)
    temporary.write_text(commit, "utf-8")
    os.replace(temporary, ref)


def _shown(text: str) -> str:
    """A server-given string, quoted and cut short, for a one-line message."""
    return repr(text[:80] + ("…" if len(text) > 80 else ""))
