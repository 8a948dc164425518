"""The loss of a training run, step by step, drawn by hand (no plotting library: the
app does not carry matplotlib for one line chart)."""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPen, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QWidget

SMOOTHING = 0.9
"""Weight of the past in the smoothed line (an exponential moving average, as
TensorBoard's smoothing slider draws it)."""


def smoothed(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """The exponential moving average of ``values``, debiased so that it starts at the
    first value rather than at zero."""
    out: list[float] = []
    average = 0.0
    for count, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**count))
    return out


class LossPlot(QWidget):
    """Loss per step: the raw values faintly, the smoothed line over them, with the
    step and loss ranges on the axes."""

    MARGIN_LEFT = 52
    MARGIN = 10
    MARGIN_BOTTOM = 26

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.total_steps = 0
        self.setMinimumSize(240, 140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAccessibleName("Loss per step")

    def sizeHint(self) -> QSize:
        return QSize(420, 200)

    def clear(self, total_steps: int = 0) -> None:
        """Forget the points; the x axis runs to ``total_steps`` when given."""
        self.steps.clear()
        self.losses.clear()
        self.total_steps = total_steps
        self.update()

    def add_point(self, step: int, loss: float) -> None:
        """Add the loss of one step (a loss that is not finite is left out of the line)."""
        if not math.isfinite(loss):
            return
        if self.steps and step <= self.steps[-1]:  # a resumed run starts again from its step
            keep = next(i for i, s in enumerate(self.steps) if s >= step)
            del self.steps[keep:], self.losses[keep:]
        self.steps.append(step)
        self.losses.append(loss)
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        text = palette.windowText().color()
        painter.fillRect(self.rect(), palette.base())
        area = QRectF(
            self.MARGIN_LEFT,
            self.MARGIN,
            max(1, self.width() - self.MARGIN_LEFT - self.MARGIN),
            max(1, self.height() - self.MARGIN - self.MARGIN_BOTTOM),
        )
        faint = QColor(text)
        faint.setAlpha(90)
        painter.setPen(QPen(faint, 1))
        painter.drawRect(area)
        painter.setPen(text)
        if not self.losses:
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "Loss per step")
            return
        low, high = min(self.losses), max(self.losses)
        if high - low < 1e-12:
            low, high = low - 0.5 * abs(low or 1), high + 0.5 * abs(high or 1)
        first = min(self.steps[0], 1)
        last = max(self.steps[-1], self.total_steps, first + 1)
        self._axes(painter, area, (first, last), (low, high))

        def point(step: int, loss: float) -> QPointF:
            x = area.left() + (step - first) / (last - first) * area.width()
            y = area.bottom() - (loss - low) / (high - low) * area.height()
            return QPointF(x, y)

        raw = QColor(palette.highlight().color())
        raw.setAlpha(80)
        painter.setPen(QPen(raw, 1))
        painter.drawPolyline(
            QPolygonF([point(s, v) for s, v in zip(self.steps, self.losses, strict=True)])
        )
        painter.setPen(QPen(palette.highlight().color(), 2))
        line = smoothed(self.losses)
        painter.drawPolyline(
            QPolygonF([point(s, v) for s, v in zip(self.steps, line, strict=True)])
        )

    def _axes(
        self,
        painter: QPainter,
        area: QRectF,
        steps: tuple[int, int],
        losses: tuple[float, float],
    ) -> None:
        metrics = painter.fontMetrics()
        height = metrics.height()
        left = self.MARGIN_LEFT - 4
        for value, y in ((losses[1], area.top()), (losses[0], area.bottom() - height)):
            box = QRectF(0, y, left, height)
            painter.drawText(box, Qt.AlignmentFlag.AlignRight, f"{value:.4g}")
        middle = QRectF(0, area.center().y() - height / 2, left, height)
        painter.drawText(middle, Qt.AlignmentFlag.AlignRight, "loss")
        below = QRectF(area.left(), area.bottom() + 4, area.width(), height)
        painter.drawText(below, Qt.AlignmentFlag.AlignLeft, str(steps[0]))
        painter.drawText(below, Qt.AlignmentFlag.AlignHCenter, "step")
        painter.drawText(below, Qt.AlignmentFlag.AlignRight, str(steps[1]))
