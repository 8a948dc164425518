"""The settings of a LoRA run as a form, turned into ``sdstudio-cli train lora``'s
arguments (kohya's option names), and remembered between openings."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from sdstudio.engine.errors import InvalidRequest, SdStudioError
from sdstudio.engine.fileio import write_atomically

log = logging.getLogger(__name__)

SETTINGS_FILE = "training.json"
"""The form's last values, in the config folder."""
DEVICES = ("auto", "cpu", "cuda", "mps")
_BAD_NAME = set('/\\:*?"<>|')


class TrainingForm(QWidget):
    """Model, dataset, name and the common options of a LoRA run."""

    data_changed = Signal(str)
    """The dataset folder changed (its text)."""
    name_changed = Signal(str)

    def __init__(self, models: list[tuple[str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = QComboBox(editable=True)
        self.model.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.model.setToolTip("The SD 1.x, SD 2.x or SDXL model to train the LoRA for")
        for name, path in models:
            self.model.addItem(name, path)
            self.model.setItemData(self.model.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        self.data = QLineEdit(placeholderText="A folder of images with .txt captions")
        self.data.textChanged.connect(self.data_changed)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.choose_folder)
        data_row = QHBoxLayout()
        data_row.setContentsMargins(0, 0, 0, 0)
        data_row.addWidget(self.data, 1)
        data_row.addWidget(browse)
        self.name = QLineEdit(placeholderText="my-lora")
        self.name.setToolTip("The LoRA's file name, and its name in <lora:NAME:1>")
        self.name.textChanged.connect(self.name_changed)
        self.steps = QSpinBox(minimum=1, maximum=1_000_000, value=1600, singleStep=100)
        self.dim = QSpinBox(minimum=1, maximum=1024, value=16)
        self.dim.setToolTip("The LoRA's rank (kohya's --network-dim)")
        self.alpha = QDoubleSpinBox(minimum=0.01, maximum=1024, value=8, decimals=2)
        self.alpha.setToolTip("The LoRA's strength is alpha / rank (kohya's --network-alpha)")
        self.learning_rate = QDoubleSpinBox(
            minimum=0.000001, maximum=1.0, value=0.0001, decimals=6, singleStep=0.00005
        )
        self.resolution = QSpinBox(minimum=64, maximum=2048, value=512, singleStep=64)
        self.resolution.setToolTip("The training size (SDXL: 1024); images are bucketed by shape")
        self.batch = QSpinBox(minimum=1, maximum=64, value=1)
        self.text_encoder = QCheckBox("Train the text encoder too")
        self.sample_every = QSpinBox(minimum=0, maximum=1_000_000, value=0, singleStep=50)
        self.sample_every.setSpecialValueText("never")
        self.sample_every.setSuffix(" steps")
        self.sample_prompt = QLineEdit(placeholderText="The prompt of the sample images")
        self.save_every = QSpinBox(minimum=0, maximum=1_000_000, value=0, singleStep=100)
        self.save_every.setSpecialValueText("only when stopped")
        self.save_every.setSuffix(" steps")
        self.save_every.setToolTip("Save a state to resume from this often")
        self.device = QComboBox()
        self.device.addItems(list(DEVICES))

        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Model", self.model)
        form.addRow("Dataset", data_row)
        form.addRow("Name", self.name)
        form.addRow("Steps", self.steps)
        form.addRow("Rank (dim)", self.dim)
        form.addRow("Alpha", self.alpha)
        form.addRow("Learning rate", self.learning_rate)
        form.addRow("Resolution", self.resolution)
        form.addRow("Batch size", self.batch)
        form.addRow("", self.text_encoder)
        form.addRow("Sample every", self.sample_every)
        form.addRow("Sample prompt", self.sample_prompt)
        form.addRow("Save every", self.save_every)
        form.addRow("Device", self.device)

    def model_path(self) -> str:
        """The chosen model's path: a listed model's, or the text typed."""
        text = self.model.currentText().strip()
        index = self.model.currentIndex()
        if index >= 0 and self.model.itemText(index) == text and self.model.itemData(index):
            return str(self.model.itemData(index))
        return text

    def set_model(self, model: str) -> None:
        """Select a model by path (adding it when it is not listed)."""
        if not model:
            return
        index = self.model.findData(model)
        if index < 0:
            index = self.model.findText(model)
        if index < 0:
            self.model.insertItem(0, Path(model).name or model, model)
            index = 0
        self.model.setCurrentIndex(index)

    def choose_folder(self) -> None:
        """Ask for the dataset folder."""
        folder = QFileDialog.getExistingDirectory(
            self, "Choose the dataset folder", self.data.text()
        )
        if folder:
            self.data.setText(folder)

    def arguments(self, resume: Path | None = None) -> list[str]:
        """``sdstudio-cli``'s arguments for this run, or :class:`InvalidRequest` saying
        what to fill in."""
        model, data, name = self.model_path(), self.data.text().strip(), self.run_name()
        if not model:
            raise InvalidRequest("Choose the model to train the LoRA for.")
        if not data:
            raise InvalidRequest("Choose the dataset folder: images with .txt captions.")
        if not Path(data).expanduser().is_dir():
            raise InvalidRequest(f"The dataset folder {data} does not exist.")
        check_name(name)
        args = ["train", "lora", "--model", model, "--data", data, "--name", name]
        args += ["--max-train-steps", str(self.steps.value())]
        args += ["--network-dim", str(self.dim.value())]
        args += ["--network-alpha", f"{self.alpha.value():g}"]
        args += ["--learning-rate", f"{self.learning_rate.value():g}"]
        args += ["--resolution", str(self.resolution.value())]
        args += ["--train-batch-size", str(self.batch.value())]
        if self.text_encoder.isChecked():
            args.append("--train-text-encoder")
        if self.sample_every.value():
            prompt = self.sample_prompt.text().strip()
            if not prompt:
                raise InvalidRequest("Samples need a prompt: fill in the sample prompt.")
            args += ["--sample-every-n-steps", str(self.sample_every.value())]
            args += ["--sample-prompt", prompt]
        if self.save_every.value():
            args += ["--save-every-n-steps", str(self.save_every.value())]
        args += ["--device", self.device.currentText()]
        if resume is not None:
            args += ["--resume", str(resume)]
        args.append("--json")
        return args

    def run_name(self) -> str:
        """The LoRA's name as typed, trimmed."""
        return self.name.text().strip()

    def values(self) -> dict[str, Any]:
        """The form's values, to remember."""
        return {
            "model": self.model_path(),
            "data": self.data.text(),
            "name": self.name.text(),
            "steps": self.steps.value(),
            "dim": self.dim.value(),
            "alpha": self.alpha.value(),
            "learning_rate": self.learning_rate.value(),
            "resolution": self.resolution.value(),
            "batch": self.batch.value(),
            "text_encoder": self.text_encoder.isChecked(),
            "sample_every": self.sample_every.value(),
            "sample_prompt": self.sample_prompt.text(),
            "save_every": self.save_every.value(),
            "device": self.device.currentText(),
        }

    def set_values(self, values: dict[str, Any]) -> None:
        """Fill the form from remembered values; unknown or odd ones are passed over."""
        spins = {
            "steps": self.steps,
            "dim": self.dim,
            "resolution": self.resolution,
            "batch": self.batch,
            "sample_every": self.sample_every,
            "save_every": self.save_every,
        }
        for key, box in spins.items():
            if isinstance(values.get(key), int):
                box.setValue(values[key])
        for key, dbox in (("alpha", self.alpha), ("learning_rate", self.learning_rate)):
            if isinstance(values.get(key), (int, float)):
                dbox.setValue(float(values[key]))
        for key, edit in (
            ("data", self.data),
            ("name", self.name),
            ("sample_prompt", self.sample_prompt),
        ):
            if isinstance(values.get(key), str):
                edit.setText(values[key])
        if isinstance(values.get("model"), str):
            self.set_model(values["model"])
        self.text_encoder.setChecked(values.get("text_encoder") is True)
        if values.get("device") in DEVICES:
            self.device.setCurrentText(values["device"])


def check_name(name: str) -> None:
    """Refuse a LoRA name that cannot be a file name, as the trainer would."""
    if not name:
        raise InvalidRequest("Give the LoRA a name: it becomes NAME.safetensors.")
    if _BAD_NAME & set(name) or name in (".", ".."):
        raise InvalidRequest(f"The name {name!r} must be a plain file name (no slashes).")


def load_form_values(config_dir: Path) -> dict[str, Any]:
    """The values remembered last time (empty when there are none or they are unreadable)."""
    try:
        values = json.loads((config_dir / SETTINGS_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return values if isinstance(values, dict) else {}


def save_form_values(config_dir: Path, values: dict[str, Any]) -> None:
    """Remember the form's values for the next opening."""
    data = json.dumps(values, indent=2).encode("utf-8")
    try:
        write_atomically(config_dir / SETTINGS_FILE, data)
    except SdStudioError as error:
        log.warning("The training settings were not remembered: %s", error)
