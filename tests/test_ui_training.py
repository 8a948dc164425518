"""The app side of training: the child process's JSON events as signals, cancel and
crashes, the training window's command line, loss plot, samples and "Try it", and the
caption editor. A small Python script stands in for the trainer (real training is the
slow test at the end)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sdstudio.ui import training_process
from sdstudio.ui.training_process import TrainingProcess

FAKE_CHILD = r"""
import json, os, signal, sys, threading, time

mode, folder = sys.argv[1], sys.argv[2]

def say(**event):
    print(json.dumps(event), flush=True)

def stop(*_args):
    say(event="cancelled", path=os.path.join(folder, "step-000002"), step=2)
    os._exit(130)

def read_cancel():  # "slow" stops only on the line, "sigterm" only on SIGTERM
    if any(line.strip() == "cancel" for line in sys.stdin):
        stop()

signal.signal(signal.SIGTERM, {"deaf": signal.SIG_DFL, "sigterm": stop}.get(mode, signal.SIG_IGN))
threading.Thread(target=read_cancel, daemon=True).start() if mode == "slow" else None
print("a library's own line, not JSON", flush=True)
say(event="notice", message="Loading tiny…")
say(event="start", steps=4, start_step=0, epochs=1, images=3, skipped=[], device="cpu")
if mode == "crash":
    say(event="step", step=1, steps=4, loss=0.5, lr=1e-4, it_s=2.0, eta_s=1.5)
    print("Traceback (most recent call last):\nRuntimeError: out of memory", file=sys.stderr,
          flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "status":
    print("something went badly", file=sys.stderr, flush=True)
    sys.exit(3)
if mode in ("slow", "deaf", "sigterm"):
    step = 0
    while True:
        step += 1
        say(event="step", step=step, steps=4000, loss=1 / step, lr=1e-4, it_s=20.0, eta_s=99)
        time.sleep(0.02)
for step in range(1, 5):
    say(event="step", step=step, steps=4, loss=1.0 / step, lr=1e-4, it_s=25.0, eta_s=4 - step,
        future_field=True)
say(event="checkpoint", path=os.path.join(folder, "step-000002"), step=2)
say(event="sample", path=os.path.join(folder, "sample-step000004.png"), step=4)
say(event="something_new", value=1)
say(event="done", path=os.path.join(folder, "shapes.safetensors"), steps=4)
"""


@pytest.fixture
def fake_child(tmp_path: Path) -> tuple[Path, Path]:
    """The stand-in trainer script, and the folder its events point into (holding a
    real sample image)."""
    script = tmp_path / "fake_trainer.py"
    script.write_text(FAKE_CHILD, "utf-8")
    folder = tmp_path / "run"
    folder.mkdir()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(folder / "sample-step000004.png")
    return script, folder


def run_fake(qtbot: Any, process: TrainingProcess, fake: tuple[Path, Path], mode: str) -> None:
    script, folder = fake
    with qtbot.waitSignal(process.finished, timeout=10_000):
        process.start_program(sys.executable, [str(script), mode, str(folder)])


def record(process: TrainingProcess) -> list[tuple[str, Any]]:
    got: list[tuple[str, Any]] = []
    for name in ("started", "step", "sample", "checkpoint", "notice", "done", "cancelled"):
        getattr(process, name).connect(lambda value, name=name: got.append((name, value)))
    process.failed.connect(lambda message: got.append(("failed", message)))
    return got


def test_events_become_signals_and_unknown_ones_pass(qtbot: Any, fake_child: Any) -> None:
    process = TrainingProcess()
    got = record(process)
    events: list[dict[str, Any]] = []
    process.event.connect(events.append)
    run_fake(qtbot, process, fake_child, "ok")
    folder = fake_child[1]
    names = [name for name, _value in got]
    assert names == ["notice", "started", *["step"] * 4, "checkpoint", "sample", "done"]
    assert got[1][1]["images"] == 3 and got[1][1]["steps"] == 4
    assert [value["loss"] for name, value in got if name == "step"] == [1.0, 0.5, 1 / 3, 0.25]
    assert got[-1] == ("done", str(folder / "shapes.safetensors"))
    assert "something_new" in [event["event"] for event in events]
    assert not process.running


def test_cancel_writes_the_line_the_child_stops_on(qtbot: Any, fake_child: Any) -> None:
    process = TrainingProcess()
    got = record(process)
    script, folder = fake_child
    process.start_program(sys.executable, [str(script), "slow", str(folder)])
    qtbot.waitUntil(lambda: any(name == "step" for name, _v in got), timeout=10_000)
    with qtbot.waitSignal(process.finished, timeout=10_000):
        process.cancel()
    assert got[-1] == ("cancelled", str(folder / "step-000002"))
    assert "failed" not in [name for name, _v in got]


def test_a_child_that_ignores_the_cancel_is_killed(qtbot: Any, fake_child: Any) -> None:
    process = TrainingProcess(kill_after_ms=300)
    got = record(process)
    script, folder = fake_child
    process.start_program(sys.executable, [str(script), "deaf", str(folder)])
    qtbot.waitUntil(lambda: any(name == "step" for name, _v in got), timeout=10_000)
    with qtbot.waitSignal(process.finished, timeout=10_000):
        process.cancel()
    assert got[-1][0] in ("cancelled", "failed")  # SIGTERM's default ends it, or the kill
    assert not process.running


def test_a_crash_gives_a_failure_with_the_last_error_lines(qtbot: Any, fake_child: Any) -> None:
    process = TrainingProcess()
    got = record(process)
    run_fake(qtbot, process, fake_child, "crash")
    name, message = got[-1]
    assert name == "failed"
    assert message.startswith("The training process crashed.")
    assert "RuntimeError: out of memory" in message
    assert "not JSON" in message  # a stray line of output is kept with the errors


def test_a_failing_status_without_an_error_event_is_explained(qtbot: Any, fake_child: Any) -> None:
    process = TrainingProcess()
    got = record(process)
    run_fake(qtbot, process, fake_child, "status")
    assert got[-1][0] == "failed"
    assert "ended with status 3" in got[-1][1] and "something went badly" in got[-1][1]


def test_an_error_event_is_the_failure_message(qtbot: Any, tmp_path: Path) -> None:
    script = tmp_path / "error.py"
    message = "The dataset folder /x holds no image to train on."
    script.write_text(
        f"import json, sys\nprint(json.dumps({{'event': 'error', 'message': {message!r}}}))\n"
        "sys.exit(1)\n",
        "utf-8",
    )
    process = TrainingProcess()
    failures: list[str] = []
    process.failed.connect(failures.append)
    with qtbot.waitSignal(process.finished, timeout=10_000):
        process.start_program(sys.executable, [str(script)])
    assert failures == [message]


def test_a_program_that_cannot_start_fails_clearly(qtbot: Any, tmp_path: Path) -> None:
    process = TrainingProcess()
    failures: list[str] = []
    process.failed.connect(failures.append)
    with qtbot.waitSignal(process.finished, timeout=10_000):
        process.start_program(str(tmp_path / "no-such-program"), [])
    assert failures and failures[0].startswith("The training process could not be started")
    assert not process.running


def test_the_cli_runs_as_a_module_of_this_python(monkeypatch: pytest.MonkeyPatch) -> None:
    assert training_process.cli_command(["train", "lora"]) == (
        sys.executable,
        ["-m", "sdstudio.cli", "train", "lora"],
    )
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", "/nowhere/sdstudio")
    with pytest.raises(Exception, match="command line"):
        training_process.cli_command(["train"])


# The training window.


@pytest.fixture
def panel(qtbot: Any, tmp_path: Path) -> Any:
    from sdstudio.ui.prompt_panel import PromptPanel

    panel = PromptPanel()
    qtbot.addWidget(panel)
    model = tmp_path / "models" / "tiny-sd"
    panel.set_known_models([("tiny-sd", str(model), "sd1", "SD 1.x")])
    panel.set_model(str(model))
    panel.prompt.setPlainText("a red square")
    return panel


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Two captioned images, one without a caption, and a damaged file."""
    folder = tmp_path / "dataset"
    folder.mkdir()
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255), (0, 255, 0)]):
        Image.new("RGB", (64, 64), colour).save(folder / f"img{i}.png")
    (folder / "img0.txt").write_text("red, square\n", "utf-8")
    (folder / "img1.txt").write_text("blue, square\n", "utf-8")
    (folder / "broken.png").write_bytes(b"not a picture")
    return folder


@pytest.fixture
def dialog(qtbot: Any, paths: Any, panel: Any) -> Any:
    from sdstudio.ui.training_dialog import TrainingDialog

    rescans: list[int] = []
    dialog = TrainingDialog(paths, panel, lambda: rescans.append(1))
    dialog.rescans = rescans
    qtbot.addWidget(dialog)
    yield dialog
    dialog.shutdown()


def fill(dialog: Any, dataset: Path) -> None:
    form = dialog.form
    form.data.setText(str(dataset))
    form.name.setText("shapes")
    form.steps.setValue(4)
    form.dim.setValue(4)
    form.alpha.setValue(2)
    form.learning_rate.setValue(0.0005)
    form.resolution.setValue(64)
    form.batch.setValue(2)
    form.text_encoder.setChecked(True)
    form.sample_every.setValue(2)
    form.sample_prompt.setText("a square")
    form.save_every.setValue(2)
    form.device.setCurrentText("cpu")


def test_the_dialog_builds_the_cli_command(dialog: Any, dataset: Path, tmp_path: Path) -> None:
    fill(dialog, dataset)
    model = str(tmp_path / "models" / "tiny-sd")
    assert dialog.form.arguments() == [
        "train", "lora", "--model", model, "--data", str(dataset), "--name", "shapes",
        "--max-train-steps", "4", "--network-dim", "4", "--network-alpha", "2",
        "--learning-rate", "0.0005", "--resolution", "64", "--train-batch-size", "2",
        "--train-text-encoder", "--sample-every-n-steps", "2", "--sample-prompt", "a square",
        "--save-every-n-steps", "2", "--device", "cpu", "--json",
    ]  # fmt: skip
    dialog.form.sample_prompt.clear()
    assert not dialog.start()
    assert "sample prompt" in dialog.last_error
    dialog.form.name.setText("a/b")
    assert not dialog.start() and "plain file name" in dialog.last_error


def test_resume_is_offered_for_a_saved_state(dialog: Any, dataset: Path, paths: Any) -> None:
    fill(dialog, dataset)
    assert not dialog.resume_button.isEnabled()
    state = paths.data_dir / "training" / "shapes" / "step-000002"
    state.mkdir(parents=True)
    (state / "state.json").write_text("{}", "utf-8")
    dialog.form.name.setText("other")
    dialog.form.name.setText("shapes")
    assert dialog.resume_button.isEnabled()
    arguments = dialog.form.arguments(dialog.state_dir())
    assert arguments[-3:] == ["--resume", str(state.parent), "--json"]
    assert not dialog.start()  # starting afresh over the saved run asks first
    assert dialog.replace_box is not None and dialog.replace_box.isVisible()
    assert not dialog.process.running
    dialog.replace_box.reject()


def test_a_run_fills_plot_samples_and_try_it_puts_the_tag(
    qtbot: Any, dialog: Any, dataset: Path, fake_child: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    script, folder = fake_child
    commands: list[list[str]] = []

    def fake_command(arguments: list[str]) -> tuple[str, list[str]]:
        commands.append(list(arguments))
        return sys.executable, [str(script), "ok", str(folder)]

    monkeypatch.setattr(training_process, "cli_command", fake_command)
    fill(dialog, dataset)
    qtbot.waitUntil(lambda: dialog.summary is not None, timeout=5_000)
    assert (
        dialog.dataset_info.text()
        == "3 images, 2 with captions; 1 left out (unreadable or not used)"
    )
    with qtbot.waitSignal(dialog.process.finished, timeout=10_000):
        assert dialog.start()
        assert dialog.cancel_button.isEnabled() and not dialog.start_button.isEnabled()
    assert commands and commands[0][:2] == ["train", "lora"]
    assert dialog.plot.steps == [1, 2, 3, 4] and dialog.plot.losses[-1] == 0.25
    assert dialog.samples.count() == 1 and not dialog.samples.item(0).icon().isNull()
    assert dialog.figures.text().startswith("Step 4/4 · loss 0.2500")
    assert dialog.bar.value() == 4
    assert dialog.try_button.isEnabled() and dialog.rescans == [1]
    dialog.try_it()
    assert dialog.panel.prompt.toPlainText() == "a red square <lora:shapes:1>"
    dialog.try_it()  # a second click does not take it out again
    assert dialog.panel.prompt.toPlainText() == "a red square <lora:shapes:1>"
    dialog.grab()  # paints the plot with its points


def test_the_settings_are_remembered(qtbot: Any, dialog: Any, dataset: Path, paths: Any) -> None:
    from sdstudio.ui.training_dialog import TrainingDialog

    fill(dialog, dataset)
    dialog.close()
    again = TrainingDialog(paths, dialog.panel, lambda: None)
    qtbot.addWidget(again)
    assert again.form.values() == dialog.form.values()
    again.shutdown()


def test_the_loss_plot_keeps_points_and_restarts_on_resume(qtbot: Any) -> None:
    from sdstudio.ui.loss_plot import LossPlot, smoothed

    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.grab()  # empty: says what it will show
    for step, loss in [(1, 1.0), (2, 0.5), (3, float("nan")), (4, 0.25)]:
        plot.add_point(step, loss)
    assert plot.steps == [1, 2, 4]
    plot.add_point(2, 0.4)  # a run resumed from step 1
    assert plot.steps == [1, 2] and plot.losses == [1.0, 0.4]
    assert smoothed([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    assert plot.grab().width() > 0


def test_the_caption_editor_writes_the_txt(qtbot: Any, dataset: Path) -> None:
    from PySide6.QtCore import Qt

    from sdstudio.ui.caption_editor import CaptionEditor
    from sdstudio.ui.dataset_scan import summarize

    summary = summarize(str(dataset))
    editor = CaptionEditor(summary, None)
    qtbot.addWidget(editor)
    texts = [editor.images.item(row).text() for row in range(editor.images.count())]
    assert texts[:3] == ["img0.png", "img1.png", "img2.png"]
    assert "broken.png" in texts[3] and editor.images.item(3).flags() == Qt.ItemFlag.NoItemFlags
    assert editor.caption.toPlainText() == "red, square"
    editor.caption.setPlainText("red, square, shiny")
    assert editor.select(dataset / "img2.png")
    assert (dataset / "img0.txt").read_text("utf-8") == "red, square, shiny\n"
    assert editor.caption.toPlainText() == ""  # no caption yet
    editor.caption.setPlainText("green, square")
    editor.close()
    assert (dataset / "img2.txt").read_text("utf-8") == "green, square\n"
    assert (dataset / "img1.txt").read_text("utf-8") == "blue, square\n"  # untouched


@pytest.mark.slow
def test_a_real_tiny_run_through_the_window(
    qtbot: Any, paths: Any, tiny_model: Path, dataset: Path, sdstudio_home: Path
) -> None:
    from sdstudio.ui.prompt_panel import PromptPanel
    from sdstudio.ui.training_dialog import TrainingDialog

    panel = PromptPanel()
    qtbot.addWidget(panel)
    panel.set_model(str(tiny_model))
    dialog = TrainingDialog(paths, panel, lambda: None)
    qtbot.addWidget(dialog)
    fill(dialog, dataset)
    dialog.form.text_encoder.setChecked(False)
    dialog.form.batch.setValue(1)
    with qtbot.waitSignal(dialog.process.finished, timeout=120_000):
        assert dialog.start()
    assert dialog.last_error == ""
    assert Path(dialog.finished_path).is_file()
    assert len(dialog.plot.steps) == 4 and dialog.samples.count() == 2
    assert dialog.resume_button.isEnabled()  # the state saved at step 2
    dialog.try_it()
    assert "<lora:shapes:1>" in panel.prompt.toPlainText()
    assert json.loads((paths.config_dir / "training.json").read_text("utf-8"))["name"] == "shapes"
    dialog.shutdown()


@pytest.mark.qt_log_ignore("This plugin does not support raise")  # offscreen
def test_models_menu_opens_one_training_window(qtbot: Any, window: Any, paths: Any) -> None:
    from sdstudio.ui.training_actions import TrainingActions

    window.panel.set_model("/models/some-model.safetensors")
    window.menuBar().addMenu("&Models").addAction("Manage models…")
    rescans: list[int] = []
    actions = TrainingActions(window, paths, lambda: rescans.append(1))
    [menu] = [a.menu() for a in window.menuBar().actions() if a.text() == "&Models"]
    texts = [a.text() for a in menu.actions() if a.text()]
    assert texts == ["Manage models…", "Train a LoRA, embedding or model…"]
    actions.action.trigger()
    dialog = actions.dialog
    assert dialog is not None and dialog.isVisible() and not dialog.isModal()
    assert dialog.form.model_path() == "/models/some-model.safetensors"
    dialog.close()
    actions.action.trigger()
    assert actions.dialog is dialog and dialog.isVisible()
    dialog.rescan()
    assert rescans == [1]
    actions.shutdown()
