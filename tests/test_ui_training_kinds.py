"""The training window's kinds of run: a LoRA, an embedding, or DreamArtist's pair of
embeddings: the fields each shows, the command line, the state folder to resume from,
the learning rate's default, and "Try it"; and a cancel that falls back to terminating
a child that does not read the ``cancel`` line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from sdstudio.ui import training_process
from sdstudio.ui.training_process import TrainingProcess
from tests import test_ui_training as window_tests

# The window's fixtures: a prompt panel, a small dataset, the dialog and the stand-in trainer.
panel = window_tests.panel
dataset = window_tests.dataset
dialog = window_tests.dialog
fake_child = window_tests.fake_child


def fill_embedding(dialog: Any, dataset: Path, kind: str = "embedding") -> None:
    window_tests.fill(dialog, dataset)
    form = dialog.form
    form.set_kind(kind)
    form.vectors.setValue(3)
    form.init_text.setText("red shape")
    form.template_kind.setCurrentText("style")
    form.dreamartist_cfg.setValue(3)


def test_the_kind_shows_its_fields_and_moves_the_default_learning_rate(dialog: Any) -> None:
    form = dialog.form
    lora_only = (form.dim, form.alpha, form.text_encoder)
    embedding_only = (form.vectors, form.init_text, form.template_kind, form.overwrite)
    assert form.run_kind() == "lora" and form.learning_rate.value() == pytest.approx(1e-4)
    assert not any(w.isHidden() for w in lora_only)
    assert all(w.isHidden() for w in (*embedding_only, form.dreamartist_cfg))
    assert dialog.windowTitle() == "Train a LoRA, embedding, hypernetwork or model"

    form.set_kind("embedding")
    assert all(w.isHidden() for w in (*lora_only, form.dreamartist_cfg))
    assert not any(w.isHidden() for w in embedding_only)
    assert form.learning_rate.value() == pytest.approx(5e-3)
    assert dialog.try_button.toolTip() == "Put NAME into the prompt"
    form.set_kind("dreamartist")
    assert not form.dreamartist_cfg.isHidden() and not form.vectors.isHidden()
    assert form.learning_rate.value() == pytest.approx(5e-3)
    assert "NAME-neg" in dialog.try_button.toolTip()
    form.set_kind("lora")
    assert form.learning_rate.value() == pytest.approx(1e-4)

    form.learning_rate.setValue(0.0003)  # the user's own rate stays through kind changes
    form.set_kind("embedding")
    assert form.learning_rate.value() == pytest.approx(3e-4)
    form.set_kind("lora")
    assert form.learning_rate.value() == pytest.approx(3e-4)


def test_embedding_command_lines(dialog: Any, dataset: Path, tmp_path: Path) -> None:
    fill_embedding(dialog, dataset)
    model = str(tmp_path / "models" / "tiny-sd")
    common = ["--model", model, "--data", str(dataset), "--name", "shapes"]
    embedding = ["--num-vectors", "3", "--init-text", "red shape", "--template-kind", "style"]
    run = ["--learning-rate", "0.0005", "--resolution", "64", "--train-batch-size", "2"]
    tail = ["--sample-every-n-steps", "2", "--sample-prompt", "a square"]
    tail += ["--save-every-n-steps", "2", "--device", "cpu", "--json"]
    steps = ["--max-train-steps", "4"]
    assert dialog.form.arguments() == [
        "train", "embedding", *common, *steps, *embedding, *run, *tail
    ]  # fmt: skip
    dialog.form.set_kind("dreamartist")
    dialog.form.overwrite.setChecked(True)
    pair = ["--dreamartist", "--dreamartist-cfg", "3"]
    assert dialog.form.arguments() == [
        "train", "embedding", *common, *steps, *embedding, *pair, *run, "--overwrite", *tail
    ]  # fmt: skip
    dialog.form.name.setText("two words")
    assert not dialog.start() and "the word a prompt uses" in dialog.last_error
    dialog.form.name.setText("")
    assert not dialog.start() and "Give the embedding a name" in dialog.last_error


def test_an_embedding_resumes_from_the_clis_embedding_states(
    dialog: Any, dataset: Path, paths: Any
) -> None:
    fill_embedding(dialog, dataset)
    lora_state = paths.data_dir / "training" / "shapes" / "step-000002"
    lora_state.mkdir(parents=True)
    (lora_state / "state.json").write_text("{}", "utf-8")
    dialog.form.name.setText("shapes")
    assert not dialog.resume_button.isEnabled()  # a LoRA's state of that name is not it
    assert dialog.state_dir() == paths.data_dir / "training" / "embeddings" / "shapes"
    state = dialog.state_dir() / "step-000002"
    state.mkdir(parents=True)
    (state / "state.json").write_text("{}", "utf-8")
    dialog.form.set_kind("dreamartist")
    assert dialog.resume_button.isEnabled()
    arguments = dialog.form.arguments(dialog.state_dir())
    assert arguments[:2] == ["train", "embedding"]
    assert arguments[-3:] == ["--resume", str(state.parent), "--json"]


@pytest.mark.parametrize(
    ("kind", "prompt", "negative"),
    [
        ("embedding", "a red square shapes", "blurry"),
        ("dreamartist", "a red square shapes", "blurry shapes-neg"),
    ],
)
def test_try_it_puts_the_embeddings_into_the_prompts(
    qtbot: Any,
    dialog: Any,
    dataset: Path,
    fake_child: Any,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    prompt: str,
    negative: str,
) -> None:
    script, folder = fake_child
    commands: list[list[str]] = []

    def fake_command(arguments: list[str]) -> tuple[str, list[str]]:
        commands.append(list(arguments))
        return sys.executable, [str(script), "ok", str(folder)]

    monkeypatch.setattr(training_process, "cli_command", fake_command)
    fill_embedding(dialog, dataset, kind)
    dialog.panel.negative.setPlainText("blurry")
    with qtbot.waitSignal(dialog.process.finished, timeout=10_000):
        assert dialog.start()
    assert commands[0][:2] == ["train", "embedding"]
    assert ("--dreamartist" in commands[0]) == (kind == "dreamartist")
    dialog.form.set_kind("lora")  # what "Try it" puts in is the finished run's kind
    assert dialog.try_button.isEnabled() and dialog.rescans == [1]
    for _click in range(2):  # a second click leaves the prompts as they are
        dialog.try_it()
        assert dialog.panel.prompt.toPlainText() == prompt
        assert dialog.panel.negative.toPlainText() == negative
    assert dialog.rescans == [1, 1, 1]
    assert "shapes" in dialog.status.text() and "<lora:" not in dialog.status.text()


def test_the_kind_and_embedding_fields_are_remembered(
    qtbot: Any, dialog: Any, dataset: Path, paths: Any
) -> None:
    from sdstudio.ui.training_dialog import TrainingDialog

    fill_embedding(dialog, dataset, "dreamartist")
    dialog.close()
    again = TrainingDialog(paths, dialog.panel, lambda: None)
    qtbot.addWidget(again)
    assert again.form.values() == dialog.form.values()
    assert again.form.run_kind() == "dreamartist" and again.form.vectors.value() == 3
    assert again.form.learning_rate.value() == pytest.approx(5e-4)  # not the kind's default
    again.shutdown()


def test_a_child_that_reads_no_input_is_terminated(qtbot: Any, fake_child: Any) -> None:
    process = TrainingProcess(terminate_after_ms=200)
    got = window_tests.record(process)
    script, folder = fake_child
    process.start_program(sys.executable, [str(script), "sigterm", str(folder)])
    qtbot.waitUntil(lambda: any(name == "step" for name, _v in got), timeout=10_000)
    with qtbot.waitSignal(process.finished, timeout=10_000):
        process.cancel()
    assert got[-1] == ("cancelled", str(folder / "step-000002"))


@pytest.mark.slow
def test_a_real_tiny_dreamartist_run_through_the_window(
    qtbot: Any, paths: Any, tiny_model: Path, dataset: Path, sdstudio_home: Path
) -> None:
    from sdstudio.ui.prompt_panel import PromptPanel
    from sdstudio.ui.training_dialog import TrainingDialog

    panel = PromptPanel()
    qtbot.addWidget(panel)
    panel.set_model(str(tiny_model))
    dialog = TrainingDialog(paths, panel, lambda: None)
    qtbot.addWidget(dialog)
    fill_embedding(dialog, dataset, "dreamartist")
    dialog.form.batch.setValue(1)
    dialog.form.learning_rate.setValue(0.05)
    with qtbot.waitSignal(dialog.process.finished, timeout=120_000):
        assert dialog.start()
    assert dialog.last_error == ""
    folder = paths.models_dir / "embeddings"
    assert Path(dialog.finished_path) == folder / "shapes.safetensors"
    assert (folder / "shapes-neg.safetensors").is_file()
    assert dialog.resume_button.isEnabled()  # the state saved at step 2, in embeddings/
    dialog.try_it()
    assert panel.prompt.toPlainText().endswith("shapes")
    assert panel.negative.toPlainText().endswith("shapes-neg")
    dialog.shutdown()
