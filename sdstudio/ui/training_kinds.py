"""The fields of the training window that belong to one kind of run: a hypernetwork's
(A1111's "Create hypernetwork" settings) and DreamBooth's (prior preservation, the text
encoder's rate, the saved precision); each kind's command, state folder, default
learning rate and naming rule.

Each group adds its rows to the form's layout, turns its values into
``sdstudio-cli train …`` arguments, and remembers them; :class:`TrainingForm` shows the
rows of the kind chosen.
"""

from __future__ import annotations

from typing import Any

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

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.training.embedding_options import NAME_PATTERN
from sdstudio.engine.training.hypernetwork_options import ACTIVATIONS, WEIGHT_INITS
from sdstudio.ui.model_picker import FAMILY_ROLE
from sdstudio.ui.prompt_panel import PromptPanel

KINDS = {
    "lora": "LoRA",
    "embedding": "Embedding",
    "dreamartist": "DreamArtist embedding pair",
    "hypernetwork": "Hypernetwork",
    "dreambooth": "DreamBooth (the whole model)",
}
"""The kinds of run (their values, and their names in the form)."""
LEARNING_RATES = {
    "lora": 1e-4,
    "embedding": 5e-3,
    "dreamartist": 5e-3,
    "hypernetwork": 1e-5,
    "dreambooth": 1e-6,
}
"""The default learning rate of each kind (an embedding's and a hypernetwork's are
A1111's; DreamBooth changes every weight of the model, so it learns slowest)."""
COMMANDS = {
    "lora": "lora",
    "embedding": "embedding",
    "dreamartist": "embedding",
    "hypernetwork": "hypernetwork",
    "dreambooth": "dreambooth",
}
"""The ``sdstudio-cli train`` command of each kind."""
STATE_FOLDERS = {
    "embedding": "embeddings",
    "dreamartist": "embeddings",
    "hypernetwork": "hypernetworks",
    "dreambooth": "dreambooth",
}
"""The sub-folder of ``DATA_DIR/training`` a kind keeps its states in (a LoRA's: none),
apart from another kind's run of the same name."""
EMBEDDINGS = ("embedding", "dreamartist")
FILE_NAMES = {"lora": "the LoRA", "hypernetwork": "the hypernetwork", "dreambooth": "the model"}
"""What a kind's name is the file name of."""
_BAD_NAME = set('/\\:*?"<>|')
TRAINABLE = {"", "sd1", "sd2", "sdxl", "unknown"}
"""Families a run can be trained for (an unread family is offered: the CLI says)."""
SAVE_PRECISIONS = ("fp16", "bf16", "float")


def panel_models(panel: PromptPanel) -> list[tuple[str, str]]:
    """(name, path) of the prompt panel's models that can be trained for."""
    box = panel.model
    found = []
    for index in range(box.count()):
        path = str(box.itemData(index) or "")
        if path and str(box.itemData(index, FAMILY_ROLE) or "") in TRAINABLE:
            found.append((box.itemText(index), path))
    return found


def file_row(edit: QLineEdit, choose: Any) -> QHBoxLayout:
    """``edit`` with a Browse… button that calls ``choose``."""
    browse = QPushButton("Browse…")
    browse.clicked.connect(choose)
    row = QHBoxLayout()
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit, 1)
    row.addWidget(browse)
    return row


class HypernetworkFields:
    """A1111's "Create hypernetwork" settings."""

    def __init__(self, parent: QWidget) -> None:
        self.parent = parent
        self.layer_structure = QLineEdit("1,2,1")
        self.layer_structure.setToolTip(
            "Each layer's width as a multiple of the context width, from 1 to 1 (A1111: 1, 2, 1)"
        )
        self.activation = QComboBox(editable=True)
        self.activation.addItems(list(ACTIVATIONS))
        self.activation.setToolTip("Between the layers; another of torch.nn's by its name too")
        self.layer_norm = QCheckBox("Layer normalization")
        self.dropout = QLineEdit(placeholderText="off, or one per layer: 0,0.05,0")
        self.dropout.setToolTip("Dropout probabilities, starting and ending with 0")
        self.weight_init = QComboBox()
        self.weight_init.addItems(list(WEIGHT_INITS))
        self.sizes = QLineEdit(placeholderText="the model's (320,640,768,1280 for SD 1.x)")
        self.sizes.setToolTip("The context widths to make networks for (A1111's Modules)")
        self.template = QLineEdit(placeholderText="none: the caption is the prompt")
        self.template.setToolTip("A prompt template file: lines with [name] and [filewords]")
        self.template_row = file_row(self.template, self.choose_template)
        self.rows: tuple[QWidget | QLayout, ...] = (
            self.layer_structure,
            self.activation,
            self.layer_norm,
            self.dropout,
            self.weight_init,
            self.sizes,
            self.template_row,
        )
        """The fields, as rows of the form (shown for a hypernetwork only)."""

    def add_rows(self, form: QFormLayout) -> None:
        form.addRow("Layer structure", self.layer_structure)
        form.addRow("Activation", self.activation)
        form.addRow("", self.layer_norm)
        form.addRow("Dropout", self.dropout)
        form.addRow("Weight init", self.weight_init)
        form.addRow("Sizes", self.sizes)
        form.addRow("Template file", self.template_row)

    def choose_template(self) -> None:
        """Ask for the prompt template file."""
        chosen, _ = QFileDialog.getOpenFileName(
            self.parent, "Choose a prompt template", self.template.text(), "Text (*.txt);;All (*)"
        )
        if chosen:
            self.template.setText(chosen)

    def arguments(self) -> list[str]:
        structure = _numbers("layer structure", self.layer_structure.text()) or "1,2,1"
        activation = self.activation.currentText().strip().lower() or "linear"
        args = ["--layer-structure", structure, "--activation", activation]
        if self.layer_norm.isChecked():
            args.append("--layer-norm")
        dropout = _numbers("dropout", self.dropout.text())
        if dropout:
            args += ["--dropout", dropout]
        args += ["--weight-init", self.weight_init.currentText()]
        sizes = _numbers("sizes", self.sizes.text())
        if sizes:
            args += ["--sizes", sizes]
        template = self.template.text().strip()
        if template:
            args += ["--template", template]
        return args

    def values(self) -> dict[str, Any]:
        return {
            "layer_structure": self.layer_structure.text(),
            "activation": self.activation.currentText(),
            "layer_norm": self.layer_norm.isChecked(),
            "dropout": self.dropout.text(),
            "weight_init": self.weight_init.currentText(),
            "sizes": self.sizes.text(),
            "template": self.template.text(),
        }

    def set_values(self, values: dict[str, Any]) -> None:
        for key, edit in (
            ("layer_structure", self.layer_structure),
            ("dropout", self.dropout),
            ("sizes", self.sizes),
            ("template", self.template),
        ):
            if isinstance(values.get(key), str):
                edit.setText(values[key])
        if isinstance(values.get("activation"), str):
            self.activation.setCurrentText(values["activation"])
        self.layer_norm.setChecked(values.get("layer_norm") is True)
        if values.get("weight_init") in WEIGHT_INITS:
            self.weight_init.setCurrentText(values["weight_init"])


class DreamBoothFields:
    """DreamBooth's own settings: prior preservation (the class images' folder, their
    prompt, how many, their weight), the text encoder's learning rate and the precision
    the model is saved in. The text encoder is trained with the form's "Train the text
    encoder too"."""

    def __init__(self, parent: QWidget) -> None:
        self.parent = parent
        self.reg_data = QLineEdit(placeholderText="none: no prior preservation")
        self.reg_data.setToolTip(
            "A folder of images of the subject's class (dogs for your dog): training on "
            "them too keeps the model from forgetting the class while it learns the subject"
        )
        self.class_prompt = QLineEdit(placeholderText="a photo of a dog")
        self.class_prompt.setToolTip(
            "The class images' prompt: what missing class images are generated from"
        )
        self.class_images = QSpinBox(minimum=0, maximum=100_000, value=0, singleStep=50)
        self.class_images.setSpecialValueText("those in the folder")
        self.class_images.setToolTip(
            "How many class images to train with; missing ones are generated into the folder "
            "from the class prompt with the model first"
        )
        self.prior_weight = QDoubleSpinBox(minimum=0.0, maximum=10.0, value=1.0, decimals=2)
        self.prior_weight.setSingleStep(0.1)
        self.prior_weight.setToolTip("The class images' loss weight")
        self.text_encoder_lr = QDoubleSpinBox(decimals=7, minimum=0.0, maximum=1.0)
        self.text_encoder_lr.setSingleStep(0.000001)
        self.text_encoder_lr.setSpecialValueText("the learning rate")
        self.text_encoder_lr.setToolTip("The text encoder's learning rate, when it is trained")
        self.save_precision = QComboBox()
        self.save_precision.addItems(list(SAVE_PRECISIONS))
        self.save_precision.setToolTip("fp16 files are half the size of float ones")
        self.reg_data_row = file_row(self.reg_data, self.choose_folder)
        self.rows: tuple[QWidget | QLayout, ...] = (
            self.reg_data_row,
            self.class_prompt,
            self.class_images,
            self.prior_weight,
            self.text_encoder_lr,
            self.save_precision,
        )
        """The fields, as rows of the form (shown for DreamBooth only)."""

    def add_rows(self, form: QFormLayout) -> None:
        form.addRow("Class images", self.reg_data_row)
        form.addRow("Class prompt", self.class_prompt)
        form.addRow("Class image count", self.class_images)
        form.addRow("Prior loss weight", self.prior_weight)
        form.addRow("Text encoder rate", self.text_encoder_lr)
        form.addRow("Save as", self.save_precision)

    def choose_folder(self) -> None:
        """Ask for the class images' folder."""
        folder = QFileDialog.getExistingDirectory(
            self.parent, "Choose the class images' folder", self.reg_data.text()
        )
        if folder:
            self.reg_data.setText(folder)

    def arguments(self, train_text_encoder: bool) -> list[str]:
        """The DreamBooth arguments; the prior preservation ones only with a class images'
        folder (a class prompt or count without one is refused, as the CLI does)."""
        args = []
        prompt, folder = self.class_prompt.text().strip(), self.reg_data.text().strip()
        count = self.class_images.value()
        if not folder and (prompt or count):
            raise InvalidRequest(
                "Prior preservation needs the class images' folder (missing images are "
                "generated into it): choose one, or empty the class prompt and count."
            )
        if count and not prompt:
            raise InvalidRequest(
                f"Generating {count} class images needs their prompt: fill in the class "
                'prompt (such as "a photo of a dog").'
            )
        if folder:
            args += ["--reg-data-dir", folder]
            if prompt:
                args += ["--class-prompt", prompt]
            if count:
                args += ["--num-class-images", str(count)]
            args += ["--prior-loss-weight", f"{self.prior_weight.value():g}"]
        if train_text_encoder:
            args.append("--train-text-encoder")
            if self.text_encoder_lr.value() > 0:
                args += ["--text-encoder-lr", f"{self.text_encoder_lr.value():g}"]
        args += ["--save-precision", self.save_precision.currentText()]
        return args

    def values(self) -> dict[str, Any]:
        return {
            "class_prompt": self.class_prompt.text(),
            "reg_data_dir": self.reg_data.text(),
            "num_class_images": self.class_images.value(),
            "prior_loss_weight": self.prior_weight.value(),
            "text_encoder_lr": self.text_encoder_lr.value(),
            "save_precision": self.save_precision.currentText(),
        }

    def set_values(self, values: dict[str, Any]) -> None:
        for key, edit in (("class_prompt", self.class_prompt), ("reg_data_dir", self.reg_data)):
            if isinstance(values.get(key), str):
                edit.setText(values[key])
        if isinstance(values.get("num_class_images"), int):
            self.class_images.setValue(values["num_class_images"])
        for key, box in (
            ("prior_loss_weight", self.prior_weight),
            ("text_encoder_lr", self.text_encoder_lr),
        ):
            if isinstance(values.get(key), (int, float)):
                box.setValue(float(values[key]))
        if values.get("save_precision") in SAVE_PRECISIONS:
            self.save_precision.setCurrentText(values["save_precision"])


def check_name(name: str, kind: str = "lora") -> None:
    """Refuse a name the trainer would refuse: a LoRA's, a hypernetwork's or a model's
    must be a file name, an embedding's a word a prompt can say."""
    if kind in EMBEDDINGS:
        if not name:
            raise InvalidRequest("Give the embedding a name: the word a prompt uses it by.")
        if not NAME_PATTERN.fullmatch(name):
            raise InvalidRequest(
                f"The name {name!r} is the word a prompt uses the embedding by: use letters, "
                "digits, '_', '-' or '.', starting with a letter or digit."
            )
        return
    what = FILE_NAMES.get(kind, "the LoRA")
    if not name:
        suffix = ".pt" if kind == "hypernetwork" else ".safetensors"
        raise InvalidRequest(f"Give {what} a name: it becomes NAME{suffix}.")
    if _BAD_NAME & set(name) or name in (".", ".."):
        raise InvalidRequest(f"The name {name!r} must be a plain file name (no slashes).")


def _numbers(what: str, text: str) -> str:
    """``text`` as comma-separated numbers without spaces (``1, 2, 1`` → ``1,2,1``), or
    :class:`InvalidRequest` naming the field."""
    parts = [part.strip() for part in text.replace(" ", ",").split(",") if part.strip()]
    for part in parts:
        try:
            float(part)
        except ValueError:
            raise InvalidRequest(
                f"The {what} {text.strip()!r} must be numbers separated by commas, such as 1,2,1."
            ) from None
    return ",".join(parts)
