"""The prompt panel's folding "Hires fix" section: a second pass that upscales the first
pass's image and repaints it at the larger size (A1111's "Hires. fix").

The header has the on/off switch and names the settings in effect, so a hires fix
loaded from an image or the last session is never hidden while the section is folded.
"""

from __future__ import annotations

from PySide6.QtCore import QSignalBlocker, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QSpinBox,
    QWidget,
)

from sdstudio.engine import samplers
from sdstudio.engine.families import ModelFamily
from sdstudio.engine.refine.hires_settings import (
    IMAGE_UPSCALERS,
    LATENT_UPSCALERS,
    MAX_HIRES_SCALE,
    HiresFix,
)
from sdstudio.engine.request import MAX_SIZE, MAX_STEPS, MIN_SIZE
from sdstudio.ui.hires_rows import SAME, FoldButton, HiresSamplerRow, narrow
from sdstudio.ui.setting_rows import SizeRow, switched_section

UPSCALE_BY, RESIZE_TO = "Upscale by", "Resize to"
SWITCH_TIP = "Make the image in two passes: the second upscales the first and repaints it"
_DEFAULTS = HiresFix()


class HiresSection(QWidget):
    """A1111's hires fix settings, folded away by default, with an on/off switch.

    Give it the panel's :class:`SizeRow` to show the size the second pass makes.
    """

    changed = Signal()

    def __init__(self, size_row: SizeRow | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._size_row = size_row
        self._unusable = ""
        self._multiple = 8
        self._resize_chosen = False

        self.body = QWidget(visible=False)
        self.toggle = FoldButton(self.body, "Hires fix", "hiresToggle")
        self.switch = QCheckBox("On")
        self.switch.setObjectName("hiresSwitch")
        self.switch.setToolTip(SWITCH_TIP)

        self.mode = QComboBox()
        self.mode.addItems([UPSCALE_BY, RESIZE_TO])
        self.mode.setToolTip("Upscale the first pass by a factor, or resize it to a size")
        self.scale = QDoubleSpinBox(
            minimum=1.0, maximum=MAX_HIRES_SCALE, value=_DEFAULTS.scale, singleStep=0.05
        )
        self.scale.setDecimals(2)
        self.scale.setToolTip("How many times larger the second pass is")
        self.resize_width = _side("Width of the second pass")
        self.resize_height = _side("Height of the second pass")
        self._times = QLabel("×")
        size = QHBoxLayout()
        size.setContentsMargins(0, 0, 0, 0)
        for widget in (self.mode, self.scale, self.resize_width, self._times, self.resize_height):
            size.addWidget(widget, 0 if widget in (self.mode, self._times) else 1)
        self.result = QLabel()
        self.result.setObjectName("hiresResult")
        self.result.setToolTip("The first pass's size and the size of the image made")

        self.upscaler = narrow(QComboBox(), 12)
        self.upscaler.setToolTip(
            "Latent: resize the latents before the second pass (needs a denoising "
            "strength of about 0.5 or more); the others resize the decoded image"
        )
        self._extra_upscalers: list[str] = []
        self._fill_upscalers()
        self.steps = QSpinBox(minimum=0, maximum=MAX_STEPS, value=_DEFAULTS.steps)
        self.steps.setSpecialValueText(SAME)
        self.steps.setToolTip("Steps of the second pass (0: as many as the first pass)")
        self.denoise = QDoubleSpinBox(
            minimum=0.0, maximum=1.0, value=_DEFAULTS.denoise, singleStep=0.05
        )
        self.denoise.setDecimals(2)
        self.denoise.setToolTip("Denoising strength: how much the second pass repaints")

        self.more = QWidget(visible=False)
        self.more_toggle = FoldButton(self.more, "More")
        self.sampler_row = HiresSamplerRow()
        self.own_cfg = QCheckBox("Own")
        self.own_cfg.setToolTip("Give the second pass a CFG scale of its own")
        self.cfg = QDoubleSpinBox(minimum=0.0, maximum=50.0, value=7.0, singleStep=0.5)
        self.cfg.setDecimals(1)
        self.cfg.setEnabled(False)
        self.cfg.setToolTip("CFG scale of the second pass")
        self.own_cfg.toggled.connect(self.cfg.setEnabled)
        cfg = QHBoxLayout()
        cfg.setContentsMargins(0, 0, 0, 0)
        cfg.addWidget(self.own_cfg)
        cfg.addWidget(self.cfg, 1)
        self.prompt = _small_text("Same as first pass")
        self.negative = _small_text("Same as first pass")
        self.prompt.setToolTip("Prompt of the second pass (empty: the first pass's)")
        self.negative.setToolTip("Negative prompt of the second pass (empty: the first pass's)")

        more = QFormLayout(self.more)
        more.setContentsMargins(12, 0, 0, 0)
        more.addRow("Sampler", self.sampler_row)
        more.addRow("CFG", cfg)
        more.addRow("Prompt", self.prompt)
        more.addRow("Negative", self.negative)
        form = QFormLayout(self.body)
        form.setContentsMargins(12, 0, 0, 0)
        form.addRow("Size", size)
        form.addRow("", self.result)
        form.addRow("Upscaler", self.upscaler)
        form.addRow("Steps", self.steps)
        form.addRow("Denoising", self.denoise)
        form.addRow(self.more_toggle)
        form.addRow(self.more)

        switched_section(self, self.toggle, self.switch, self.body)

        self.mode.currentIndexChanged.connect(self._on_mode_changed)
        for box in (self.scale, self.denoise, self.cfg):
            box.valueChanged.connect(self._update)
        for spin in (self.resize_width, self.resize_height, self.steps):
            spin.valueChanged.connect(self._update)
        for combo in (self.upscaler, self.sampler_row.sampler, self.sampler_row.schedule):
            combo.currentIndexChanged.connect(self._update)
        for check in (self.switch, self.own_cfg):
            check.toggled.connect(self._update)
        for edit in (self.prompt, self.negative):
            edit.textChanged.connect(self._update)
        if size_row is not None:
            size_row.width_box.valueChanged.connect(self._update)
            size_row.height_box.valueChanged.connect(self._update)
        self._on_mode_changed()

    def set_expanded(self, expanded: bool) -> None:
        """Unfold or fold the section."""
        self.toggle.setChecked(expanded)

    def set_more_expanded(self, expanded: bool) -> None:
        """Unfold or fold the second pass's own sampler, CFG and prompts."""
        self.more_toggle.setChecked(expanded)

    def set_family(self, kind: ModelFamily | None) -> None:
        """Follow the chosen model's family: its samplers and size multiple; a family
        with no image-to-image pipeline cannot run a second pass, and says so."""
        self.sampler_row.set_flow(kind is not None and kind.flow)
        self._multiple = kind.size_multiple if kind is not None else 8
        self._unusable = "" if kind is None or kind.img2img else kind.label
        self.switch.setToolTip(self._why() or SWITCH_TIP)
        self.body.setToolTip(self._why())
        self.switch.setEnabled(not self._unusable)
        self.body.setEnabled(not self._unusable)
        self._update()

    def set_upscalers(self, names: list[str]) -> None:
        """Offer upscaler model files (by name) after the built-in upscalers, keeping
        the current choice."""
        current = self.upscaler.currentText()
        self._extra_upscalers = [n for n in names if n not in (*LATENT_UPSCALERS, *IMAGE_UPSCALERS)]
        self._fill_upscalers()
        self._select_upscaler(current)

    def upscalers(self) -> list[str]:
        """Every upscaler offered, in order."""
        texts = (self.upscaler.itemText(i) for i in range(self.upscaler.count()))
        return [text for text in texts if text]  # not the separators

    def values(self) -> HiresFix | None:
        """The settings, or None when the hires fix is off (or the model cannot run it)
        (raises InvalidRequest when one is bad)."""
        if not self.switch.isChecked() or self._unusable:
            return None
        width = height = 0
        if self.mode.currentText() == RESIZE_TO:
            width, height = self._rounded(self.resize_width), self._rounded(self.resize_height)
        sampler, schedule = self.sampler_row.chosen()
        return HiresFix(
            scale=round(self.scale.value(), 2),
            width=width,
            height=height,
            upscaler=self.upscaler.currentText(),
            steps=self.steps.value(),
            denoise=round(self.denoise.value(), 2),
            sampler=sampler,
            schedule=schedule,
            prompt=self.prompt.toPlainText(),
            negative_prompt=self.negative.toPlainText(),
            guidance_scale=round(self.cfg.value(), 1) if self.own_cfg.isChecked() else None,
        )

    def load(self, hires: HiresFix | None) -> None:
        """Show a request's hires fix; None switches it off (the rest stays as it is)."""
        if hires is None:
            self.switch.setChecked(False)
            return
        self.scale.setValue(hires.scale)
        if hires.width:
            self._resize_chosen = True
            self.resize_width.setValue(hires.width)
            self.resize_height.setValue(hires.height)
        self.mode.setCurrentText(RESIZE_TO if hires.width else UPSCALE_BY)
        self._select_upscaler(hires.upscaler)
        self.steps.setValue(hires.steps)
        self.denoise.setValue(hires.denoise)
        self.sampler_row.choose(hires.sampler, hires.schedule)
        self.own_cfg.setChecked(hires.guidance_scale is not None)
        if hires.guidance_scale is not None:
            self.cfg.setValue(hires.guidance_scale)
        self.prompt.setPlainText(hires.prompt)
        self.negative.setPlainText(hires.negative_prompt)
        self.switch.setChecked(True)
        self._update()

    def summary(self) -> str:
        """The header's text: ``Hires fix (×2, Latent, denoise 0.7)``, or why it is off."""
        if self._unusable:
            return f"Hires fix (not for {self._unusable})"
        if not self.switch.isChecked():
            return "Hires fix (off)"
        if self.mode.currentText() == RESIZE_TO:
            size = f"to {self._rounded(self.resize_width)}×{self._rounded(self.resize_height)}"
        else:
            size = f"×{self.scale.value():g}"
        said = [size, self.upscaler.currentText(), f"denoise {self.denoise.value():g}"]
        if self.steps.value():
            said.append(f"{self.steps.value()} steps")
        return f"Hires fix ({', '.join(said + self._more_settings())})"

    def _more_settings(self) -> list[str]:
        """The settings under "More" that are not the first pass's, in words."""
        said = []
        sampler, schedule = self.sampler_row.chosen()
        if sampler:
            said.append(sampler if schedule == samplers.AUTOMATIC else f"{sampler} {schedule}")
        if self.own_cfg.isChecked():
            said.append(f"CFG {self.cfg.value():g}")
        if self.prompt.toPlainText() or self.negative.toPlainText():
            said.append("own prompt")
        return said

    def _why(self) -> str:
        """Why the chosen model cannot have a hires fix, if it cannot."""
        if not self._unusable:
            return ""
        return f"{self._unusable} has no image-to-image pipeline, which the second pass needs"

    def _update(self) -> None:
        self.toggle.set_full_text(self.summary())
        if self._unusable:
            self.toggle.setToolTip(self._why())
        more = self._more_settings()
        self.more_toggle.set_full_text("More" + (f" ({', '.join(more)})" if more else ""))
        if self._size_row is not None:
            width, height = self._size_row.size()
            target = self._target(width, height)
            self.result.setText(f"{width}×{height} → {target[0]}×{target[1]}")
        self.changed.emit()

    def _target(self, width: int, height: int) -> tuple[int, int]:
        if self.mode.currentText() == RESIZE_TO:
            return self._rounded(self.resize_width), self._rounded(self.resize_height)
        return HiresFix(scale=round(self.scale.value(), 2)).target_size(width, height)

    def _on_mode_changed(self) -> None:
        resize = self.mode.currentText() == RESIZE_TO
        if resize and not self._resize_chosen and self._size_row is not None:
            self._resize_chosen = True
            factor = HiresFix(scale=round(self.scale.value(), 2))
            width, height = factor.target_size(*self._size_row.size())
            self.resize_width.setValue(width)
            self.resize_height.setValue(height)
        self.scale.setVisible(not resize)
        for widget in (self.resize_width, self._times, self.resize_height):
            widget.setVisible(resize)
        self._update()

    def _rounded(self, box: QSpinBox) -> int:
        """A side in multiples of the model's size multiple (8 or 16)."""
        step = self._multiple
        return max(step, box.value() // step * step)

    def _fill_upscalers(self) -> None:
        with QSignalBlocker(self.upscaler):
            self.upscaler.clear()
            self.upscaler.addItems(list(LATENT_UPSCALERS))
            self.upscaler.insertSeparator(self.upscaler.count())
            self.upscaler.addItems(list(IMAGE_UPSCALERS))
            if self._extra_upscalers:
                self.upscaler.insertSeparator(self.upscaler.count())
                self.upscaler.addItems(self._extra_upscalers)

    def _select_upscaler(self, name: str) -> None:
        """Select an upscaler by name; one not offered (a model file not found here) is
        added, so that the request keeps it and the engine says what is missing."""
        if not name:
            return
        index = self.upscaler.findText(name)
        if index < 0:
            self.upscaler.addItem(name)
            index = self.upscaler.count() - 1
        self.upscaler.setCurrentIndex(index)


def _side(tip: str) -> QSpinBox:
    box = QSpinBox(minimum=MIN_SIZE, maximum=MAX_SIZE, value=1024, singleStep=64)
    box.setToolTip(tip)
    return box


def _small_text(placeholder: str) -> QPlainTextEdit:
    edit = QPlainTextEdit(placeholderText=placeholder)
    edit.setTabChangesFocus(True)
    edit.setFixedHeight(2 * edit.fontMetrics().lineSpacing() + 12)
    return edit
