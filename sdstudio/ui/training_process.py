"""A training run in a child process, its JSON event lines turned into Qt signals.

Training runs as ``sdstudio-cli train … --json`` in a :class:`QProcess`, never in the
app's own process: the window stays light (torch's training memory lives and dies with
the child), and a crash there cannot take the window down. The child's standard output
is the protocol, one JSON object a line (see ``sdstudio.engine.training.events``); its
standard error is kept so that a crash can be explained with its last lines; its
standard input carries the line ``cancel`` (on every system: Windows has no signal to
send it). Nothing here blocks: reading happens as Qt reports data.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from sdstudio.engine.errors import InvalidRequest

log = logging.getLogger(__name__)

EXIT_CANCELLED = 130
"""The CLI's status after a cancel (it saves a state first)."""
TERMINATE_AFTER_MS = 5_000
"""How long a run may take to answer the ``cancel`` line before it is also terminated
(SIGTERM, which the CLI takes as a cancel too; a child that reads no input still stops)."""
KILL_AFTER_MS = 60_000
"""How long a cancelled run may take to save its state before it is killed."""
STDERR_LINES = 12
"""Lines of the child's error output kept to explain a failure."""


def cli_command(arguments: Sequence[str]) -> tuple[str, list[str]]:
    """The program and arguments that run ``sdstudio-cli ARGUMENTS``.

    From a checkout or a pip install, the Python running the app runs the CLI as a
    module. A packaged build's ``sys.executable`` is the app itself, which starts the
    command line when it is started as ``sdstudio-cli`` (a link beside it on Linux, a
    console program of its own on Windows).
    """
    if not getattr(sys, "frozen", False):
        return sys.executable, ["-m", "sdstudio.cli", *arguments]
    folder = Path(sys.executable).parent
    name = "sdstudio-cli.exe" if sys.platform == "win32" else "sdstudio-cli"
    program = folder / name
    if not program.exists():
        raise InvalidRequest(
            f"Training needs sdstudio's command line, {program}, which this installation "
            "does not have."
        )
    return str(program), list(arguments)


class TrainingProcess(QObject):
    """One training run at a time, in a child process.

    Exactly one of ``done``, ``cancelled`` and ``failed`` ends a run; ``finished``
    follows it once the process is gone. ``event`` carries every event object, the
    ones without a signal of their own (``notice``, and kinds this app does not know)
    included.
    """

    started = Signal(dict)
    """The ``start`` event: steps, start_step, epochs, images, skipped, device."""
    step = Signal(dict)
    """A ``step`` event: step, steps, loss, lr, it_s, eta_s."""
    sample = Signal(str)
    checkpoint = Signal(str)
    notice = Signal(str)
    done = Signal(str)
    """The finished LoRA file."""
    cancelled = Signal(str)
    """The state folder to resume from (empty when the run saved none)."""
    failed = Signal(str)
    event = Signal(dict)
    finished = Signal()

    def __init__(
        self,
        parent: QObject | None = None,
        kill_after_ms: int = KILL_AFTER_MS,
        terminate_after_ms: int = TERMINATE_AFTER_MS,
    ) -> None:
        super().__init__(parent)
        self._process: QProcess | None = None
        self._buffer = b""
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self._error_text = b""
        self._ended = False
        self._cancelling = False
        self.last_error = ""
        self.command: list[str] = []
        self._kill_timer = QTimer(self, singleShot=True, interval=kill_after_ms)
        self._kill_timer.timeout.connect(self._kill)
        self._terminate_timer = QTimer(self, singleShot=True, interval=terminate_after_ms)
        self._terminate_timer.timeout.connect(self._terminate)

    @property
    def running(self) -> bool:
        """Whether a child process is running (or starting)."""
        return self._process is not None

    def start_cli(self, arguments: Sequence[str]) -> None:
        """Run ``sdstudio-cli ARGUMENTS`` (which must include ``--json``)."""
        try:
            program, args = cli_command(arguments)
        except InvalidRequest as error:
            self._reset()
            self._end_failed(str(error))
            self.finished.emit()
            return
        self.start_program(program, args)

    def start_program(self, program: str, arguments: Sequence[str]) -> None:
        """Run ``program ARGUMENTS``, reading its output as training events."""
        if self._process is not None:
            raise RuntimeError("A training run is already going on.")
        self._reset()
        process = QProcess(self)
        environment = QProcessEnvironment.systemEnvironment()
        environment.insert("PYTHONIOENCODING", "utf-8")
        environment.insert("PYTHONUNBUFFERED", "1")
        process.setProcessEnvironment(environment)
        process.readyReadStandardOutput.connect(self._read_output)
        process.readyReadStandardError.connect(self._read_errors)
        process.finished.connect(self._on_finished)
        process.errorOccurred.connect(self._on_error)
        self._process = process
        self.command = [program, *arguments]
        log.info("Starting training: %s", " ".join(self.command))
        process.start(program, list(arguments))

    def cancel(self) -> None:
        """Ask the run to stop: it saves a state, reports ``cancelled`` and exits.

        The line ``cancel`` on its input asks first; a run that has not ended within the
        terminate delay is terminated, and one that outlasts the kill delay is killed.
        """
        if self._process is None or self._cancelling:
            return
        self._cancelling = True
        if self._process.write(b"cancel\n") < 0:
            log.warning("The training process's input cannot be written; terminating it")
            self._terminate()
        else:
            self._terminate_timer.start()
        self._kill_timer.start()

    def shutdown(self, wait_ms: int = 10_000) -> None:
        """Stop a running child before the app goes away: as a cancel does (the line,
        then terminated, then killed), waiting here since no timer runs any more."""
        process = self._process
        if process is None:
            return
        self.cancel()
        process.waitForBytesWritten(1_000)
        first = min(wait_ms, self._terminate_timer.interval())
        if process.waitForFinished(first):
            return
        process.terminate()
        if not process.waitForFinished(max(wait_ms - first, 0)):
            process.kill()
            process.waitForFinished(2_000)

    def _reset(self) -> None:
        self._buffer = b""
        self._error_text = b""
        self._stderr.clear()
        self._ended = False
        self._cancelling = False
        self.last_error = ""

    def _terminate(self) -> None:
        if self._process is not None:
            self._process.terminate()

    def _kill(self) -> None:
        if self._process is not None:
            log.warning("The training process did not stop in time; killing it")
            self._process.kill()

    def _read_output(self) -> None:
        if self._process is None:
            return
        self._buffer += bytes(self._process.readAllStandardOutput().data())
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._handle_line(line)

    def _read_errors(self) -> None:
        if self._process is None:
            return
        self._error_text += bytes(self._process.readAllStandardError().data())
        *lines, self._error_text = self._error_text.split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self._stderr.append(text)

    def _handle_line(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if not text:
            return
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            self._stderr.append(text)  # a library's print: kept with the error output
            return
        self.dispatch(event)

    def dispatch(self, event: dict[str, Any]) -> None:
        """Emit the signals of one event object (``{"event": kind, ...}``)."""
        kind = event["event"]
        self.event.emit(event)
        if self._ended:
            return
        if kind == "start":
            self.started.emit(event)
        elif kind == "step":
            self.step.emit(event)
        elif kind == "sample":
            self.sample.emit(str(event.get("path", "")))
        elif kind == "checkpoint":
            self.checkpoint.emit(str(event.get("path", "")))
        elif kind == "notice":
            self.notice.emit(str(event.get("message", "")))
        elif kind == "done":
            self._ended = True
            self.done.emit(str(event.get("path", "")))
        elif kind == "cancelled":
            self._ended = True
            self.cancelled.emit(str(event.get("path", "")))
        elif kind == "error":
            self._end_failed(str(event.get("message", "")) or "Training failed.")

    def _end_failed(self, message: str) -> None:
        self._ended = True
        self.last_error = message
        self.failed.emit(message)

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error != QProcess.ProcessError.FailedToStart or self._process is None:
            return  # a crash is explained once the process has finished
        reason = self._process.errorString()
        self._process.deleteLater()
        self._process = None
        if not self._ended:
            self._end_failed(f"The training process could not be started: {reason}.")
        self.finished.emit()

    def _on_finished(self, exit_code: int, exit_status: QProcess.ExitStatus) -> None:
        self._kill_timer.stop()
        self._terminate_timer.stop()
        self._read_output()
        self._read_errors()
        if self._buffer.strip():
            self._handle_line(self._buffer)
        self._buffer = b""
        if self._error_text.strip():
            self._stderr.append(self._error_text.decode("utf-8", "replace").strip())
        process, self._process = self._process, None
        if process is not None:
            process.deleteLater()
        if not self._ended:
            self._end_unexplained(exit_code, exit_status)
        self.finished.emit()

    def _end_unexplained(self, exit_code: int, exit_status: QProcess.ExitStatus) -> None:
        """The child ended without a closing event: a cancel that saved nothing, or a
        crash, explained with the last lines it wrote."""
        if self._cancelling and exit_code == EXIT_CANCELLED:
            self._ended = True
            self.cancelled.emit("")
            return
        if self._cancelling and exit_status == QProcess.ExitStatus.CrashExit:
            self._end_failed("The training was stopped before it could save a state.")
            return
        if exit_status == QProcess.ExitStatus.CrashExit:
            what = "The training process crashed"
        elif exit_code == 0:
            what = "The training process ended without finishing its file"
        else:
            what = f"The training process ended with status {exit_code}"
        tail = "\n".join(self._stderr)
        self._end_failed(f"{what}." + (f" Its last output:\n{tail}" if tail else ""))


def state_saved(state_dir: Path) -> bool:
    """Whether ``state_dir`` holds a complete state to resume from (a ``step-*`` folder
    with its ``state.json``, as the trainer writes them)."""
    with contextlib.suppress(OSError):
        return any((folder / "state.json").is_file() for folder in state_dir.glob("step-*"))
    return False
