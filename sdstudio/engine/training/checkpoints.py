"""Resumable training states: a folder per saved step.

A state folder holds the trained weights (``weights.safetensors``, exact float32), the
optimizer's and the learning-rate schedule's states and the gradient scaler's
(``optimizer.pt``, read back with ``torch.load(weights_only=True)``: tensors and plain
values only), the torch random states, and ``state.json``: the step reached and the
run's options, which a resumed run must share. Batches, caption variations and noise
are drawn from generators seeded by the run's seed and the step, so the step alone
says where the data stream stands; the random states are kept for anything else.

A folder is written under a temporary name and renamed when complete, so a crash
while saving never leaves a half state under a real name. Older states beyond
:data:`KEEP_STATES` are removed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdstudio.engine.errors import InvalidRequest, StorageError

log = logging.getLogger(__name__)

STATE_VERSION = 1
KEEP_STATES = 2
WEIGHTS = "weights.safetensors"
TRAINING_STATE = "optimizer.pt"
STATE_JSON = "state.json"


@dataclass(slots=True)
class SavedState:
    """A state read back from a folder."""

    path: Path
    step: int
    kind: str
    options: dict[str, Any]
    weights: dict[str, torch.Tensor]
    training: dict[str, Any]
    """``optimizer``, ``scheduler``, ``scaler`` and ``rng`` states."""


def save_state(
    state_dir: Path,
    *,
    step: int,
    kind: str,
    options: dict[str, Any],
    weights: dict[str, torch.Tensor],
    training: dict[str, Any],
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write the state of ``step`` to ``state_dir/step-NNNNNN`` and return that folder."""
    from safetensors.torch import save_file

    final = state_dir / f"step-{step:06d}"
    partial = state_dir / f".step-{step:06d}.partial"
    try:
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        cpu = {name: tensor.detach().to("cpu").contiguous() for name, tensor in weights.items()}
        save_file(cpu, str(partial / WEIGHTS))
        torch.save({**training, "rng": _rng_states()}, partial / TRAINING_STATE)
        for name, data in (extra_files or {}).items():
            (partial / name).write_bytes(data)
        record = {"version": STATE_VERSION, "kind": kind, "step": step, "options": options}
        (partial / STATE_JSON).write_text(json.dumps(record, indent=2), "utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise StorageError(f"Could not save the training state in {state_dir}: {error}") from None
    _remove_old_states(state_dir, keep=final)
    return final


def load_state(path: Path, kind: str) -> SavedState:
    """Read a state folder (or the newest state in a run's state folder).

    Raises :class:`InvalidRequest` when it is not a complete state of ``kind``.
    """
    from safetensors.torch import load_file

    path = latest_state(path)
    record_file = path / STATE_JSON
    try:
        record = json.loads(record_file.read_text("utf-8"))
        weights = load_file(str(path / WEIGHTS))
        training = torch.load(path / TRAINING_STATE, weights_only=True, map_location="cpu")
    except FileNotFoundError as error:
        raise InvalidRequest(
            f"{path} is not a complete training state ({Path(str(error.filename)).name} "
            "is missing)."
        ) from None
    except (OSError, ValueError, RuntimeError) as error:
        raise InvalidRequest(f"The training state {path} cannot be read: {error}") from None
    if not isinstance(record, dict) or record.get("version") != STATE_VERSION:
        raise InvalidRequest(f"The training state {path} was saved by another version.")
    if record.get("kind") != kind:
        raise InvalidRequest(
            f"The training state {path} is of a {record.get('kind')} run, not a {kind} run."
        )
    return SavedState(path, int(record["step"]), kind, record["options"], weights, training)


def latest_state(path: Path) -> Path:
    """``path`` when it is a state folder, else the newest ``step-*`` folder inside it."""
    path = Path(path).expanduser()
    if (path / STATE_JSON).is_file():
        return path
    steps = sorted(path.glob("step-*")) if path.is_dir() else []
    complete = [folder for folder in steps if (folder / STATE_JSON).is_file()]
    if not complete:
        raise InvalidRequest(f"{path} holds no saved training state to resume from.")
    return complete[-1]


def restore_rng(training: dict[str, Any]) -> None:
    """Put back the torch random states saved with a state."""
    rng = training.get("rng") or {}
    if "cpu" in rng:
        torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _remove_old_states(state_dir: Path, *, keep: Path) -> None:
    states = sorted(folder for folder in state_dir.glob("step-*") if folder.is_dir())
    for folder in states[:-KEEP_STATES]:
        if folder != keep:
            shutil.rmtree(folder, ignore_errors=True)
            log.info("Removed the older training state %s", folder)
