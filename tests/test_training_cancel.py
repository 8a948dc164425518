"""Stopping a training run through its standard input: the line ``cancel`` (the app's
way on every system, Windows included) saves a state and ends with status 130, as
SIGINT does; the end of the input changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sdstudio.cli.train import EXIT_CANCELLED, cancel_on_stdin
from sdstudio.engine.training.events import CancelFlag


def test_the_line_cancel_sets_the_flag_and_end_of_input_does_not() -> None:
    flag = CancelFlag()
    read, write = os.pipe()
    thread = cancel_on_stdin(flag, read)
    assert thread is not None
    os.write(write, b"cancelled\n  cancel")  # neither is the line ``cancel`` yet
    thread.join(0.2)
    assert not flag.is_set()
    os.write(write, b"\r\n")
    os.close(write)
    thread.join(5)
    assert flag.is_set() and not thread.is_alive()
    os.close(read)

    quiet = CancelFlag()
    read, write = os.pipe()
    thread = cancel_on_stdin(quiet, read)
    assert thread is not None
    os.close(write)  # end of input: the thread ends, the run goes on
    thread.join(5)
    assert not thread.is_alive() and not quiet.is_set()
    os.close(read)


def test_a_terminal_or_a_missing_stdin_is_not_watched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", None)
    assert cancel_on_stdin(CancelFlag()) is None
    monkeypatch.setattr(os, "isatty", lambda _fd: True)
    read, write = os.pipe()
    assert cancel_on_stdin(CancelFlag(), read) is None
    os.close(read)
    os.close(write)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"shape {i}", "utf-8")
    return folder


def train_args(model: Path, data: Path, steps: int) -> list[str]:
    args = ["train", "lora", "--model", str(model), "--data", str(data), "--name", "stopped"]
    args += ["--max-train-steps", str(steps), "--resolution", "64", "--network-dim", "2"]
    return [*args, "--device", "cpu", "--json"]


def test_train_in_json_mode_watches_its_input(
    tiny_model: Path, data: Path, sdstudio_home: Path, capsys: Any, monkeypatch: Any
) -> None:
    """In the process (fast): ``cancel`` already waiting on the input stops the run at
    once, with a state."""
    from sdstudio.cli import main

    read, write = os.pipe()
    os.write(write, b"cancel\n")
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(fileno=lambda: read))
    try:
        code = main(train_args(tiny_model, data, 20))  # unwatched, it would finish
    finally:
        os.close(write)  # end of input ends the watching thread
        for thread in threading.enumerate():
            if thread.name == "stdin-cancel":
                thread.join(5)
        os.close(read)
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == EXIT_CANCELLED and events[-1]["event"] == "cancelled"
    state = sdstudio_home / "data" / "training" / "stopped" / "step-000000"
    assert events[-1]["path"] == str(state) and (state / "state.json").is_file()


@pytest.mark.slow
def test_the_cli_stops_on_cancel_read_from_stdin(
    tiny_model: Path, data: Path, sdstudio_home: Path
) -> None:
    """The real child process (slow: it imports torch and diffusers), told after its
    first step, as the app does."""
    command = [sys.executable, "-m", "sdstudio.cli", *train_args(tiny_model, data, 100000)]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
    )
    assert child.stdin is not None and child.stdout is not None
    events = []
    try:
        for line in child.stdout:
            if line.startswith(b"{"):
                events.append(json.loads(line))
                if events[-1]["event"] in ("step", "error"):
                    break
        assert events and events[-1]["event"] == "step", child.stderr.read() if child.stderr else ""
        child.stdin.write(b"cancel\n")
        child.stdin.flush()
        rest, errors = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    events += [json.loads(line) for line in rest.splitlines() if line.startswith(b"{")]
    assert child.returncode == EXIT_CANCELLED, errors.decode("utf-8", "replace")[-2000:]
    cancelled = events[-1]
    assert cancelled["event"] == "cancelled"
    state = Path(cancelled["path"])
    assert state.parent == sdstudio_home / "data" / "training" / "stopped"
    assert (state / "state.json").is_file()
    assert max(event.get("step", 0) for event in events) < 100000


def test_a_state_saved_before_newer_options_resumes_only_at_their_defaults() -> None:
    """A state whose record lacks an option added since (kohya's flip_aug …) resumes a
    run that leaves it at its default, and names it when the run sets it."""
    from sdstudio.engine.training.options import resume_mismatches

    saved = {"network_dim": 8, "base": {"seed": 1}}
    same = {"network_dim": 8, "flip_aug": False, "clip_skip": 1, "base": {"seed": 1}}
    assert resume_mismatches(saved, same) == []
    assert resume_mismatches(saved, {**same, "flip_aug": True}) == ["flip_aug"]
    assert resume_mismatches(saved, {**same, "network_dim": 16}) == ["network_dim"]
    assert resume_mismatches({**saved, "clip_skip": 2}, same) == ["clip_skip"]
