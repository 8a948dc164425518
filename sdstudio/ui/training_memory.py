"""The memory a training run takes: the settings that decide it (every kind has them),
and before a DreamBooth run whether the device has the memory to train the whole model,
told before anything loads, and asked about when it has not.

DreamBooth trains every weight of the model (with its optimizer's state and the
gradients), several times the memory of generating. The estimate comes from the engine
(:func:`sdstudio.engine.training.memory_check.check_dreambooth_memory`, which reads the
model's headers, not its weights); the CLI makes the same check, so a run the user
insists on is started with ``--skip-memory-check``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QMessageBox, QWidget

if TYPE_CHECKING:
    from sdstudio.engine.training.memory_check import MemoryVerdict
    from sdstudio.ui.training_form import TrainingForm

log = logging.getLogger(__name__)

SKIP_FLAG = "--skip-memory-check"
PRECISIONS = ("no", "fp16", "bf16")
OPTIMIZERS = ("AdamW", "AdamW8bit")


class MemoryFields:
    """Mixed precision, gradient checkpointing and the optimizer: what decides how much
    memory a run takes (DreamBooth's memory check reads them). Each is passed on only
    when it differs from the CLI's default."""

    def __init__(self) -> None:
        self.precision = QComboBox()
        self.precision.addItems(list(PRECISIONS))
        self.precision.setToolTip("Compute in half precision: about half the memory on a GPU")
        self.checkpointing = QCheckBox("Gradient checkpointing")
        self.checkpointing.setToolTip("Less memory for about a third more time a step")
        self.optimizer = QComboBox()
        self.optimizer.addItems(list(OPTIMIZERS))
        self.optimizer.setToolTip(
            "AdamW8bit keeps the optimizer's state in a quarter of the memory"
        )

    def add_rows(self, form: QFormLayout) -> None:
        form.addRow("Mixed precision", self.precision)
        form.addRow("", self.checkpointing)
        form.addRow("Optimizer", self.optimizer)

    def arguments(self) -> list[str]:
        args = []
        if self.precision.currentText() != "no":
            args += ["--mixed-precision", self.precision.currentText()]
        if self.checkpointing.isChecked():
            args.append("--gradient-checkpointing")
        if self.optimizer.currentText() != "AdamW":
            args += ["--optimizer", self.optimizer.currentText()]
        return args

    def values(self) -> dict[str, Any]:
        return {
            "mixed_precision": self.precision.currentText(),
            "gradient_checkpointing": self.checkpointing.isChecked(),
            "optimizer": self.optimizer.currentText(),
        }

    def set_values(self, values: dict[str, Any]) -> None:
        if values.get("mixed_precision") in PRECISIONS:
            self.precision.setCurrentText(values["mixed_precision"])
        self.checkpointing.setChecked(values.get("gradient_checkpointing") is True)
        if values.get("optimizer") in OPTIMIZERS:
            self.optimizer.setCurrentText(values["optimizer"])


def dreambooth_verdict(form: TrainingForm) -> MemoryVerdict | None:
    """The memory verdict (``needed``, ``available``, ``enough``, ``message``) of the
    DreamBooth run the form describes. ``None`` for a model given by name rather than
    path: the CLI finds it, and checks then. A model that cannot be read raises the
    engine's :class:`~sdstudio.engine.errors.SdStudioError`."""
    from sdstudio.engine.training.datasets import BucketOptions
    from sdstudio.engine.training.dreambooth_options import DreamboothOptions
    from sdstudio.engine.training.memory_check import check_dreambooth_memory
    from sdstudio.engine.training.options import TrainingOptions

    model = Path(form.model_path()).expanduser()
    if not model.exists():
        log.info("%s is not a path: the memory check is left to the command line", model)
        return None
    memory, side = form.memory, form.resolution.value()
    base = TrainingOptions(  # what the estimate reads; the folders do not count
        model=model,
        data=Path(form.data.text().strip()),
        name=form.run_name(),
        output_dir=model.parent,
        state_dir=model.parent,
        train_batch_size=form.batch.value(),
        mixed_precision=memory.precision.currentText(),
        gradient_checkpointing=memory.checkpointing.isChecked(),
        optimizer=memory.optimizer.currentText(),
        device=form.device.currentText(),
        buckets=BucketOptions(resolution=(side, side)),
    )
    options = DreamboothOptions(base=base, train_text_encoder=form.text_encoder.isChecked())
    return check_dreambooth_memory(options)


def ask_short_memory(
    parent: QWidget, title: str, verdict: MemoryVerdict, start_anyway: Callable[[], object]
) -> QMessageBox:
    """Ask whether to start a run the device has too little memory for (not modal: the
    window stays usable); Yes calls ``start_anyway``."""
    box = QMessageBox(
        QMessageBox.Icon.Warning,
        title,
        # The engine's sentence, less its command-line hint (Yes is this window's way).
        f"{verdict.message.replace(f' {SKIP_FLAG} trains anyway.', '')}\n\nStart anyway? "
        "The run may stop for want of memory, and the computer may slow down while it runs.",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        parent,
    )
    box.setDefaultButton(QMessageBox.StandardButton.No)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.accepted.connect(start_anyway)
    box.open()
    return box
