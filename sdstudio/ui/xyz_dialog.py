"""The X/Y/Z plot dialog: up to three axes over the prompt panel's settings.

Each row is an axis kind and its values in A1111's syntax. Every edit plans the
whole plot again (pure Python, quick), so the count of images, or what is wrong
with a value, shows at once, and "Run" is offered only for a plot that will run.
"""

from __future__ import annotations

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QGridLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.xyz.axes import AXIS_NAMES, SYNTAX_HINT, Axis, Resolve, parse_axis
from sdstudio.engine.xyz.plan import AXIS_LETTERS, MAX_IMAGES, XyzPlot, plan_plot

NOTHING = "Nothing"

_HELP = (
    'Values are a comma list; quote a value that holds a comma ("a, b").\n'
    "Ranges: 1-5 (every whole number), 1-9 (+2) (a step), 0-1 [5] (a count).\n"
    "Prompt S/R: the first value is searched for in the prompts; each value replaces it.\n"
    "LoRA weight: 0.5, 1 for the prompt's one LoRA tag, or NAME:0.5."
)


class XyzDialog(QDialog):
    """Asks for the axes of a plot over ``base``; :attr:`plot` is the plot to run."""

    def __init__(
        self,
        base: GenerationRequest,
        resolve_model: Resolve | None = None,
        parent: QWidget | None = None,
        *,
        max_images: int = MAX_IMAGES,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("X/Y/Z plot")
        self.base = base
        self.resolve_model = resolve_model
        self.max_images = max_images
        self.plot: XyzPlot | None = None
        self.kinds: list[QComboBox] = []
        self.values: list[QLineEdit] = []
        self.count = QLabel(wordWrap=True)
        rows = QGridLayout()
        for row, letter in enumerate(AXIS_LETTERS):
            kind = QComboBox()
            kind.addItems(([] if row == 0 else [NOTHING]) + AXIS_NAMES)
            kind.setAccessibleName(f"{letter} type")
            values = QLineEdit(placeholderText=SYNTAX_HINT)
            values.setAccessibleName(f"{letter} values")
            values.setToolTip(_HELP)
            kind.currentTextChanged.connect(self._update)
            values.textChanged.connect(self._update)
            rows.addWidget(QLabel(f"{letter} type"), row, 0)
            rows.addWidget(kind, row, 1)
            rows.addWidget(values, row, 2)
            self.kinds.append(kind)
            self.values.append(values)
        rows.setColumnStretch(2, 1)
        self.keep_random = QCheckBox("Keep -1 for seeds")
        self.keep_random.setToolTip(
            "With a random seed (-1), let every image draw its own seed. Off: one seed is "
            "drawn for the whole plot, so the images differ only by their axes."
        )
        self.keep_random.toggled.connect(self._update)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.run_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.run_button.setText("Run")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(rows)
        layout.addWidget(self.keep_random)
        layout.addWidget(self.count)
        layout.addWidget(self.buttons)
        self.resize(560, self.sizeHint().height())
        self.kinds[0].setCurrentText("Steps")
        self._update()

    def set_axis(self, row: int, kind: str, values: str) -> None:
        """Fill axis row ``row`` (0 for X)."""
        self.kinds[row].setCurrentText(kind)
        self.values[row].setText(values)

    def axes(self) -> list[Axis]:
        """The axes filled in, in order; an empty row ends them (Y before Z)."""
        axes: list[Axis] = []
        for row, (kind, values) in enumerate(zip(self.kinds, self.values, strict=True)):
            name = kind.currentText()
            if name == NOTHING:
                continue
            if len(axes) < row:
                raise SdStudioError(
                    f"Fill in the {AXIS_LETTERS[len(axes)]} axis before the {AXIS_LETTERS[row]} "
                    "axis."
                )
            resolve = self.resolve_model if name == "Checkpoint name" else None
            axes.append(parse_axis(name, values.text(), limit=self.max_images, resolve=resolve))
        return axes

    def _update(self) -> None:
        self.plot = None
        empty = next(
            (
                letter
                for letter, kind, values in zip(AXIS_LETTERS, self.kinds, self.values, strict=True)
                if kind.currentText() != NOTHING and not values.text().strip()
            ),
            None,
        )
        if empty is not None:
            self.count.setText(f"Enter the {empty} values.")
            self.count.setStyleSheet("")
            self.run_button.setEnabled(False)
            return
        try:
            plot = plan_plot(
                self.base,
                self.axes(),
                max_images=self.max_images,
                keep_random_seeds=self.keep_random.isChecked(),
            )
        except SdStudioError as error:
            self.count.setText(str(error))
            self.count.setStyleSheet("color: #d33")
            self.run_button.setEnabled(False)
            return
        self.plot = plot
        columns, rows, depth = plot.shape
        images = len(plot.cells) * self.base.batch_size
        shape = " × ".join(str(n) for n in (columns, rows, depth)[: len(plot.axes)])
        self.count.setText(f"{images} image{'s' if images != 1 else ''} ({shape})")
        self.count.setStyleSheet("")
        self.run_button.setEnabled(True)
