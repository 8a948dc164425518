"""The outpainting dialog: how many pixels to add on each side, how to pre-fill them,
and the size that makes."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGridLayout,
    QLabel,
    QLayout,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.errors import SdStudioError

if TYPE_CHECKING:
    from sdstudio.engine.outpaint import Fill

FILL_CHOICES = (
    ("Stretch edges + noise", "stretch"),
    ("Blur fill", "blur"),
)
MAX_SIDE = 2048
STEP = 8


class OutpaintDialog(QDialog):
    """Left, top, right and bottom pixels (0 to 2048), the fill, and the new size."""

    def __init__(
        self,
        size: tuple[int, int],
        sides: tuple[int, int, int, int] = (0, 0, 0, 0),
        fill: Fill = "stretch",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Outpaint")
        self._size = size
        self.spins: dict[str, QSpinBox] = {}
        grid = QGridLayout()
        for (name, row, column), value in zip(
            (("left", 1, 0), ("top", 0, 1), ("right", 1, 2), ("bottom", 2, 1)), sides, strict=True
        ):
            spin = QSpinBox(minimum=0, maximum=MAX_SIDE, singleStep=STEP, value=value)
            spin.setSuffix(" px")
            spin.setAccessibleName(f"Pixels to add on the {name}")
            spin.setToolTip(f"Pixels to add on the {name}")
            spin.valueChanged.connect(self._update)
            grid.addWidget(spin, row, column)
            self.spins[name] = spin
        self.size_label = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.size_label.setFrameShape(QLabel.Shape.StyledPanel)
        self.size_label.setMinimumSize(150, 64)
        grid.addWidget(self.size_label, 1, 1)

        self.fill_box = QComboBox()
        for label, data in FILL_CHOICES:
            self.fill_box.addItem(label, data)
        self.fill_box.setCurrentIndex(max(0, self.fill_box.findData(fill)))
        self.fill_box.setToolTip(
            "What the new area starts as: the edges stretched outwards with noise, or a "
            "smooth blend of the colours around it. The model repaints it."
        )
        form = QFormLayout()
        form.addRow("Fill", self.fill_box)
        self.note = QLabel(wordWrap=True)
        self.note.setMaximumWidth(360)

        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Outpaint")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.setSizeConstraint(QLayout.SizeConstraint.SetFixedSize)  # grows with the note
        layout.addWidget(QLabel("Pixels to add on each side:"))
        layout.addLayout(grid)
        layout.addLayout(form)
        layout.addWidget(self.note)
        layout.addWidget(self.buttons)
        self._update()

    def sides(self) -> tuple[int, int, int, int]:
        """The pixels asked for: left, top, right, bottom."""
        spins = self.spins
        return (
            spins["left"].value(),
            spins["top"].value(),
            spins["right"].value(),
            spins["bottom"].value(),
        )

    def fill(self) -> Fill:
        """``"stretch"`` or ``"blur"``."""
        return cast("Fill", self.fill_box.currentData())

    def _update(self) -> None:
        from sdstudio.engine.outpaint import added_pixels

        width, height = self._size
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        try:
            added = added_pixels(self._size, *self.sides())
        except SdStudioError as error:
            self.size_label.setText(f"{width}×{height}")
            self.note.setText(str(error))
            ok.setEnabled(False)
            return
        new_width = width + added[0] + added[2]
        new_height = height + added[1] + added[3]
        self.size_label.setText(f"{width}×{height}\n→ {new_width}×{new_height}")
        rounded = added != self.sides()
        self.note.setText("Rounded up so that the new size is a multiple of 8." if rounded else "")
        ok.setEnabled(any(added))
