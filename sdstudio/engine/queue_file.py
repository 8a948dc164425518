"""The generation queue kept between runs of the app.

Jobs still queued when the app quits are saved as their requests (the JSON of
:meth:`GenerationRequest.to_dict`) and offered at the next start. The file is
read as untrusted input: a damaged one is set aside (renamed ``.bad``) with a
message, and jobs that do not read are left out and counted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import SdStudioError, StorageError, first_line
from sdstudio.engine.fileio import write_atomically
from sdstudio.engine.request import GenerationRequest

QUEUE_FILE_VERSION = 1
MAX_QUEUE_FILE_BYTES = 8 * 1024 * 1024
"""Far more than any real queue (a job takes well under 2 kB)."""
SET_ASIDE_SUFFIX = ".bad"


class QueueFileError(SdStudioError):
    """The saved queue cannot be read as a whole."""


@dataclass(frozen=True, slots=True)
class SavedQueue:
    """What :func:`load_queue` found: the jobs that read, and what went wrong."""

    requests: tuple[GenerationRequest, ...] = ()
    skipped: int = 0
    """Jobs in the file that could not be read (left out)."""
    problem: str = ""
    """A message for the user when the file or some of its jobs could not be used."""


def save_queue(path: Path, requests: Sequence[GenerationRequest]) -> None:
    """Keep ``requests`` in ``path`` (written atomically); none removes the file.

    Raises :class:`~sdstudio.engine.errors.StorageError` when it cannot be written.
    """
    if not requests:
        discard_queue(path)
        return
    data = {"version": QUEUE_FILE_VERSION, "jobs": [r.to_dict() for r in requests]}
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    write_atomically(path, text.encode("utf-8"))


def discard_queue(path: Path) -> None:
    """Forget the saved queue; :class:`~sdstudio.engine.errors.StorageError` if it stays."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as error:
        raise StorageError(f"Could not remove {path}: {error.strerror or error}.") from None


def load_queue(path: Path) -> SavedQueue:
    """Read the queue saved by :func:`save_queue`; no file gives an empty queue.

    Never raises for bad content: a file that cannot be read as a whole is
    renamed to ``<name>.bad`` and reported in :attr:`SavedQueue.problem`.
    """
    try:
        jobs = _read_jobs(path)
    except FileNotFoundError:
        return SavedQueue()
    except QueueFileError as error:
        aside = _set_aside(path)
        where = f" It was set aside as {aside}." if aside else ""
        return SavedQueue(
            problem=f"The jobs kept from last time could not be read: {error}.{where}"
        )
    requests: list[GenerationRequest] = []
    reasons: list[str] = []
    for job in jobs:
        try:
            requests.append(GenerationRequest.from_dict(job))
        except (SdStudioError, TypeError, ValueError, OverflowError, RecursionError) as error:
            reasons.append(first_line(error, 200))
    problem = ""
    if reasons:
        jobs_word = "job" if len(jobs) == 1 else "jobs"
        problem = (
            f"{len(reasons)} of the {len(jobs)} {jobs_word} kept from last time could not be "
            f"read and {'was' if len(reasons) == 1 else 'were'} left out ({reasons[0]})"
        )
        problem = problem if problem.endswith(".") else problem + "."
    return SavedQueue(tuple(requests), len(reasons), problem)


def _read_jobs(path: Path) -> list[Any]:
    """The file's list of job objects; :class:`QueueFileError` saying why not."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_QUEUE_FILE_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise QueueFileError(error.strerror or str(error)) from None
    if len(data) > MAX_QUEUE_FILE_BYTES:
        raise QueueFileError(f"it is larger than {MAX_QUEUE_FILE_BYTES // (1024 * 1024)} MB")
    try:
        content = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise QueueFileError("it is not UTF-8 text") from None
    except RecursionError:
        raise QueueFileError("it nests too deeply") from None
    except json.JSONDecodeError as error:
        raise QueueFileError(f"it is not valid JSON ({error})") from None
    except ValueError:  # Python reads no integer of over 4300 digits
        raise QueueFileError("a number in it has too many digits") from None
    if not isinstance(content, dict) or not isinstance(content.get("jobs"), list):
        raise QueueFileError("it does not hold a list of jobs")
    version = content.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise QueueFileError("it has no version number")
    if version > QUEUE_FILE_VERSION:
        raise QueueFileError("it was written by a newer sdstudio")
    return list(content["jobs"])


def _set_aside(path: Path) -> str:
    """Rename a damaged file to ``<name>.bad`` (replacing an older one); its new name,
    or empty if it could not be moved."""
    aside = path.with_name(path.name + SET_ASIDE_SUFFIX)
    try:
        os.replace(path, aside)
    except OSError:
        return ""
    return aside.name
