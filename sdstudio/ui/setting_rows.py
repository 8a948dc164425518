"""Compound rows of the prompt panel: the sampler with its schedule type, steps and
guidance, the seed, and the size."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QRegularExpression, QSignalBlocker
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine import samplers
from sdstudio.engine.request import MAX_DISTILLED_GUIDANCE, MAX_SEED, MAX_SIZE, MAX_STEPS, MIN_SIZE

SIZE_PRESETS = [
    ("Square 512", 512, 512),
    ("Portrait 2:3", 512, 768),
    ("Landscape 3:2", 768, 512),
    ("Wide 16:9", 912, 512),
    ("Square 768", 768, 768),
    ("SDXL 1024", 1024, 1024),
]


SD_DEFAULT = ("DPM++ 2M", "Karras")
FLOW_DEFAULT = ("Euler", "Simple")


class SamplerRow(QWidget):
    """The sampler and the schedule types it supports; a schedule type the user chose
    is kept while the sampler supports it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.sampler = _narrow(QComboBox(toolTip="Sampler"))
        self.sampler.addItems(samplers.sampler_names())
        self.schedule = _narrow(QComboBox(toolTip="Schedule type"))
        self._chosen_schedule: str | None = None
        self._flow = False
        self.schedule.activated.connect(self._on_schedule_activated)
        self.sampler.currentTextChanged.connect(self._update_schedules)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.sampler, 3)
        layout.addWidget(self.schedule, 2)
        self.choose(*SD_DEFAULT)

    def set_flow(self, flow: bool) -> None:
        """Offer the samplers of flow-matching models (Flux, SD 3.x) or of the others,
        keeping the chosen sampler and schedule type where the new list has them."""
        if flow == self._flow:
            return
        sampler, schedule = self.chosen()
        self._flow = flow
        with QSignalBlocker(self.sampler):
            self.sampler.clear()
            self.sampler.addItems(samplers.sampler_names(flow))
        if sampler in samplers.sampler_names(flow):
            self.choose(sampler, schedule)
        else:
            self.choose(*((FLOW_DEFAULT) if flow else (SD_DEFAULT)))

    def choose(self, sampler: str, schedule: str) -> None:
        """Select a sampler and, where it supports it, a schedule type (unknown
        samplers are ignored)."""
        if sampler not in samplers.sampler_names(self._flow):
            return
        self._chosen_schedule = schedule
        self.sampler.setCurrentText(sampler)
        self._update_schedules(sampler)

    def chosen(self) -> tuple[str, str]:
        """The sampler and schedule type selected."""
        return self.sampler.currentText(), self.schedule.currentText()

    def _on_schedule_activated(self, _index: int) -> None:
        self._chosen_schedule = self.schedule.currentText()

    def _update_schedules(self, sampler: str) -> None:
        self.schedule.clear()
        if not sampler:
            return
        supported = samplers.schedules_for(sampler, self._flow)
        self.schedule.addItems(supported)
        chosen = self._chosen_schedule
        default = samplers.get_sampler(sampler, self._flow).default_schedule
        self.schedule.setCurrentText(chosen if chosen in supported else default)


class StepsRow(QWidget):
    """The number of steps and the guidance (CFG scale)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.steps = QSpinBox(minimum=1, maximum=MAX_STEPS, value=20)
        self.guidance = QDoubleSpinBox(minimum=0.0, maximum=50.0, value=7.0, singleStep=0.5)
        self.guidance.setDecimals(1)
        self.guidance.setToolTip("Guidance (CFG scale): how closely to follow the prompt")
        self.distilled = QDoubleSpinBox(
            minimum=0.0, maximum=MAX_DISTILLED_GUIDANCE, value=3.5, singleStep=0.5
        )
        self.distilled.setDecimals(1)
        self.distilled.setToolTip(
            "Distilled CFG scale: the guidance Flux.1 dev takes in (3.5 by default); "
            "CFG above 1 adds real guidance with the negative prompt, at twice the time"
        )
        self._distilled_label = QLabel("Distilled")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.steps, 1)
        layout.addWidget(QLabel("CFG"))
        layout.addWidget(self.guidance, 1)
        layout.addWidget(self._distilled_label)
        layout.addWidget(self.distilled, 1)
        self.show_distilled(False)

    def show_distilled(self, shown: bool) -> None:
        """Show the distilled guidance control (for families that take it)."""
        self._distilled_label.setVisible(shown)
        self.distilled.setVisible(shown)


class SeedRow(QWidget):
    """The seed (empty for a random one), with buttons for a random seed and the last
    image's seed (``last`` gives it)."""

    def __init__(self, last: Callable[[], int | None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.seed = QLineEdit(placeholderText="Random")
        self.seed.setValidator(
            QRegularExpressionValidator(QRegularExpression(r"-1|\d{0,20}"), self.seed)
        )
        self.seed.setToolTip(f"0 to {MAX_SEED}; empty or -1 draws a new random seed each time")
        random_seed = QToolButton(text="Random", toolTip="Draw a new random seed each time")
        random_seed.clicked.connect(self.seed.clear)
        reuse_seed = QToolButton(text="Last", toolTip="Reuse the seed of the last image")
        reuse_seed.clicked.connect(lambda: self._reuse(last()))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.seed, 1)
        layout.addWidget(random_seed)
        layout.addWidget(reuse_seed)

    def _reuse(self, seed: int | None) -> None:
        if seed is not None:
            self.seed.setText(str(seed))


class SizeRow(QWidget):
    """Width and height, a swap button and a menu of common sizes."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.width_box = QSpinBox(minimum=MIN_SIZE, maximum=MAX_SIZE, value=512, singleStep=64)
        self.height_box = QSpinBox(minimum=MIN_SIZE, maximum=MAX_SIZE, value=512, singleStep=64)
        self.width_box.setToolTip("Width in pixels")
        self.height_box.setToolTip("Height in pixels")
        self._multiple = 8
        swap = QToolButton(text="⇄", toolTip="Swap width and height")
        swap.clicked.connect(lambda: self.set_size(self.height_box.value(), self.width_box.value()))
        self.presets = QToolButton(text="▾", toolTip="Common sizes")
        self.presets.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.presets)
        for name, width, height in SIZE_PRESETS:
            menu.addAction(f"{name} ({width}×{height})", self._preset(width, height))
        self.presets.setMenu(menu)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.width_box, 1)
        layout.addWidget(QLabel("×"))
        layout.addWidget(self.height_box, 1)
        layout.addWidget(swap)
        layout.addWidget(self.presets)

    def set_size(self, width: int, height: int) -> None:
        """Show a size."""
        self.width_box.setValue(width)
        self.height_box.setValue(height)

    def set_multiple(self, multiple: int) -> None:
        """Sides become multiples of this (8; 16 for the 2x2-patch transformers)."""
        self._multiple = multiple
        for box in (self.width_box, self.height_box):
            box.setToolTip(f"{box.toolTip().split(' (')[0]} (a multiple of {multiple})")

    def size(self) -> tuple[int, int]:  # type: ignore[override]
        """The size shown, each side rounded down to the model's multiple (8 or 16)."""
        step = self._multiple
        return (
            max(step, self.width_box.value() // step * step),
            max(step, self.height_box.value() // step * step),
        )

    def _preset(self, width: int, height: int) -> Callable[[], None]:
        return lambda: self.set_size(width, height)


def _narrow(combo: QComboBox) -> QComboBox:
    """A combo box that may be narrower than its longest item (which the list shows)."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(6)
    return combo


def switched_section(section: QWidget, toggle: QWidget, switch: QWidget, body: QWidget) -> None:
    """Lay out a folding section that can be switched on: its folding header and its
    on/off switch on one line, its settings under them."""
    header = QHBoxLayout()
    header.setContentsMargins(0, 0, 0, 0)
    header.addWidget(toggle)
    header.addWidget(switch)
    header.addStretch(1)
    layout = QVBoxLayout(section)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(2)
    layout.addLayout(header)
    layout.addWidget(body)
