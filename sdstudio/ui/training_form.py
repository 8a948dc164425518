"""The settings of a training run as a form, turned into ``sdstudio-cli train KIND``'s
arguments (kohya's option names), and remembered between openings. The kind of run
decides which fields show: a LoRA's rank, alpha and text encoder, an embedding's
vectors, initial text, templates and DreamArtist guidance, a hypernetwork's or
DreamBooth's own (see :mod:`sdstudio.ui.training_kinds`)."""

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
    QLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from sdstudio.engine.errors import InvalidRequest, SdStudioError
from sdstudio.engine.fileio import write_atomically
from sdstudio.engine.training.embedding_options import MAX_VECTORS, TEMPLATE_KINDS
from sdstudio.ui.training_kinds import (
    COMMANDS,
    EMBEDDINGS,
    KINDS,
    LEARNING_RATES,
    DreamBoothFields,
    HypernetworkFields,
    check_name,
)
from sdstudio.ui.training_memory import MemoryFields

log = logging.getLogger(__name__)

SETTINGS_FILE = "training.json"
"""The form's last values, in the config folder."""
DEVICES = ("auto", "cpu", "cuda", "mps")


class TrainingForm(QWidget):
    """Kind, model, dataset, name and the common options of a training run."""

    data_changed = Signal(str)
    """The dataset folder changed (its text)."""
    name_changed = Signal(str)
    kind_changed = Signal(str)
    """The kind of run changed (a key of :data:`KINDS`)."""

    def __init__(self, models: list[tuple[str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.kind = QComboBox()
        for value, text in KINDS.items():
            self.kind.addItem(text, value)
        self.kind.setToolTip(
            "A LoRA (<lora:NAME:1>), a textual-inversion embedding (the word NAME), "
            "DreamArtist's pair (NAME for the prompt and NAME-neg for the negative prompt), "
            "a hypernetwork (<hypernet:NAME:1>), or DreamBooth: a new model, NAME"
        )
        self._kind = "lora"
        self.model = QComboBox(editable=True)
        self.model.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.model.setToolTip("The SD 1.x, SD 2.x or SDXL model to train for")
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
        self.name = QLineEdit()
        self.name.textChanged.connect(self.name_changed)
        self.steps = QSpinBox(minimum=1, maximum=1_000_000, value=1600, singleStep=100)
        self.dim = QSpinBox(minimum=1, maximum=1024, value=16)
        self.dim.setToolTip("The LoRA's rank (kohya's --network-dim)")
        self.alpha = QDoubleSpinBox(minimum=0.01, maximum=1024, value=8, decimals=2)
        self.alpha.setToolTip("The LoRA's strength is alpha / rank (kohya's --network-alpha)")
        self.learning_rate = QDoubleSpinBox(decimals=6, minimum=0.000001, maximum=1.0)
        self.learning_rate.setSingleStep(0.00005)
        self.learning_rate.setValue(LEARNING_RATES["lora"])  # after the decimals: not rounded
        self.resolution = QSpinBox(minimum=64, maximum=2048, value=512, singleStep=64)
        self.resolution.setToolTip("The training size (SDXL: 1024); images are bucketed by shape")
        self.batch = QSpinBox(minimum=1, maximum=64, value=1)
        self.text_encoder = QCheckBox("Train the text encoder too")
        self.vectors = QSpinBox(minimum=1, maximum=MAX_VECTORS, value=1)
        self.vectors.setToolTip("Vectors per token: more learn more, and take more of a prompt")
        self.init_text = QLineEdit("*")
        self.init_text.setToolTip("The words the vectors start from (empty: zeros)")
        self.template_kind = QComboBox()
        self.template_kind.addItems(list(TEMPLATE_KINDS))
        self.template_kind.setToolTip(
            "The built-in prompts the captions go into: a subject (a photo of a NAME, …) "
            "or a style (a painting, art by NAME, …)"
        )
        self.dreamartist_cfg = QDoubleSpinBox(minimum=1.1, maximum=30, value=5, decimals=1)
        self.dreamartist_cfg.setToolTip("The guidance the pair is trained at (5 is usual)")
        self.overwrite = QCheckBox("Replace an embedding of the same name")
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
        self.memory = MemoryFields()
        self.hypernetwork = HypernetworkFields(self)
        self.dreambooth = DreamBoothFields(self)

        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self._layout = form
        form.addRow("Kind", self.kind)
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
        form.addRow("Vectors", self.vectors)
        form.addRow("Initial text", self.init_text)
        form.addRow("Templates", self.template_kind)
        form.addRow("DreamArtist CFG", self.dreamartist_cfg)
        self.hypernetwork.add_rows(form)
        self.dreambooth.add_rows(form)
        form.addRow("", self.overwrite)
        form.addRow("Sample every", self.sample_every)
        form.addRow("Sample prompt", self.sample_prompt)
        form.addRow("Save every", self.save_every)
        form.addRow("Device", self.device)
        self.memory.add_rows(form)
        self.kind.currentIndexChanged.connect(lambda _index: self._on_kind())
        self._show_kind()

    def run_kind(self) -> str:
        """A key of :data:`KINDS`: ``lora``, ``embedding``, ``dreamartist`` …"""
        return str(self.kind.currentData())

    def is_embedding(self) -> bool:
        """Whether the run trains an embedding (alone or DreamArtist's pair)."""
        return self.run_kind() in EMBEDDINGS

    def set_kind(self, kind: str) -> None:
        """Choose the kind of run (an unknown one is passed over)."""
        index = self.kind.findData(kind)
        if index >= 0:
            self.kind.setCurrentIndex(index)

    def _on_kind(self) -> None:
        """Show the kind's fields, and move the learning rate to the kind's default unless
        it was changed from the previous kind's."""
        kind, previous = self.run_kind(), self._kind
        if abs(self.learning_rate.value() - LEARNING_RATES[previous]) < 1e-9:
            self.learning_rate.setValue(LEARNING_RATES[kind])
        self._kind = kind
        self._show_kind()
        self.kind_changed.emit(kind)

    def _show_kind(self) -> None:
        kind, embedding = self.run_kind(), self.is_embedding()
        shown: dict[QWidget | QLayout, bool] = {
            self.dim: kind == "lora",
            self.alpha: kind == "lora",
        }
        shown[self.text_encoder] = kind in ("lora", "dreambooth")
        shown.update(dict.fromkeys((self.vectors, self.init_text, self.template_kind), embedding))
        shown[self.dreamartist_cfg] = kind == "dreamartist"
        shown[self.overwrite] = kind != "lora"
        shown.update(dict.fromkeys(self.hypernetwork.rows, kind == "hypernetwork"))
        shown.update(dict.fromkeys(self.dreambooth.rows, kind == "dreambooth"))
        for row, visible in shown.items():
            self._layout.setRowVisible(row, visible)
        noun = {"hypernetwork": "hypernetwork", "dreambooth": "model"}.get(kind, "embedding")
        self.overwrite.setText(f"Replace a {noun} of the same name")
        placeholder, tip = {
            "lora": ("my-lora", "The LoRA's file name, and its name in <lora:NAME:1>"),
            "hypernetwork": ("my-hypernetwork", "The file name, and <hypernet:NAME:1>'s name"),
            "dreambooth": ("my-model", "The new model's file name: NAME.safetensors"),
        }.get(kind, ("my-embedding", "The embedding's file name, and the word a prompt uses"))
        self.name.setPlaceholderText(placeholder)
        self.name.setToolTip(tip)

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
        kind = self.run_kind()
        if not model:
            raise InvalidRequest("Choose the model to train for.")
        if not data:
            raise InvalidRequest("Choose the dataset folder: images with .txt captions.")
        if not Path(data).expanduser().is_dir():
            raise InvalidRequest(f"The dataset folder {data} does not exist.")
        check_name(name, kind)
        args = ["train", COMMANDS[kind], "--model", model, "--data", data, "--name", name]
        args += ["--max-train-steps", str(self.steps.value())]
        if kind == "lora":
            args += ["--network-dim", str(self.dim.value())]
            args += ["--network-alpha", f"{self.alpha.value():g}"]
        elif kind == "hypernetwork":
            args += self.hypernetwork.arguments()
        elif kind == "dreambooth":
            args += self.dreambooth.arguments(self.text_encoder.isChecked())
        else:
            args += ["--num-vectors", str(self.vectors.value())]
            args += ["--init-text", self.init_text.text().strip()]
            args += ["--template-kind", self.template_kind.currentText()]
        if kind == "dreamartist":
            args += ["--dreamartist", "--dreamartist-cfg", f"{self.dreamartist_cfg.value():g}"]
        args += ["--learning-rate", f"{self.learning_rate.value():g}"]
        args += ["--resolution", str(self.resolution.value())]
        args += ["--train-batch-size", str(self.batch.value())]
        if kind == "lora" and self.text_encoder.isChecked():
            args.append("--train-text-encoder")
        if kind != "lora" and self.overwrite.isChecked():
            args.append("--overwrite")
        if self.sample_every.value():
            prompt = self.sample_prompt.text().strip()
            if not prompt:
                raise InvalidRequest("Samples need a prompt: fill in the sample prompt.")
            args += ["--sample-every-n-steps", str(self.sample_every.value())]
            args += ["--sample-prompt", prompt]
        if self.save_every.value():
            args += ["--save-every-n-steps", str(self.save_every.value())]
        args += ["--device", self.device.currentText()]
        args += self.memory.arguments()
        if resume is not None:
            args += ["--resume", str(resume)]
        args.append("--json")
        return args

    def run_name(self) -> str:
        """The run's name as typed, trimmed."""
        return self.name.text().strip()

    def values(self) -> dict[str, Any]:
        """The form's values, to remember."""
        return {
            "kind": self.run_kind(),
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
            "vectors": self.vectors.value(),
            "init_text": self.init_text.text(),
            "template_kind": self.template_kind.currentText(),
            "dreamartist_cfg": self.dreamartist_cfg.value(),
            "sample_every": self.sample_every.value(),
            "sample_prompt": self.sample_prompt.text(),
            "save_every": self.save_every.value(),
            "device": self.device.currentText(),
            "overwrite": self.overwrite.isChecked(),
            **self.memory.values(),
            "hypernetwork": self.hypernetwork.values(),
            "dreambooth": self.dreambooth.values(),
        }

    def set_values(self, values: dict[str, Any]) -> None:
        """Fill the form from remembered values; unknown or odd ones are passed over."""
        if isinstance(values.get("kind"), str):
            self.set_kind(values["kind"])  # first: the learning rate follows it
        spins = {
            "vectors": self.vectors,
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
        doubles = (
            ("alpha", self.alpha),
            ("learning_rate", self.learning_rate),
            ("dreamartist_cfg", self.dreamartist_cfg),
        )
        for key, dbox in doubles:
            if isinstance(values.get(key), (int, float)):
                dbox.setValue(float(values[key]))
        for key, edit in (
            ("data", self.data),
            ("name", self.name),
            ("sample_prompt", self.sample_prompt),
            ("init_text", self.init_text),
        ):
            if isinstance(values.get(key), str):
                edit.setText(values[key])
        if isinstance(values.get("model"), str):
            self.set_model(values["model"])
        self.text_encoder.setChecked(values.get("text_encoder") is True)
        if values.get("device") in DEVICES:
            self.device.setCurrentText(values["device"])
        if values.get("template_kind") in TEMPLATE_KINDS:
            self.template_kind.setCurrentText(values["template_kind"])
        self.overwrite.setChecked(values.get("overwrite") is True)
        self.memory.set_values(values)
        for key, fields in (("hypernetwork", self.hypernetwork), ("dreambooth", self.dreambooth)):
            if isinstance(values.get(key), dict):
                fields.set_values(values[key])


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
