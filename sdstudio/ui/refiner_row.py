"""The refiner row of the prompt panel's "Advanced" section: a second model that finishes
the denoising (A1111's "Refiner") and the fraction of the steps after which it takes
over ("Switch at")."""

from __future__ import annotations

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QWidget

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata.refiner_names import shown_name
from sdstudio.engine.refine.refiner_settings import DEFAULT_SWITCH_AT, Refiner

REFINER_FAMILIES = ("sdxl-refiner", "sdxl")
"""The families offered, refiners first: an SDXL model's refiner is an SDXL refiner or
another SDXL model (see :mod:`sdstudio.engine.refine.refiner`)."""
NONE = "None"


class RefinerRow(QWidget):
    """A box of the models that can refine (SDXL refiners and SDXL models, by name with
    the path as data) and the switch, which counts only while a refiner is chosen."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = QComboBox()
        self.model.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.model.setMinimumContentsLength(8)
        self.model.addItem(NONE, "")
        self.model.setToolTip(
            "A model that finishes the image: an SDXL refiner, or another SDXL model "
            "(for SDXL models)"
        )
        self.switch_at = QDoubleSpinBox(
            minimum=0.01, maximum=0.99, singleStep=0.05, value=DEFAULT_SWITCH_AT
        )
        self.switch_at.setDecimals(2)
        self.switch_at.setToolTip(
            "Switch at: the fraction of the steps after which the refiner takes over"
        )
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.model, 1)
        layout.addWidget(self.switch_at)
        self.model.currentIndexChanged.connect(self._on_changed)
        self.switch_at.valueChanged.connect(self._on_changed)
        self._on_changed()

    def set_known_models(self, models: list[tuple[str, str, str, str]]) -> None:
        """Offer the found models that can refine, from (name, path, family, description);
        the choice is kept, listed or not."""
        chosen = self.model_path()
        usable = [m for m in models if m[2] in REFINER_FAMILIES]
        usable.sort(key=lambda m: REFINER_FAMILIES.index(m[2]))
        with QSignalBlocker(self.model):
            self.model.clear()
            self.model.addItem(NONE, "")
            for name, path, _family, description in usable:
                self.model.addItem(name, path)
                self.model.setItemData(
                    self.model.count() - 1, f"{description}\n{path}", Qt.ItemDataRole.ToolTipRole
                )
            self._select(chosen)
        self._on_changed()

    def model_path(self) -> str:
        """The chosen refiner's path (or name); empty for none."""
        return str(self.model.currentData() or "")

    def value(self) -> Refiner | None:
        """The refiner chosen, or ``None``."""
        model = self.model_path()
        if not model:
            return None
        try:
            return Refiner(model, round(self.switch_at.value(), 2))
        except InvalidRequest:  # not expected: the box keeps the switch in range
            return None

    def load(self, refiner: Refiner | None) -> None:
        """Take a request's refiner (``None``: none), adding a model the list lacks."""
        with QSignalBlocker(self.model), QSignalBlocker(self.switch_at):
            self._select(refiner.model if refiner is not None else "")
            self.switch_at.setValue(refiner.switch_at if refiner else DEFAULT_SWITCH_AT)
        self._on_changed()

    def describe(self) -> str:
        """The refiner in a few words for the section's header ("" for none)."""
        if not self.model_path():
            return ""
        return f"refiner {self.model.currentText()} at {self.switch_at.value():g}"

    def _select(self, model: str) -> None:
        if not model:
            self.model.setCurrentIndex(0)
            return
        index = self.model.findData(model)
        if index < 0:
            index = self.model.findText(model)
        if index < 0:
            self.model.addItem(shown_name(model), model)
            index = self.model.count() - 1
            self.model.setItemData(index, model, Qt.ItemDataRole.ToolTipRole)
        self.model.setCurrentIndex(index)

    def _on_changed(self) -> None:
        self.switch_at.setEnabled(bool(self.model_path()))
        self.changed.emit()
