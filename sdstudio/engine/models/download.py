"""Downloading a diffusers model from the Hugging Face Hub into the shared cache.

Only the files a pipeline needs are fetched (configs, tokenizers, scheduler and
one set of weights per component, fp16 safetensors where offered, never
pickles when safetensors exist, never code or files of unknown types), one
file at a time from the listed commit, with byte progress and cancel.
``model_index.json`` comes last, so an interrupted download never looks like a
usable model. Running it again skips the files already complete and continues
a partial one where it stopped (see :mod:`resume`, which also checks every
name the server sends); within a run, a dropped connection is resumed by
huggingface_hub itself.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sdstudio.engine.errors import ModelError, SdStudioError, StorageError
from sdstudio.engine.models import resume
from sdstudio.engine.models.catalog import hf_cache_dir

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""Called with (bytes done, bytes in all)."""

SPACE_MARGIN = 1.10
"""The free space a download needs, as a multiple of its size."""

_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_SUPPORT_FOLDERS = ("scheduler", "tokenizer", "feature_extractor")
_SUPPORT_SUFFIXES = (".json", ".txt", ".model")
"""Configs, tokenizer vocabularies and merges, and sentencepiece models."""


class DownloadCancelled(SdStudioError):
    """The user cancelled the download; files already complete are kept for next time."""

    def __init__(self, message: str = "Download cancelled.") -> None:
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class DownloadPlan:
    """The files of one repo revision to fetch, with their sizes."""

    repo_id: str
    commit: str
    files: tuple[tuple[str, int], ...]

    @property
    def total_bytes(self) -> int:
        """The size of all planned files."""
        return sum(size for _name, size in self.files)


def choose_files(sizes: dict[str, int]) -> list[str]:
    """The files a diffusers pipeline needs from a repo's listing, ``model_index.json`` last."""
    if "model_index.json" not in sizes:
        raise ModelError("This repo is not a diffusers model (it has no model_index.json).")
    chosen = []
    folders: dict[str, list[str]] = {}
    for name in sizes:
        folder, _, base = name.rpartition("/")
        if not folder or "/" in folder:
            continue
        if base == "config.json" or folder.startswith(_SUPPORT_FOLDERS):
            if base.endswith(_SUPPORT_SUFFIXES) and not _weight_suffix(base):
                chosen.append(name)
        elif _weight_suffix(base):
            folders.setdefault(folder, []).append(name)
    for names in folders.values():
        chosen += _pick_weights(names)
    return [*sorted(chosen), "model_index.json"]


ANNOTATOR_DOWNLOADS = {
    "depth-anything/Depth-Anything-V2-Small-hf": (
        "Depth Anything V2 Small: depth maps for ControlNet (depth_anything_v2)",
        0.1,
    ),
}
"""Annotator networks offered for download (repo id: description, size in GB), fetched
into sdstudio's ``models/annotators`` folder (see :func:`download_annotator`)."""


TINY_VAE_DOWNLOADS = {
    "madebyollin/taesd": ("TAESD: tiny VAE for SD 1.x/2.x previews and draft decodes", 0.01),
    "madebyollin/taesdxl": ("TAESDXL: tiny VAE for SDXL previews and draft decodes", 0.01),
    "madebyollin/taesd3": ("TAESD3: tiny VAE for SD 3 previews and draft decodes", 0.01),
    "madebyollin/taef1": ("TAEF1: tiny VAE for Flux.1 previews and draft decodes", 0.01),
}
"""Tiny VAEs offered for download (repo id: description, size in GB), fetched as diffusers
folders into sdstudio's ``models/vae_approx/<name>`` (see :func:`download_tiny_vae`)."""


def tiny_vae_folder(models_dir: Path, repo_id: str) -> Path:
    """Where the tiny VAE ``repo_id`` is downloaded: ``models/vae_approx/<repo name>``, a
    name that tells its family (see :mod:`sdstudio.engine.tiny_vae_files`)."""
    from sdstudio.engine.tiny_vae_files import FOLDER_NAME

    return models_dir / FOLDER_NAME / repo_id.rsplit("/", 1)[-1]


def download_tiny_vae(
    repo_id: str,
    folder: Path,
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> Path:
    """Download the diffusers tiny VAE ``repo_id`` (its ``config.json`` and safetensors
    weights) into ``folder`` (see :func:`tiny_vae_folder`), in the Hub's cache layout; its
    snapshot folder. Errors as :func:`download_model`."""
    return download_model(
        repo_id,
        cache_dir=folder,
        progress=progress,
        cancel=cancel,
        token=token,
        endpoint=endpoint,
        choose=choose_transformers_files,
    )


def choose_transformers_files(sizes: dict[str, int]) -> list[str]:
    """The files a transformers model needs from a repo's listing: its configs and one
    set of safetensors weights at the top level, ``config.json`` last (a folder with it is
    complete)."""
    if "config.json" not in sizes:
        raise ModelError("This repo is not a transformers model (it has no config.json).")
    top = [name for name in sizes if "/" not in name]
    weights = [n for n in _pick_weights([n for n in top if _weight_suffix(n)]) if ".bin" not in n]
    if not weights:
        raise ModelError("This repo offers no safetensors weights (pickles are not fetched).")
    support = [
        n for n in top if n.endswith(".json") and n != "config.json" and not _weight_suffix(n)
    ]
    return [*sorted(support), *sorted(weights), "config.json"]


def download_annotator(
    repo_id: str,
    folder: Path,
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> Path:
    """Download the transformers model ``repo_id`` (an annotator network such as Depth
    Anything) into ``folder`` (sdstudio's ``models/annotators``), in the Hub's cache
    layout; its snapshot folder. Errors as :func:`download_model`."""
    return download_model(
        repo_id,
        cache_dir=folder,
        progress=progress,
        cancel=cancel,
        token=token,
        endpoint=endpoint,
        choose=choose_transformers_files,
    )


def annotator_snapshot(folder: Path, repo_id: str, revision: str = "main") -> Path | None:
    """The complete snapshot of an annotator download in ``folder`` (its ``config.json``,
    fetched last, is there); None when there is none. The catalog leaves annotator
    folders out, so the model manager lists the app's downloads through this, to offer
    them for deletion."""
    repo = folder / f"models--{repo_id.replace('/', '--')}"
    try:
        commit = (repo / "refs" / revision).read_text("utf-8").strip()
    except (OSError, UnicodeError):
        return None
    if "/" in commit or resume.unsafe_name(commit):
        return None
    snapshot = repo / "snapshots" / commit
    return snapshot if (snapshot / "config.json").is_file() else None


def _pick_weights(names: list[str]) -> list[str]:
    """One set of weights: fp16 safetensors, else safetensors, else (only then) ``.bin``."""
    for suffix in _WEIGHT_SUFFIXES:
        own = [n for n in names if _weight_suffix(n) == suffix]
        for variant in ("fp16", None):
            picked = [n for n in own if _variant(n) == variant]
            if any(n.endswith(suffix) for n in picked):
                return picked
    return []


def _weight_suffix(name: str) -> str | None:
    """``.safetensors`` or ``.bin`` for weights and their shard indexes, else None."""
    for suffix in _WEIGHT_SUFFIXES:
        if name.endswith(suffix) or (f"{suffix}.index." in name and name.endswith(".json")):
            return suffix
    return None


def _variant(name: str) -> str | None:
    """``fp16`` for ``model.fp16.safetensors``, ``model.fp16-00001-of-00002.safetensors``
    or ``model.safetensors.index.fp16.json``."""
    base = name.rpartition("/")[2]
    if ".index." in base:
        return base.split(".index.", 1)[1].removesuffix("json").rstrip(".") or None
    parts = base.rsplit(".", 1)[0].split(".")
    return parts[1].split("-")[0] if len(parts) > 1 else None


def plan_download(
    repo_id: str,
    *,
    revision: str = "main",
    token: str | None = None,
    endpoint: str | None = None,
    choose: Callable[[dict[str, int]], list[str]] = choose_files,
) -> DownloadPlan:
    """Ask the Hub which files to fetch (those ``choose`` picks from the listing) and how
    big they are."""
    from huggingface_hub import HfApi

    with _hub_errors(repo_id):
        info = HfApi(endpoint=endpoint, token=token).model_info(
            repo_id, revision=revision, files_metadata=True, timeout=30
        )
    server = resume.server_name(endpoint)
    sizes = {s.rfilename: int(s.size or 0) for s in info.siblings or []}
    resume.check_names(sizes, repo_id, server)
    commit = resume.check_commit(str(info.sha), repo_id, server)
    files = tuple((name, sizes[name]) for name in choose(sizes))
    return DownloadPlan(repo_id=repo_id, commit=commit, files=files)


def download_model(
    repo_id: str,
    *,
    revision: str = "main",
    cache_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    choose: Callable[[dict[str, int]], list[str]] = choose_files,
) -> Path:
    """Download ``repo_id`` into the Hugging Face cache and return its snapshot folder
    (``choose`` picks the files from the repo's listing: a diffusers pipeline's by
    default).

    Raises :class:`DownloadCancelled` when ``cancel`` is set, :class:`StorageError`
    when the disk is too full, and :class:`ModelError` when the Hub cannot be
    reached, the repo is missing, gated or not a diffusers model, or the server
    sends a name that is not a safe path or digest (nothing is written outside
    the cache).
    """
    cache = cache_dir or hf_cache_dir()
    if resume.unsafe_name(revision):
        raise ModelError(f"{revision!r} is not a revision name (a branch, tag or commit id).")
    plan = plan_download(repo_id, revision=revision, token=token, endpoint=endpoint, choose=choose)
    repo = resume.repo_folder(cache, repo_id)
    snapshot = resume.inside(cache, repo / "snapshots" / plan.commit)
    missing = [(name, size) for name, size in plan.files if not (snapshot / name).exists()]
    check_free_space(cache, sum(size for _name, size in missing))
    tracker = _Tracker(plan.total_bytes, progress, cancel)
    tracker.done = plan.total_bytes - sum(size for _name, size in missing)
    tracker.report()
    bar = cast(Any, functools.partial(_Bar, tracker))
    server = resume.server_name(endpoint)
    for name, size in missing:
        tracker.check()
        before = tracker.done
        with _hub_errors(repo_id):
            blob, url, expected = resume.blob_path(
                cache, repo_id, name, commit=plan.commit, token=token, endpoint=endpoint
            )
            label = f"{name} from {server}"
            resume.fetch_blob(url, blob, size=expected, token=token, tqdm_class=bar, label=label)
            resume.link_into_snapshot(cache, snapshot, name, blob)
        tracker.finish_file(before + size)
    resume.write_ref(repo, revision, plan.commit)
    log.info("Downloaded %s (%d bytes) to %s", repo_id, plan.total_bytes, snapshot)
    return snapshot


def check_free_space(folder: Path, needed: int) -> None:
    """:class:`StorageError` unless ``folder``'s disk has ``needed`` bytes and 10 % to spare."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < needed * SPACE_MARGIN:
        raise StorageError(
            f"Not enough disk space in {folder}: the download needs {_gb(needed * SPACE_MARGIN)}, "
            f"{_gb(free)} is free."
        )


def _gb(size: float) -> str:
    return f"{size / 1e9:.2f} GB"


class _Tracker:
    """Adds up bytes across files, reports them, and stops the download when cancelled."""

    def __init__(
        self, total: int, progress: ProgressCallback | None, cancel: threading.Event | None
    ) -> None:
        self.total = total
        self.done = 0
        self._progress = progress
        self._cancel = cancel

    def check(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise DownloadCancelled()

    def add(self, count: int) -> None:
        self.check()
        self.done += count
        self.report()

    def finish_file(self, done: int) -> None:
        if done != self.done:
            self.done = done
            self.report()

    def report(self) -> None:
        if self._progress is not None:
            self._progress(min(self.done, self.total), self.total)


class _Bar:
    """The progress bar huggingface_hub drives for one file (``update`` per chunk)."""

    def __init__(self, tracker: _Tracker, *, initial: int = 0, **_kwargs: Any) -> None:
        self._tracker = tracker
        if initial:
            tracker.add(initial)

    def update(self, count: int | float | None = 1) -> None:
        self._tracker.add(int(count or 0))

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _hub_errors(repo_id: str) -> Iterator[None]:
    """Turn huggingface_hub and network errors into one-line :class:`ModelError`."""
    try:
        yield
    except SdStudioError:
        raise
    except Exception as error:
        translated = _translate(repo_id, error)
        if translated is error:
            raise
        raise translated from error


def _translate(repo_id: str, error: Exception) -> Exception:
    from huggingface_hub import errors

    if isinstance(error, errors.GatedRepoError):
        return ModelError(
            f"{repo_id} is gated: accept its terms on huggingface.co and log in (hf auth login)."
        )
    if isinstance(error, errors.RepositoryNotFoundError):
        return ModelError(f"{repo_id} was not found on the Hugging Face Hub (or it is private).")
    if isinstance(error, errors.RevisionNotFoundError):
        return ModelError(f"That revision of {repo_id} does not exist on the Hugging Face Hub.")
    if isinstance(error, errors.OfflineModeIsEnabled):
        return ModelError(f"Cannot download {repo_id}: offline mode is on (HF_HUB_OFFLINE).")
    if isinstance(error, errors.HFValidationError):
        return ModelError(f"{repo_id!r} is not a valid Hugging Face repo id (owner/name).")
    if isinstance(error, errors.HfHubHTTPError):
        return ModelError(f"Downloading {repo_id} failed: {str(error).splitlines()[0]}")
    if isinstance(error, OSError) and error.errno == 28:
        return StorageError(f"The disk is full; the download of {repo_id} stopped.")
    if _is_network_error(error):
        return ModelError(
            f"Cannot reach the Hugging Face Hub to download {repo_id}; check the connection."
        )
    return error


def _is_network_error(error: Exception) -> bool:
    from huggingface_hub.errors import LocalEntryNotFoundError

    if isinstance(error, ConnectionError | TimeoutError | LocalEntryNotFoundError):
        return True
    return any(cls.__name__ in ("TransportError", "HTTPError") for cls in type(error).__mro__)
