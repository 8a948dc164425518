"""The VAE row of the prompt panel: the VAE files found, remembered for each model, and
the draft decode (the final image decoded by the family's tiny VAE)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QWidget

from sdstudio.engine.families import FAMILIES, family
from sdstudio.engine.settings import model_key

OWN = "Model's own"
DRAFT = "Draft decode (tiny VAE, fast)"


def vae_row(picker: VaePicker) -> tuple[QWidget, QCheckBox]:
    """The VAE box with the draft-decode check box beside it: the row and the box."""
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    draft = QCheckBox(DRAFT)
    draft.setToolTip(
        "Decode the final image with the model family's tiny VAE (TAESD, TAESDXL, TAESD3, "
        "TAEF1): many times faster on a CPU, a little softer; recorded in the image. "
        "Tiny VAEs are found in vae_approx folders or downloaded in Models ▸ Manage models."
    )
    layout.addWidget(picker, 1)
    layout.addWidget(draft)
    return row, draft


class VaePicker(QComboBox):
    """The model's own VAE or a VAE file; each model shows the VAE last chosen for it."""

    chosen = Signal(str, str)
    """The user chose a VAE (path, or empty for the model's own) for a model (path)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.addItem(OWN, "")
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(10)
        self.setToolTip("A VAE file to decode images with, remembered for each model")
        self._model_vaes: dict[str, str] = {}
        self._files: list[tuple[str, str, str, str]] = []
        self._family = ""

    def value(self) -> str:
        """The chosen VAE's path (or name); empty for the model's own."""
        return str(self.currentData() or "")

    def select(self, vae: str) -> None:
        """Select a VAE by path or name, adding it to the list if it is new."""
        index = self.findData(vae)
        if index < 0:
            index = self.findText(vae)
        if index < 0:
            self.addItem(Path(vae.replace("\\", "/")).name, vae)
            index = self.count() - 1
        self.setCurrentIndex(index)

    def set_files(self, vaes: Sequence[tuple[str, ...]]) -> None:
        """Offer the VAE files found as (name, path, description[, kind]), keeping the
        choice; the kind (``kl16``, ``flux2``, ``qwen-image`` for the flow families' VAEs)
        lets only the files that fit the chosen model's family be listed."""
        self._files = [(v[0], v[1], v[2], v[3] if len(v) > 3 else "") for v in vaes]
        self._refill()

    def set_family(self, family_id: str) -> None:
        """List only the VAE files that fit models of ``family_id`` (all when unknown)."""
        if family_id != self._family:
            self._family = family_id
            self._refill()

    def _fits(self, kind: str) -> bool:
        if not self._family:
            return True
        layout = family(self._family).split
        if layout is not None:
            return kind == layout.vae
        flow_kinds = {f.split.vae for f in FAMILIES.values() if f.split is not None}
        return kind not in flow_kinds

    def _refill(self) -> None:
        current = self.value()
        self.clear()  # files found before may be gone
        self.addItem(OWN, "")
        for name, path, description, kind in self._files:
            if self._fits(kind) and self.findData(path) < 0:
                self.addItem(name, path)
                self.setItemData(
                    self.count() - 1, f"{description}\n{path}", Qt.ItemDataRole.ToolTipRole
                )
        self.select(current)

    def set_model_vaes(self, choices: dict[str, str]) -> None:
        """The VAE chosen for each model (by model path), as kept in the settings."""
        self._model_vaes = dict(choices)

    def show_for(self, model: str) -> None:
        """Select the VAE remembered for ``model`` (a path)."""
        self.select(self._model_vaes.get(model_key(model), ""))

    def remember(self, model: str) -> None:
        """Keep the VAE the user just chose for ``model`` (a path), and say so."""
        model = model_key(model)
        if not model:
            return
        vae = self.value()
        if vae:
            self._model_vaes[model] = vae
        else:
            self._model_vaes.pop(model, None)
        self.chosen.emit(model, vae)
