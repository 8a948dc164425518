"""Comparing two images from the history: a wipe (or side by side) and what differs.

Drag across the picture to move the dividing line: image A is on its left,
image B on its right, both fitted to the same frame. Below, the settings that
differ between the two are listed, so a change of seed, sampler or prompt
weight can be told from its effect.
"""

from __future__ import annotations

from PIL import Image
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.history import HistoryEntry
from sdstudio.engine.request import differences


class CompareView(QWidget):
    """Two images in one frame, split by a line the user drags (or side by side)."""

    def __init__(self, first: QImage, second: QImage, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.first = first
        self.second = second
        self.split = 0.5
        """Where the line is, from 0 (all B) to 1 (all A)."""
        self.side_by_side = False
        self.setMinimumSize(320, 240)
        self.setCursor(Qt.CursorShape.SplitHCursor)
        self.setToolTip("Drag to move the line between A (left) and B (right)")

    def set_side_by_side(self, on: bool) -> None:
        """Show the two images next to each other instead of one over the other."""
        self.side_by_side = on
        self.setCursor(Qt.CursorShape.ArrowCursor if on else Qt.CursorShape.SplitHCursor)
        self.update()

    def set_split(self, fraction: float) -> None:
        """Put the line at ``fraction`` of the width."""
        self.split = min(1.0, max(0.0, fraction))
        self.update()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        """Move the line where the user clicks."""
        self._follow(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        """Move the line while the user drags."""
        self._follow(event)

    def paintEvent(self, event: QPaintEvent) -> None:
        """Draw A and B, and the line between them."""
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.fillRect(self.rect(), self.palette().window())
        if self.side_by_side:
            half = self.width() / 2
            painter.drawImage(_fit(self.first, QRectF(0, 0, half, self.height())), self.first)
            painter.drawImage(_fit(self.second, QRectF(half, 0, half, self.height())), self.second)
        else:
            frame = QRectF(self.rect())
            line = frame.width() * self.split
            painter.save()
            painter.setClipRect(QRectF(0, 0, line, frame.height()))
            painter.drawImage(_fit(self.first, frame), self.first)
            painter.setClipRect(QRectF(line, 0, frame.width() - line, frame.height()))
            painter.drawImage(_fit(self.second, frame), self.second)
            painter.restore()
            painter.setPen(QPen(QColor(255, 255, 255, 220), 2))
            painter.drawLine(QPointF(line, 0), QPointF(line, frame.height()))
        painter.setPen(self.palette().windowText().color())
        painter.drawText(8, 18, "A")
        painter.drawText(self.width() - 16, 18, "B")
        painter.end()

    def _follow(self, event: QMouseEvent) -> None:
        if not self.side_by_side and event.buttons() & Qt.MouseButton.LeftButton:
            self.set_split(event.position().x() / max(1, self.width()))


class CompareDialog(QDialog):
    """A window comparing two history images and their settings."""

    def __init__(
        self,
        first: tuple[HistoryEntry, Image.Image],
        second: tuple[HistoryEntry, Image.Image],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        (entry_a, image_a), (entry_b, image_b) = first, second
        self.setWindowTitle(f"Compare #{entry_a.id} and #{entry_b.id}")
        self.view = CompareView(_qimage(image_a), _qimage(image_b))
        side = QCheckBox("Side by side")
        side.toggled.connect(self.view.set_side_by_side)
        self.side_by_side = side

        self.table = QTreeWidget()
        self.table.setRootIsDecorated(False)
        self.table.setHeaderLabels(["Setting", f"A (#{entry_a.id})", f"B (#{entry_b.id})"])
        self.table.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        changed = differences(entry_a.request, entry_b.request)
        if entry_a.model_name != entry_b.model_name:
            changed.insert(0, ("model name", entry_a.model_name, entry_b.model_name))
        for name, value_a, value_b in changed:
            self.table.addTopLevelItem(QTreeWidgetItem([name, str(value_a), str(value_b)]))
        summary = QLabel(
            "The settings are the same." if not changed else f"{len(changed)} settings differ:"
        )
        self.table.setVisible(bool(changed))
        self.table.setMaximumHeight(160)

        top = QHBoxLayout()
        top.addWidget(summary, 1)
        top.addWidget(side)
        layout = QVBoxLayout(self)
        layout.addWidget(self.view, 1)
        layout.addLayout(top)
        layout.addWidget(self.table)
        self.resize(900, 760)


def _fit(image: QImage, frame: QRectF) -> QRectF:
    """The largest rectangle of ``image``'s shape centred in ``frame``."""
    if image.isNull() or image.width() == 0 or image.height() == 0:
        return frame
    scale = min(frame.width() / image.width(), frame.height() / image.height())
    width, height = image.width() * scale, image.height() * scale
    return QRectF(
        frame.x() + (frame.width() - width) / 2,
        frame.y() + (frame.height() - height) / 2,
        width,
        height,
    )


def _qimage(image: Image.Image) -> QImage:
    rgb = image.convert("RGB")
    data = rgb.tobytes()
    return QImage(data, rgb.width, rgb.height, rgb.width * 3, QImage.Format.Format_RGB888).copy()
