"""The prompt panel's folding "Detail faces" section: after the image is made, each face
found is repainted at full resolution with its own prompt (ADetailer's job).

The header has the on/off switch and names the settings in effect, so a detailer loaded
from an image is never hidden while the section is folded. Settings the section does not
show (the detector, the confidence, the padding ...) are kept from the request loaded.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QPlainTextEdit,
    QWidget,
)

from sdstudio.engine.refine.detailer_settings import DEFAULT_DETECTOR, Detailer
from sdstudio.ui.hires_rows import FoldButton
from sdstudio.ui.setting_rows import switched_section

SWITCH_TIP = (
    "After the image is made, find the faces and repaint each at full resolution "
    "(as ADetailer does)"
)


class DetailerRow(QWidget):
    """The detailer's switch, prompts and denoising strength, folded away by default."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._kept = Detailer()
        self.body = QWidget(visible=False)
        self.toggle = FoldButton(self.body, "Detail faces", "detailerToggle")
        self.switch = QCheckBox("On")
        self.switch.setObjectName("detailerSwitch")
        self.switch.setToolTip(SWITCH_TIP)

        self.prompt = _small_text("Same as the image's")
        self.prompt.setToolTip(
            "Prompt of the faces (empty: the image's; [PROMPT] stands for the image's "
            "prompt, [SEP] separates the prompts of the first, second … face)"
        )
        self.negative = _small_text("Same as the image's")
        self.negative.setToolTip("Negative prompt of the faces (empty: the image's)")
        self.denoise = QDoubleSpinBox(
            minimum=0.01, maximum=1.0, value=self._kept.denoise, singleStep=0.05
        )
        self.denoise.setDecimals(2)
        self.denoise.setToolTip("Denoising strength: how much each face is repainted")

        form = QFormLayout(self.body)
        form.setContentsMargins(12, 0, 0, 0)
        form.addRow("Prompt", self.prompt)
        form.addRow("Negative", self.negative)
        form.addRow("Denoising", self.denoise)

        switched_section(self, self.toggle, self.switch, self.body)

        self.switch.toggled.connect(self._update)
        self.denoise.valueChanged.connect(self._update)
        for edit in (self.prompt, self.negative):
            edit.textChanged.connect(self._update)
        self._update()

    def set_expanded(self, expanded: bool) -> None:
        """Unfold or fold the section."""
        self.toggle.setChecked(expanded)

    def values(self) -> Detailer | None:
        """The detailer, or None when it is off (raises InvalidRequest when a value is bad)."""
        if not self.switch.isChecked():
            return None
        return dataclasses.replace(
            self._kept,
            prompt=self.prompt.toPlainText(),
            negative_prompt=self.negative.toPlainText(),
            denoise=round(self.denoise.value(), 2),
        )

    def load(self, detailer: Detailer | None) -> None:
        """Show a request's detailer; None switches it off (the rest stays as it is)."""
        if detailer is None:
            self.switch.setChecked(False)
            return
        self._kept = detailer
        self.prompt.setPlainText(detailer.prompt)
        self.negative.setPlainText(detailer.negative_prompt)
        self.denoise.setValue(detailer.denoise)
        self.switch.setChecked(True)
        self._update()

    def summary(self) -> str:
        """The header's text: ``Detail faces (denoise 0.4, own prompt)``, or ``(off)``."""
        if not self.switch.isChecked():
            return "Detail faces (off)"
        said = [f"denoise {self.denoise.value():g}"]
        if self._kept.detector.casefold() != DEFAULT_DETECTOR:
            said.insert(0, Path(self._kept.detector).name)
        if self.prompt.toPlainText() or self.negative.toPlainText():
            said.append("own prompt")
        return f"Detail faces ({', '.join(said)})"

    def _update(self) -> None:
        self.toggle.set_full_text(self.summary())
        self.changed.emit()


def _small_text(placeholder: str) -> QPlainTextEdit:
    edit = QPlainTextEdit(placeholderText=placeholder)
    edit.setTabChangesFocus(True)
    edit.setFixedHeight(2 * edit.fontMetrics().lineSpacing() + 12)
    return edit
