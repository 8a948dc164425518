"""Training and generating take turns on the device: a training run waits for the
generations queued before it, the queue holds its jobs while the run goes on (the
worker's models let go first), and goes on when the run ends however it ends.

A worker whose jobs end when the test opens a gate stands in for generation, and a
small Python script for the trainer (see tests/test_ui_training.py)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sdstudio.engine.request import GenerationRequest
from sdstudio.ui import training_process
from sdstudio.ui.controller import GenerationController
from sdstudio.ui.device_share import HOLD_REASON, DeviceShare
from sdstudio.ui.training_process import TrainingProcess
from sdstudio.ui.worker import GenerationWorker
from tests import test_ui_training as window_tests

panel = window_tests.panel
dataset = window_tests.dataset
fake_child = window_tests.fake_child


class FakeStage:
    """A part of the engine that holds a model: its unload is recorded."""

    def __init__(self, calls: list[str], name: str) -> None:
        self.calls, self.name = calls, name

    def unload(self) -> None:
        self.calls.append(self.name)

    def use_device(self, config: Any) -> None:
        """The device of the next job (one device here: nothing to switch)."""


class GatedEngine:
    """Generates nothing, ending each job once the test lets one through the gate (or a
    cancel does)."""

    def __init__(self, gate: threading.Semaphore, ran: list[str]) -> None:
        self.gate, self.ran = gate, ran
        self.unloaded: list[str] = []
        self.refiner = FakeStage(self.unloaded, "refiner")
        self.pipelines = FakeStage(self.unloaded, "pipelines")
        self.tiny_vaes = SimpleNamespace(mode="auto")

    def generate(self, request: GenerationRequest, **_kwargs: Any) -> Iterator[Any]:
        self.ran.append(request.prompt)
        self.gate.acquire(timeout=10)
        yield from ()


class GatedWorker(GenerationWorker):
    """The real worker over :class:`GatedEngine` (made again after a ``free_memory``)."""

    def __init__(self, paths: Any) -> None:
        super().__init__(library=None, paths=paths)  # type: ignore[arg-type]
        self.gate = threading.Semaphore(0)
        self.ran: list[str] = []

    def cancel(self, job_id: int) -> None:
        super().cancel(job_id)
        self.gate.release()

    def _ensure_engine(self) -> Any:
        if self._engine is None:
            self._engine = GatedEngine(self.gate, self.ran)
        return self._engine


@pytest.fixture
def controller(paths: Any) -> Iterator[GenerationController]:
    worker = GatedWorker(paths)
    controller = GenerationController(worker)
    yield controller
    for _job in controller.jobs:
        worker.gate.release()
    controller.shutdown()
    assert not controller.thread_running


def job(prompt: str = "a red square") -> GenerationRequest:
    return GenerationRequest(model="tiny", prompt=prompt, steps=2)


def use_fake_trainer(monkeypatch: pytest.MonkeyPatch, fake: Any, mode: str) -> list[list[str]]:
    script, folder = fake
    commands: list[list[str]] = []

    def fake_command(arguments: list[str]) -> tuple[str, list[str]]:
        commands.append(list(arguments))
        return sys.executable, [str(script), mode, str(folder)]

    monkeypatch.setattr(training_process, "cli_command", fake_command)
    return commands


@pytest.mark.parametrize("ending", ["cancel", "crash"])
def test_jobs_wait_while_a_training_run_goes_on_and_run_after(
    qtbot: Any,
    controller: GenerationController,
    fake_child: Any,
    monkeypatch: pytest.MonkeyPatch,
    ending: str,
) -> None:
    use_fake_trainer(monkeypatch, fake_child, "slow")
    worker: Any = controller._worker
    share = DeviceShare(controller)
    process = TrainingProcess()
    freed: list[int] = []
    controller.memory_freed.connect(lambda: freed.append(1))
    started: list[int] = []
    controller.job_started.connect(started.append)
    notes: list[tuple[int, str]] = []
    controller.status.connect(lambda job_id, text: notes.append((job_id, text)))

    share.ready.connect(lambda: share.launch(process, ["train", "lora", "--json"]))
    with qtbot.waitSignal(share.launched, timeout=5_000):
        assert share.request()
        assert share.pending and controller.hold_reason == HOLD_REASON
    assert freed == [1]  # the worker let go of its models before the child started
    assert process.running and not share.pending and share.busy
    job_id = controller.submit(job())
    qtbot.wait(100)
    assert started == [] and controller.running is None and worker.ran == []
    assert notes == [(job_id, HOLD_REASON)]
    assert not share.request()  # one run at a time
    with pytest.raises(RuntimeError):
        share.launch(process, ["train", "lora", "--json"])

    with qtbot.waitSignal(controller.job_started, timeout=10_000):
        if ending == "cancel":
            process.cancel()
        else:
            process._process.kill()  # type: ignore[union-attr]
    assert started == [job_id] and not process.running and not share.busy
    assert controller.hold_reason == ""
    with qtbot.waitSignal(controller.finished, timeout=5_000):
        worker.gate.release()


def test_a_training_run_waits_for_the_generations_queued_before_it(
    qtbot: Any,
    controller: GenerationController,
    fake_child: Any,
    monkeypatch: pytest.MonkeyPatch,
    paths: Any,
    panel: Any,
    dataset: Path,
) -> None:
    from sdstudio.ui.training_dialog import TrainingDialog

    commands = use_fake_trainer(monkeypatch, fake_child, "ok")
    worker: Any = controller._worker
    dialog = TrainingDialog(paths, panel, lambda: None, None, DeviceShare(controller))
    qtbot.addWidget(dialog)
    window_tests.fill(dialog, dataset)
    first, second = controller.submit(job("one")), controller.submit(job("two"))
    order: list[str] = []
    controller.finished.connect(lambda job_id, _paths: order.append(f"job {job_id}"))
    dialog.share.launched.connect(lambda: order.append("training"))

    assert dialog.start()
    assert dialog.status.text().startswith("Waiting for 2 generations to finish…")
    assert not dialog.process.running and commands == []
    assert dialog.cancel_button.isEnabled() and not dialog.start_button.isEnabled()
    assert not dialog.start()  # already waiting
    with qtbot.waitSignal(controller.finished, timeout=5_000):
        worker.gate.release()
    assert dialog.status.text().startswith("Waiting for 1 generation to finish…")
    engine = worker._engine
    third = controller.submit(job("three"))  # queued while the run waits: it runs first
    with qtbot.waitSignal(dialog.process.finished, timeout=10_000):
        worker.gate.release()
        qtbot.waitUntil(lambda: len(order) == 2, timeout=5_000)
        worker.gate.release()
    assert order == [f"job {first}", f"job {second}", f"job {third}", "training"]
    assert engine.unloaded == ["refiner", "pipelines"]  # let go before the child started
    assert commands and commands[0][:2] == ["train", "lora"]
    assert dialog.finished_path and dialog.try_button.isEnabled()
    assert controller.hold_reason == ""  # the queue goes on after the run
    with qtbot.waitSignal(controller.finished, timeout=5_000):
        controller.submit(job("after"))
        worker.gate.release()
    dialog.shutdown()


def test_a_waiting_run_can_be_given_up(
    qtbot: Any,
    controller: GenerationController,
    fake_child: Any,
    monkeypatch: pytest.MonkeyPatch,
    paths: Any,
    panel: Any,
    dataset: Path,
) -> None:
    from sdstudio.ui.training_dialog import TrainingDialog

    commands = use_fake_trainer(monkeypatch, fake_child, "ok")
    worker: Any = controller._worker
    dialog = TrainingDialog(paths, panel, lambda: None, None, DeviceShare(controller))
    qtbot.addWidget(dialog)
    window_tests.fill(dialog, dataset)
    controller.submit(job())
    assert dialog.start() and dialog.share.pending
    dialog.cancel()
    assert not dialog.share.pending and dialog.start_button.isEnabled()
    assert dialog.status.text().startswith("Not started")
    with qtbot.waitSignal(controller.idle, timeout=5_000):
        worker.gate.release()
    qtbot.wait(50)
    assert commands == [] and not dialog.process.running and controller.hold_reason == ""
    dialog.shutdown()


def test_the_queue_panel_says_why_jobs_wait(qtbot: Any, controller: GenerationController) -> None:
    from sdstudio.ui.queue_panel import QueueModel

    model = QueueModel(controller)
    controller.hold(HOLD_REASON)
    controller.submit(job("held"))
    text = model.data(model.index(0))
    assert text.startswith("held\n" + HOLD_REASON)
    with qtbot.waitSignal(controller.job_started, timeout=5_000):
        controller.release()
    assert not model.data(model.index(0)).startswith("held\n" + HOLD_REASON)
    controller._worker.gate.release()  # type: ignore[attr-defined]


def test_the_worker_lets_go_of_its_models(qtbot: Any, paths: Any) -> None:
    calls: list[str] = []
    worker = GenerationWorker(None, paths)  # type: ignore[arg-type]
    engine = type("Engine", (), {})()
    engine.refiner = FakeStage(calls, "refiner")
    engine.pipelines = FakeStage(calls, "pipelines")
    worker._engine = engine
    with qtbot.waitSignal(worker.memory_freed, timeout=1_000):
        worker.free_memory()
    assert calls == ["refiner", "pipelines"] and worker._engine is None
    with qtbot.waitSignal(worker.memory_freed, timeout=1_000):
        worker.free_memory()  # nothing loaded: still answers


def test_dreambooths_memory_is_checked_once_the_generations_let_go(
    qtbot: Any,
    controller: GenerationController,
    fake_child: Any,
    monkeypatch: pytest.MonkeyPatch,
    paths: Any,
    panel: Any,
    dataset: Path,
) -> None:
    from sdstudio.ui import training_dialog
    from sdstudio.ui.training_dialog import TrainingDialog

    commands = use_fake_trainer(monkeypatch, fake_child, "ok")
    worker: Any = controller._worker
    seen: list[tuple[str, bool]] = []

    def verdict(_form: Any) -> Any:
        seen.append((controller.hold_reason, worker._engine is None))
        return type("Verdict", (), {"enough": True, "message": "Enough memory."})()

    monkeypatch.setattr(training_dialog, "dreambooth_verdict", verdict)
    dialog = TrainingDialog(paths, panel, lambda: None, None, DeviceShare(controller))
    qtbot.addWidget(dialog)
    window_tests.fill(dialog, dataset)
    dialog.form.set_kind("dreambooth")
    with qtbot.waitSignal(controller.finished, timeout=5_000):
        controller.submit(job())  # loads the (stand-in) engine
        worker.gate.release()
    assert worker._engine is not None
    with qtbot.waitSignal(dialog.process.finished, timeout=10_000):
        assert dialog.start()
    assert seen == [(HOLD_REASON, True)]  # asked with the queue held and the models gone
    assert commands[0][:2] == ["train", "dreambooth"] and "--skip-memory-check" not in commands[0]
    dialog.shutdown()


@pytest.mark.qt_log_ignore("This plugin does not support raise")  # offscreen
def test_the_apps_training_window_shares_the_generation_queue(window: Any, paths: Any) -> None:
    from sdstudio.ui.training_actions import TrainingActions

    actions = TrainingActions(window, paths, lambda: None, controller=window.controller)
    dialog = actions.open()
    assert dialog.share.controller is window.controller
    assert dialog.share.generations_ahead() == 0 and not dialog.share.busy
    actions.shutdown()
