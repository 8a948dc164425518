"""The training window's hypernetwork and DreamBooth runs: their fields, command lines
(taken by the CLI's own parser), remembered settings and "Try it" (a hypernetwork's tag
in the prompt, the DreamBooth model chosen), and DreamBooth's memory verdict, asked
about before a run the device may not have the memory for."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from sdstudio.ui import training_process
from tests import test_ui_training as window_tests
from tests.test_ui_training_kinds import fill_embedding

# The window's fixtures: a prompt panel, a small dataset, the dialog and the stand-in trainer.
panel = window_tests.panel
dataset = window_tests.dataset
dialog = window_tests.dialog
fake_child = window_tests.fake_child


def fill_hypernetwork(dialog: Any, dataset: Path) -> None:
    window_tests.fill(dialog, dataset)
    dialog.form.set_kind("hypernetwork")
    fields = dialog.form.hypernetwork
    fields.layer_structure.setText("1, 1.5, 1")
    fields.activation.setCurrentText("swish")
    fields.layer_norm.setChecked(True)
    fields.dropout.setText("0,0.1,0")
    fields.weight_init.setCurrentText("KaimingNormal")
    fields.sizes.setText("320,768")


def fill_dreambooth(dialog: Any, dataset: Path, tmp_path: Path) -> None:
    window_tests.fill(dialog, dataset)  # "Train the text encoder too" is checked
    form = dialog.form
    form.set_kind("dreambooth")
    fields = form.dreambooth
    fields.class_prompt.setText("a photo of a shape")
    (tmp_path / "class").mkdir(exist_ok=True)
    fields.reg_data.setText(str(tmp_path / "class"))
    fields.class_images.setValue(50)
    fields.prior_weight.setValue(0.5)
    fields.text_encoder_lr.setValue(0.000002)
    fields.save_precision.setCurrentText("bf16")
    form.memory.precision.setCurrentText("fp16")
    form.memory.checkpointing.setChecked(True)
    form.memory.optimizer.setCurrentText("AdamW8bit")


def test_hypernetwork_fields_and_command_line(dialog: Any, dataset: Path, tmp_path: Path) -> None:
    form = dialog.form
    fill_hypernetwork(dialog, dataset)
    hyper = form.hypernetwork
    assert not any(form._layout.isRowVisible(row) is False for row in hyper.rows)
    assert all(w.isHidden() for w in (form.dim, form.vectors, form.dreambooth.class_prompt))
    assert not form.overwrite.isHidden() and "hypernetwork" in form.overwrite.text()
    assert form.learning_rate.value() == pytest.approx(0.0005)  # the user's own rate stays
    model = str(tmp_path / "models" / "tiny-sd")
    common = ["--model", model, "--data", str(dataset), "--name", "shapes"]
    own = ["--layer-structure", "1,1.5,1", "--activation", "swish", "--layer-norm"]
    own += ["--dropout", "0,0.1,0", "--weight-init", "KaimingNormal", "--sizes", "320,768"]
    run = ["--learning-rate", "0.0005", "--resolution", "64", "--train-batch-size", "2"]
    tail = ["--sample-every-n-steps", "2", "--sample-prompt", "a square"]
    tail += ["--save-every-n-steps", "2", "--device", "cpu", "--json"]
    steps = ["--max-train-steps", "4"]
    assert form.arguments() == ["train", "hypernetwork", *common, *steps, *own, *run, *tail]
    hyper.template.setText(str(tmp_path / "template.txt"))
    form.overwrite.setChecked(True)
    arguments = form.arguments()
    assert arguments[arguments.index("--template") + 1] == str(tmp_path / "template.txt")
    assert "--overwrite" in arguments and "--train-text-encoder" not in arguments
    assert dialog.state_dir() == dialog.paths.data_dir / "training" / "hypernetworks" / "shapes"
    hyper.dropout.setText("0, a lot, 0")
    assert not dialog.start() and "dropout '0, a lot, 0' must be numbers" in dialog.last_error
    hyper.dropout.clear()
    assert "--dropout" not in form.arguments()
    form.name.setText("a:b")
    assert not dialog.start() and "plain file name" in dialog.last_error
    form.name.clear()
    assert not dialog.start() and "it becomes NAME.pt" in dialog.last_error


def test_dreambooth_fields_and_command_line(dialog: Any, dataset: Path, tmp_path: Path) -> None:
    form = dialog.form
    fill_dreambooth(dialog, dataset, tmp_path)
    assert not form.text_encoder.isHidden() and not form.overwrite.isHidden()
    assert form.dim.isHidden() and form.vectors.isHidden()
    assert all(form._layout.isRowVisible(row) for row in form.dreambooth.rows)
    assert not any(form._layout.isRowVisible(row) for row in form.hypernetwork.rows)
    assert "model" in dialog.try_button.toolTip()
    assert dialog.state_dir() == dialog.paths.data_dir / "training" / "dreambooth" / "shapes"
    model = str(tmp_path / "models" / "tiny-sd")
    common = ["--model", model, "--data", str(dataset), "--name", "shapes"]
    prior = ["--reg-data-dir", str(tmp_path / "class"), "--class-prompt", "a photo of a shape"]
    prior += ["--num-class-images", "50", "--prior-loss-weight", "0.5"]
    encoder = ["--train-text-encoder", "--text-encoder-lr", "2e-06", "--save-precision", "bf16"]
    run = ["--learning-rate", "0.0005", "--resolution", "64", "--train-batch-size", "2"]
    tail = ["--sample-every-n-steps", "2", "--sample-prompt", "a square"]
    tail += ["--save-every-n-steps", "2", "--device", "cpu"]
    memory = ["--mixed-precision", "fp16", "--gradient-checkpointing", "--optimizer", "AdamW8bit"]
    steps = ["--max-train-steps", "4"]
    assert form.arguments() == [
        "train", "dreambooth", *common, *steps, *prior, *encoder, *run, *tail, *memory, "--json"
    ]  # fmt: skip
    form.dreambooth.class_prompt.clear()  # generating class images needs their prompt
    assert not dialog.start() and "needs their prompt" in dialog.last_error
    form.dreambooth.class_images.setValue(0)  # the folder's own images: no prompt needed
    assert "--class-prompt" not in form.arguments() and "--reg-data-dir" in form.arguments()
    form.dreambooth.reg_data.clear()  # no folder: no prior preservation
    form.dreambooth.class_prompt.setText("a photo of a shape")
    assert not dialog.start() and "needs the class images' folder" in dialog.last_error
    form.dreambooth.class_prompt.clear()
    form.overwrite.setChecked(True)
    assert "--overwrite" in form.arguments() and "model" in form.overwrite.text()
    form.text_encoder.setChecked(False)
    form.dreambooth.text_encoder_lr.setValue(0)
    arguments = form.arguments()
    assert arguments[: 2 + len(common) + len(steps)] == ["train", "dreambooth", *common, *steps]
    for flag in (
        "--reg-data-dir",
        "--class-",
        "--num-class",
        "--prior",
        "--train-text",
        "--text-e",
    ):
        assert not any(argument.startswith(flag) for argument in arguments)
    assert arguments[arguments.index("--save-precision") + 1] == "bf16"


def test_hypernetwork_and_dreambooth_settings_are_remembered(
    qtbot: Any, dialog: Any, dataset: Path, paths: Any, tmp_path: Path
) -> None:
    from sdstudio.ui.training_dialog import TrainingDialog

    fill_hypernetwork(dialog, dataset)
    fill_dreambooth(dialog, dataset, tmp_path)
    dialog.close()
    again = TrainingDialog(paths, dialog.panel, lambda: None)
    qtbot.addWidget(again)
    assert again.form.values() == dialog.form.values()
    assert again.form.hypernetwork.activation.currentText() == "swish"
    assert again.form.dreambooth.class_images.value() == 50
    assert again.form.memory.optimizer.currentText() == "AdamW8bit"
    again.shutdown()


class Verdict:
    """The memory check's answer, as the engine gives it."""

    def __init__(self, enough: bool) -> None:
        self.needed, self.available, self.enough = 21 << 30, 18 << 30, enough
        self.message = (
            "DreamBooth of this model needs about 21 GB; this computer has 18 GB free."
            if not enough
            else "DreamBooth of this model needs about 21 GB; this computer has 40 GB free."
        )


def test_dreambooth_asks_when_the_memory_is_short(
    qtbot: Any,
    dialog: Any,
    dataset: Path,
    tmp_path: Path,
    fake_child: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sdstudio.ui import training_dialog

    script, folder = fake_child
    commands: list[list[str]] = []

    def fake_command(arguments: list[str]) -> tuple[str, list[str]]:
        commands.append(list(arguments))
        return sys.executable, [str(script), "ok", str(folder)]

    verdicts = [Verdict(enough=False)]
    monkeypatch.setattr(training_process, "cli_command", fake_command)
    monkeypatch.setattr(training_dialog, "dreambooth_verdict", lambda _form: verdicts[-1])
    fill_dreambooth(dialog, dataset, tmp_path)
    assert dialog.start()  # the device is free at once: the verdict is asked about
    box = dialog.memory_box
    assert box is not None and box.isVisible() and "18 GB free" in box.text()
    assert "18 GB free" in dialog.last_error and not dialog.process.running
    assert dialog.cancel_button.isEnabled() and not dialog.start_button.isEnabled()
    box.reject()  # No: nothing starts
    qtbot.wait(50)
    assert not dialog.process.running and commands == [] and dialog.start_button.isEnabled()
    assert not dialog.share.busy and dialog.status.text() == "Not started."

    assert dialog.start()
    with qtbot.waitSignal(dialog.process.finished, timeout=10_000):
        dialog.memory_box.accept()  # Yes: started, the CLI told not to check again
    assert commands[0][:2] == ["train", "dreambooth"]
    assert commands[0][-2:] == ["--skip-memory-check", "--json"]

    verdicts.append(Verdict(enough=True))  # enough: said, and started without asking
    dialog.form.name.setText("shapes2")
    with qtbot.waitSignal(dialog.share.launched):
        assert dialog.start()
    assert "40 GB free" in dialog.status.text() and "--skip-memory-check" not in commands[1]
    qtbot.waitUntil(lambda: not dialog.process.running, timeout=10_000)
    assert dialog.try_button.isEnabled() and dialog.finished_kind == "dreambooth"
    dialog.try_it()  # the new model becomes the one to generate with
    assert dialog.panel.model_path() == str(folder / "shapes.safetensors")
    assert "is the model now" in dialog.status.text()


def test_dreambooth_memory_verdict_of_the_forms_settings(
    dialog: Any, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory_check = pytest.importorskip("sdstudio.engine.training.memory_check")
    from sdstudio.ui.training_memory import dreambooth_verdict

    model = tmp_path / "models" / "tiny-sd.safetensors"  # headers only: no weight is read
    header = {
        "model.diffusion_model.w": {"dtype": "F16", "shape": [1000, 1000], "data_offsets": [0, 0]},
        "cond_stage_model.w": {"dtype": "F16", "shape": [100, 100], "data_offsets": [0, 0]},
    }
    data = json.dumps(header).encode()
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(len(data).to_bytes(8, "little") + data)
    fill_dreambooth(dialog, dataset, tmp_path)
    dialog.form.set_model(str(model))
    monkeypatch.setattr(memory_check, "available_bytes", lambda _device: 3 << 30)
    verdict = dreambooth_verdict(dialog.form)
    # 1.01M trained weights (the text encoder too) at 10 bytes (8-bit AdamW) + activations
    # of 2 images of 64x64, a fifth (checkpointing), halved (fp16) + 1 GiB of overhead.
    activations = memory_check.ACTIVATIONS_512 * 2 * (64 * 64) / (512 * 512) * 0.2 * 0.5
    assert verdict.needed == int(10 * 1_010_000 + activations + memory_check.OVERHEAD)
    assert verdict.enough and verdict.available == 3 << 30 and "cpu" in verdict.message
    monkeypatch.setattr(memory_check, "available_bytes", lambda _device: 1 << 30)
    assert not dreambooth_verdict(dialog.form).enough
    dialog.form.set_model("some-model-by-name")  # the command line finds it, and checks
    assert dreambooth_verdict(dialog.form) is None


def test_try_it_puts_the_hypernetwork_tag_into_the_prompt(
    qtbot: Any, dialog: Any, dataset: Path, fake_child: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    script, folder = fake_child
    commands: list[list[str]] = []

    def fake_command(arguments: list[str]) -> tuple[str, list[str]]:
        commands.append(list(arguments))
        return sys.executable, [str(script), "ok", str(folder)]

    monkeypatch.setattr(training_process, "cli_command", fake_command)
    fill_hypernetwork(dialog, dataset)
    with qtbot.waitSignal(dialog.process.finished, timeout=10_000):
        assert dialog.start()
    assert commands[0][:2] == ["train", "hypernetwork"] and dialog.rescans == [1]
    assert dialog.try_button.toolTip() == "Put <hypernet:NAME:1> into the prompt"
    for _click in range(2):
        dialog.try_it()
        assert dialog.panel.prompt.toPlainText() == "a red square <hypernet:shapes:1>"


@pytest.mark.parametrize("kind", ["lora", "embedding", "dreamartist", "hypernetwork", "dreambooth"])
def test_the_command_line_takes_every_kinds_arguments(
    dialog: Any, dataset: Path, tmp_path: Path, kind: str
) -> None:
    from sdstudio.cli import build_parser

    if kind == "hypernetwork":
        fill_hypernetwork(dialog, dataset)
    elif kind == "dreambooth":
        fill_dreambooth(dialog, dataset, tmp_path)
    else:
        fill_embedding(dialog, dataset, kind)
        dialog.form.set_kind(kind)
    args = build_parser().parse_args(dialog.form.arguments())
    command = "embedding" if kind == "dreamartist" else kind
    assert (args.command, args.kind, args.name, args.json) == ("train", command, "shapes", True)
    if command == "embedding":
        assert args.dreamartist == (kind == "dreamartist") and args.num_vectors == 3
    if kind == "hypernetwork":
        assert (args.layer_structure, args.activation, args.dropout) == (
            "1,1.5,1",
            "swish",
            "0,0.1,0",
        )
    if kind == "dreambooth":
        assert args.reg_data_dir == str(tmp_path / "class") and args.num_class_images == 50
        assert args.text_encoder_lr == pytest.approx(2e-6) and args.save_precision == "bf16"
        assert (args.optimizer, args.mixed_precision) == ("AdamW8bit", "fp16")
        assert not args.skip_memory_check
