"""The queue panel, cancelling one job, reordering, keeping the queue over a quit, and
honest progress (pytest-qt, offscreen)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QDockWidget, QMessageBox, QToolButton

from sdstudio.engine.paths import AppPaths
from sdstudio.engine.queue_file import load_queue, save_queue
from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.ui.controller import GenerationController, Job
from sdstudio.ui.progress_status import ProgressStatus, denoising_steps, format_duration

LONG = 400
"""Steps of a job meant to be still running when the test acts on it."""


def fill(window, model: Path, **changes) -> None:
    request = GenerationRequest(
        model=str(model), prompt="a lighthouse", steps=3, width=64, height=64, seed=3
    ).replace(**changes)
    window.panel.load(request)


def queue_jobs(window, model: Path, *prompts: str, first_steps: int = LONG) -> list[int]:
    """A long first job, then one short job per prompt (queued behind it)."""
    fill(window, model, steps=first_steps, prompt="the long one")
    ids = [window.generate()]
    for prompt in prompts:
        fill(window, model, prompt=prompt)
        ids.append(window.generate())
    return ids


class Record:
    """The order jobs started and how each ended."""

    def __init__(self, controller: GenerationController) -> None:
        self.started: list[int] = []
        self.finished: list[int] = []
        self.cancelled: list[int] = []
        controller.job_started.connect(self.started.append)
        controller.finished.connect(lambda job, _paths: self.finished.append(job))
        controller.cancelled.connect(self.cancelled.append)
        controller.failed.connect(lambda job, message: pytest.fail(message))


def rows(window) -> list[str]:
    model = window.queue_panel.model
    return [model.data(model.index(row)) for row in range(model.rowCount())]


def button_for(window, action) -> QToolButton:
    [button] = [
        b for b in window.queue_panel.findChildren(QToolButton) if b.defaultAction() is action
    ]
    return button


@contextmanager
def another_window(qtbot, paths: AppPaths) -> Iterator:
    """A second start of the app over the same data folder."""
    from sdstudio.engine.history.library import ImageLibrary
    from sdstudio.ui.main_window import MainWindow
    from sdstudio.ui.worker import GenerationWorker

    library = ImageLibrary.open(paths.history_db, paths.outputs_dir)
    controller = GenerationController(GenerationWorker(library, paths, "cpu"))
    window = MainWindow(controller, library, paths)
    qtbot.addWidget(window)
    window.show()
    try:
        yield window
    finally:
        controller.shutdown()
        window.close()  # nothing queued now: it closes (and paints no more) at once
        assert not window.isVisible() and not controller.thread_running
        library.close()


# The queue panel


def test_the_queue_panel_lists_every_job_with_its_state(qtbot, window, tiny_model) -> None:
    dock = window.queue_panel
    assert isinstance(dock, QDockWidget) and dock.windowTitle() == "Queue"
    assert dock.isVisible() and not dock.isFloating()
    [view_menu] = [a.menu() for a in window.menuBar().actions() if a.text() == "&View"]
    assert dock.toggleViewAction() in view_menu.actions()
    assert dock.stack.currentWidget() is dock.empty
    queue_jobs(window, tiny_model, "a red boat " * 20)
    fill(window, tiny_model, prompt="a blue bird", batch_size=2, width=128)
    window.generate()
    assert dock.stack.currentWidget() is dock.view
    first, second, third = rows(window)
    assert first == "the long one\nStarting… · 64×64 · txt2img · 1 image"
    assert second.startswith("a red boat a red boat") and second.split("\n")[0].endswith("…")
    assert second.split("\n")[1] == "Next · 64×64 · txt2img · 1 image"
    assert third == "a blue bird\nWaiting · 128×64 · txt2img · 2 images"
    with qtbot.waitSignal(window.controller.progress, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: "\nStep " in rows(window)[0], timeout=10_000)
    assert f"/{LONG}" in rows(window)[0]
    window.controller.cancel_all()
    qtbot.waitUntil(lambda: rows(window) == [], timeout=60_000)
    assert dock.stack.currentWidget() is dock.empty


def test_the_window_with_the_queue_panel_fits_1280_by_800(window) -> None:
    window.resize(1280, 800)
    QTest.qWait(0)
    dock = window.queue_panel
    assert 90 <= dock.height() <= 260
    assert dock.width() >= 220
    assert window.gallery.height() >= 300
    assert window.canvas.width() >= 450
    assert window.panel.isVisible()


# Cancelling


def test_escape_cancels_only_the_running_job_and_the_queued_ones_then_run(
    qtbot, window, tiny_model
) -> None:
    record = Record(window.controller)
    long_one, second, third = queue_jobs(window, tiny_model, "second", "third")
    window.activateWindow()
    QTest.keyClick(window, Qt.Key.Key_Escape)
    assert window.controller.is_cancelling(long_one)
    assert "Cancelling…" in rows(window)[0]
    qtbot.waitUntil(lambda: len(record.finished) == 2, timeout=60_000)
    assert record.cancelled == [long_one]
    assert record.started == [long_one, second, third]
    assert record.finished == [second, third]


def test_the_cancel_button_cancels_only_the_running_job(qtbot, window, tiny_model) -> None:
    record = Record(window.controller)
    long_one, second = queue_jobs(window, tiny_model, "second")
    window.panel.cancel_requested.emit()
    qtbot.waitUntil(lambda: record.finished == [second], timeout=60_000)
    assert record.cancelled == [long_one]


def test_cancel_all_stops_the_running_job_and_drops_the_queue(qtbot, window, tiny_model) -> None:
    record = Record(window.controller)
    ids = queue_jobs(window, tiny_model, "second", "third")
    [action] = [a for a in window.actions() if a.text() == "Cancel all"]
    assert action.shortcut().toString() == "Shift+Esc"
    window.activateWindow()
    QTest.keyClick(window, Qt.Key.Key_Escape, Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: len(record.cancelled) == 3, timeout=60_000)
    assert sorted(record.cancelled) == sorted(ids)
    assert record.started == ids[:1] and record.finished == []
    assert window.progress.format() == "Cancelled"


def test_delete_drops_the_selected_waiting_job_only(qtbot, window, tiny_model) -> None:
    record = Record(window.controller)
    long_one, second, third = queue_jobs(window, tiny_model, "second", "third")
    panel = window.queue_panel
    panel.select_job(second)
    assert panel.cancel_action.text() == "Remove job"
    panel.view.setFocus()
    qtbot.waitUntil(panel.view.hasFocus)
    QTest.keyClick(panel.view, Qt.Key.Key_Delete)
    assert record.cancelled == [second]
    assert [job.id for job in window.controller.jobs] == [long_one, third]
    assert window.statusBar().currentMessage() == "Removed a job from the queue"
    window.controller.cancel(long_one)
    qtbot.waitUntil(lambda: record.finished == [third], timeout=60_000)
    assert record.started == [long_one, third]


def test_the_panel_can_stop_the_running_job(qtbot, window, tiny_model) -> None:
    record = Record(window.controller)
    long_one, second = queue_jobs(window, tiny_model, "second")
    panel = window.queue_panel
    panel.select_job(long_one)
    assert panel.cancel_action.text() == "Stop job"
    assert not panel.up_action.isEnabled() and not panel.down_action.isEnabled()
    qtbot.mouseClick(button_for(window, panel.cancel_action), Qt.MouseButton.LeftButton)
    assert not panel.cancel_action.isEnabled()  # already stopping
    qtbot.waitUntil(lambda: record.finished == [second], timeout=60_000)
    assert record.cancelled == [long_one]


# Reordering


def test_moving_waiting_jobs_changes_the_run_order(qtbot, window, tiny_model) -> None:
    record = Record(window.controller)
    long_one, b, c, d = queue_jobs(window, tiny_model, "b", "c", "d")
    panel = window.queue_panel
    panel.select_job(d)
    assert panel.up_action.isEnabled() and not panel.down_action.isEnabled()
    qtbot.mouseClick(button_for(window, panel.up_action), Qt.MouseButton.LeftButton)
    assert [job.id for job in window.controller.waiting] == [b, d, c]
    assert panel.selected_job().id == d  # the selection follows the job
    panel.select_job(b)
    assert not panel.up_action.isEnabled()
    panel.view.setFocus()
    qtbot.waitUntil(panel.view.hasFocus)
    QTest.keyClick(panel.view, Qt.Key.Key_Down, Qt.KeyboardModifier.ControlModifier)
    assert [job.id for job in window.controller.waiting] == [d, b, c]
    assert [row.split("\n")[0] for row in rows(window)] == ["the long one", "d", "b", "c"]
    panel.select_job(c)
    panel.first_action.trigger()
    assert [job.id for job in window.controller.waiting] == [c, d, b]
    assert not window.controller.move(long_one, 1)  # the running job stays
    assert not window.controller.move(c, -5)  # already first
    window.cancel()
    qtbot.waitUntil(lambda: len(record.finished) == 3, timeout=60_000)
    assert record.started == [long_one, c, d, b]
    assert record.finished == [c, d, b]


# Keeping the queue over a quit


@pytest.mark.slow
def test_closing_with_queued_jobs_keeps_them_and_the_next_start_runs_them(
    qtbot, window, tiny_model, paths
) -> None:
    long_one, _ = queue_jobs(window, tiny_model, "plain", first_steps=60)
    source = Image.new("RGB", (64, 64), (200, 40, 40))
    window.canvas.set_source(source)
    fill(window, tiny_model, prompt="from the source", strength=0.5, steps=4)
    assert window.generate() is not None
    [source_job] = [job for job in window.controller.waiting if job.inputs]
    init_image = Path(source_job.request.init_image or "")
    assert not init_image.exists()  # the worker writes it when the job runs

    window.close()
    box = window.queue_keeper.close_box
    assert isinstance(box, QMessageBox) and box.isVisible() and window.isVisible()
    assert "A job is running and 2 are waiting. Quit and keep the 3 queued jobs" in box.text()
    [keep] = [b for b in box.buttons() if b.text() == "Keep for next time"]
    assert box.defaultButton() is keep
    keep.click()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=10_000)

    saved = load_queue(paths.queue_file)
    assert [r.prompt for r in saved.requests] == ["the long one", "plain", "from the source"]
    assert saved.requests[2].mode is Mode.IMG2IMG
    assert Path(saved.requests[2].init_image or "").is_file()
    with Image.open(saved.requests[2].init_image or "") as kept:
        assert kept.convert("RGB").tobytes() == source.tobytes()
    assert long_one

    with another_window(qtbot, paths) as again:
        record = Record(again.controller)
        again.queue_keeper.offer_saved()
        offer = again.queue_keeper.offer_box
        assert isinstance(offer, QMessageBox) and offer.isVisible()
        assert offer.text() == "3 jobs were left in the queue when sdstudio closed. Run them now?"
        assert "from the source (64×64 · img2img · 1 image)" in offer.detailedText()
        assert again.controller.jobs == []  # nothing runs before the answer
        [run] = [b for b in offer.buttons() if b.text() == "Run"]
        run.click()
        assert not paths.queue_file.exists()
        qtbot.waitUntil(lambda: len(record.finished) == 3, timeout=120_000)
        assert record.cancelled == []


def test_closing_can_discard_the_queue_or_be_called_off(qtbot, window, tiny_model, paths) -> None:
    queue_jobs(window, tiny_model, "second")
    window.close()
    box = window.queue_keeper.close_box
    assert box is not None
    box.button(QMessageBox.StandardButton.Cancel).click()
    qtbot.waitUntil(lambda: window.queue_keeper.close_box is None)
    QTest.qWait(20)
    assert window.isVisible() and len(window.controller.jobs) == 2  # still queued
    window.close()
    box = window.queue_keeper.close_box
    assert box is not None
    [discard] = [b for b in box.buttons() if b.text() == "Discard"]
    discard.click()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=10_000)
    assert not paths.queue_file.exists()


def test_closing_with_an_empty_queue_asks_nothing(qtbot, window, paths) -> None:
    window.close()
    assert not window.isVisible() and window.queue_keeper.close_box is None
    assert not paths.queue_file.exists()


def test_jobs_offered_and_not_answered_are_not_lost_by_quitting(qtbot, window, paths) -> None:
    kept = [GenerationRequest(model="m", prompt=f"job {i}", steps=2) for i in range(2)]
    save_queue(paths.queue_file, kept)
    window.queue_keeper.offer_saved()
    assert window.queue_keeper.offer_box is not None
    window.close()  # nothing queued now: no question, and the file stays
    assert not window.isVisible()
    assert load_queue(paths.queue_file).requests == tuple(kept)


def test_discarding_the_offer_forgets_the_kept_jobs(qtbot, window, paths) -> None:
    save_queue(paths.queue_file, [GenerationRequest(model="m", prompt="old", steps=2)])
    window.queue_keeper.offer_saved()
    box = window.queue_keeper.offer_box
    assert box is not None and box.text().startswith("1 job was left in the queue")
    [discard] = [b for b in box.buttons() if b.text() == "Discard"]
    discard.click()
    assert not paths.queue_file.exists() and window.controller.jobs == []


def test_a_damaged_queue_file_is_reported_and_set_aside(window, paths) -> None:
    paths.queue_file.parent.mkdir(parents=True, exist_ok=True)
    paths.queue_file.write_bytes(b'{"version": 1, "jobs": [{"model": ')
    window.queue_keeper.offer_saved()
    assert "The jobs kept from last time could not be read" in window.last_error
    assert "set aside as queue.json.bad" in window.last_error
    assert window.queue_keeper.offer_box is None
    assert not paths.queue_file.exists()
    assert paths.queue_file.with_name("queue.json.bad").exists()


def test_unreadable_kept_jobs_are_left_out_and_counted(window, paths) -> None:
    good = GenerationRequest(model="m", prompt="good", steps=2).to_dict()
    jobs = [good, {**good, "width": 7}, {**good, "prompt": "also good"}]
    paths.queue_file.parent.mkdir(parents=True, exist_ok=True)
    paths.queue_file.write_text(json.dumps({"version": 1, "jobs": jobs}), "utf-8")
    window.queue_keeper.offer_saved()
    box = window.queue_keeper.offer_box
    assert box is not None
    assert box.text().startswith("2 jobs were left in the queue")
    assert "1 of the 3 jobs kept from last time could not be read and was left out" in box.text()
    assert window.queue_keeper.offered == tuple(
        GenerationRequest.from_dict(job) for job in (jobs[0], jobs[2])
    )


def test_only_unreadable_kept_jobs_are_reported_and_forgotten(window, paths) -> None:
    paths.queue_file.parent.mkdir(parents=True, exist_ok=True)
    paths.queue_file.write_text(json.dumps({"version": 1, "jobs": [{"steps": 0}]}), "utf-8")
    window.queue_keeper.offer_saved()
    assert "1 of the 1 job kept from last time could not be read" in window.last_error
    assert window.queue_keeper.offer_box is None and not paths.queue_file.exists()


# Progress and time left


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def job(job_id: int, **changes) -> Job:
    request = GenerationRequest(model="m", prompt="p", steps=10, width=512, height=512)
    return Job(job_id, request.replace(**changes))


def test_speed_and_time_left_exclude_loading_and_count_the_waiting_jobs(
    window, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = job(1)
    waiting = [
        job(2, steps=20),
        job(3, steps=20, mode=Mode.IMG2IMG, init_image="x.png", strength=0.5, batch_size=2),
        job(4, steps=10, width=1024, height=512),
    ]
    monkeypatch.setattr(GenerationController, "running", property(lambda self: running))
    monkeypatch.setattr(GenerationController, "waiting", property(lambda self: list(waiting)))
    clock = FakeClock()
    window.progress_status.clock = clock
    window._on_job_started(1)
    window.controller.status.emit(1, "Loading tiny-sd…")
    assert window.statusBar().currentMessage() == "Loading tiny-sd…"
    clock.now += 30.0  # loading the model
    window._on_progress(1, 1, 10, 0, 1, None)
    assert window.progress_label.text() == ""  # one step says nothing about speed
    assert window.statusBar().currentMessage() == ""  # the loading message went
    assert window.progress.format() == "step 1/10"
    clock.now += 0.5
    window._on_progress(1, 2, 10, 0, 1, None)
    # this job: 8 steps left at 0.5 s = 4 s; job 2: 20 steps = 10 s; job 3: 10 steps x 2
    # images = 10 s; job 4: 10 steps at twice the pixels = 10 s.
    assert window.progress_label.text() == "2.00 it/s · 4 s left (4 jobs: 34 s)"
    clock.now += 2.5
    window._on_progress(1, 3, 10, 0, 1, None)
    assert window.progress_label.text().startswith("1.5 s/it · 10 s left (4 jobs: 2 min)")
    waiting.pop()
    window._on_queue_changed(2)
    assert window.queue_label.text() == "2 queued"
    assert window.progress_label.text() == "1.5 s/it · 10 s left (3 jobs: 1 min)"


def test_a_note_from_the_worker_stays_a_while_after_the_steps_start(window) -> None:
    window._on_job_started(1)
    window.controller.status.emit(1, "The mask was resized to the image.")
    window._on_progress(1, 1, 10, 0, 1, None)
    assert window.statusBar().currentMessage() == "The mask was resized to the image."


def test_steps_between_images_of_a_batch_do_not_count() -> None:
    from PySide6.QtWidgets import QStatusBar

    class Queue:
        def __init__(self) -> None:
            self.running = job(1, batch_size=2)
            self.waiting: list[Job] = []

    bar = QStatusBar()
    clock = FakeClock()
    queue = Queue()
    status = ProgressStatus(queue, bar, clock)
    status.start(queue.running)
    for index in range(2):
        for step in range(1, 11):
            clock.now += 40.0 if step == 1 else 1.0  # decoding and saving between images
            status.step(1, step, 10, index, 2)
            if index == 1 and step == 1:
                assert status.seconds_per_step == pytest.approx(1.0)
    assert status.seconds_per_step == pytest.approx(1.0)
    assert status.bar.format() == "image 2/2 · step 10/10"
    status.end("Done")
    assert (status.bar.format(), status.label.text()) == ("Done", "")


def test_a_real_run_shows_speed_only_from_the_second_step_and_clears_loading(
    qtbot, window, tiny_model
) -> None:
    fill(window, tiny_model, steps=6)
    notes: list[str] = []
    seen: list[tuple[int, str, str]] = []
    window.controller.status.connect(lambda job, message: notes.append(message))
    window.controller.progress.connect(
        lambda job, step, *rest: seen.append(
            (step, window.progress_label.text(), window.statusBar().currentMessage())
        )
    )
    with qtbot.waitSignal(window.controller.finished, timeout=60_000):
        window.generate()
    assert any(note.startswith("Loading") for note in notes)
    assert seen[0][1] == ""
    assert all("left" in label for step, label, _ in seen[1:])
    assert not any(message.startswith("Loading") for _, _, message in seen)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.2, "0 s"),
        (14.4, "14 s"),
        (59.4, "59 s"),
        (59.6, "1 min"),
        (150, "2 min"),
        (3900, "1 h 5 min"),
    ],
)
def test_durations_read_naturally(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_image_to_image_takes_the_strength_part_of_the_steps() -> None:
    assert denoising_steps(job(1, steps=30).request) == 30
    request = job(1, steps=30, mode=Mode.IMG2IMG, init_image="x.png", strength=0.55).request
    assert denoising_steps(request) == 16
