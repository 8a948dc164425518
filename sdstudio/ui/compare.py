"""Comparing two images from the history: a wipe (or side by side) and what differs;
and one image alone (an X/Y/Z plot's grid, which already sets its images side by side).

Drag across the picture to move the dividing line: image A is on its left,
image B on its right, both in one frame so that they line up. Images of the
same shape are shown at the same size (an upscale lines up with its original);
images of different shapes at the same scale, centred on each other (an
outpainting lines up with its source). Below, the sizes and the settings that
differ are listed, so a change of seed, sampler or prompt weight can be told
from its effect.
"""

from __future__ import annotations

from PIL import Image
from PySide6.QtCore import QPointF, QRectF, QSizeF, Qt
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
        """Put the line at ``fraction`` of the images' width."""
        self.split = min(1.0, max(0.0, fraction))
        self.update()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        """Move the line where the user clicks."""
        self._follow(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        """Move the line while the user drags."""
        self._follow(event)

    def same_shape(self) -> bool:
        """Whether A and B have the same aspect ratio (then they are shown at one size)."""
        return _same_shape(self.first, self.second)

    def placements(self, frame: QRectF) -> tuple[QRectF, QRectF, QRectF]:
        """Where A and B are drawn in ``frame``, and the box both lie in."""
        return _layout(self.first, self.second, frame)

    def paintEvent(self, event: QPaintEvent) -> None:
        """Draw A and B, and the line between them."""
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.fillRect(self.rect(), self.palette().window())
        if self.side_by_side:
            half = self.width() / 2
            painter.drawImage(self.placements(QRectF(0, 0, half, self.height()))[0], self.first)
            painter.drawImage(self.placements(QRectF(half, 0, half, self.height()))[1], self.second)
        else:
            place_a, place_b, box = self.placements(QRectF(self.rect()))
            line = box.x() + box.width() * self.split
            painter.save()
            painter.setClipRect(QRectF(0, 0, line, self.height()))
            painter.drawImage(place_a, self.first)
            painter.setClipRect(QRectF(line, 0, self.width() - line, self.height()))
            painter.drawImage(place_b, self.second)
            painter.restore()
            painter.setPen(QPen(QColor(255, 255, 255, 220), 2))
            painter.drawLine(QPointF(line, box.top()), QPointF(line, box.bottom()))
        painter.setPen(self.palette().windowText().color())
        painter.drawText(8, 18, "A")
        painter.drawText(self.width() - 16, 18, "B")
        painter.end()

    def _follow(self, event: QMouseEvent) -> None:
        if not self.side_by_side and event.buttons() & Qt.MouseButton.LeftButton:
            box = self.placements(QRectF(self.rect()))[2]
            self.set_split((event.position().x() - box.x()) / max(1.0, box.width()))


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
        self.sizes = QLabel(_sizes_text(image_a.size, image_b.size, self.view.same_shape()))
        summary = QLabel(
            "The settings are the same." if not changed else f"{len(changed)} settings differ:"
        )
        self.table.setVisible(bool(changed))
        self.table.setMaximumHeight(160)

        top = QHBoxLayout()
        top.addWidget(self.sizes)
        top.addSpacing(16)
        top.addWidget(summary, 1)
        top.addWidget(side)
        layout = QVBoxLayout(self)
        layout.addWidget(self.view, 1)
        layout.addLayout(top)
        layout.addWidget(self.table)
        self.resize(900, 760)


class ImageView(QWidget):
    """One image, as large as the widget allows."""

    def __init__(self, image: QImage, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.image = image
        self.setMinimumSize(320, 240)

    def placement(self) -> QRectF:
        """Where the image is drawn: fitted to the widget, centred."""
        return _fit(QSizeF(self.image.size()), QRectF(self.rect()))

    def paintEvent(self, event: QPaintEvent) -> None:
        """Draw the image."""
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.fillRect(self.rect(), self.palette().window())
        painter.drawImage(self.placement(), self.image)
        painter.end()


class ImageDialog(QDialog):
    """A window showing one image (an X/Y/Z plot's grid) and where its file is."""

    def __init__(
        self, title: str, image: Image.Image, path: str, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.view = ImageView(_qimage(image))
        self.caption = QLabel(f"{image.width}×{image.height} · {path}")
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.caption)
        self.resize(min(1200, max(480, image.width + 40)), min(900, max(360, image.height + 80)))


def _sizes_text(size_a: tuple[int, int], size_b: tuple[int, int], same_shape: bool) -> str:
    sizes = f"A {size_a[0]}×{size_a[1]}, B {size_b[0]}×{size_b[1]}"
    if size_a == size_b:
        return sizes
    return f"{sizes}: shown at the same {'size' if same_shape else 'scale, centred'}"


def _same_shape(first: QImage, second: QImage) -> bool:
    across = first.width() * second.height()
    return abs(across - second.width() * first.height()) <= 0.01 * max(1, across)


def _layout(first: QImage, second: QImage, frame: QRectF) -> tuple[QRectF, QRectF, QRectF]:
    """A's and B's rectangles in ``frame`` and the box around both: one rectangle for
    images of the same shape, else both at one scale, centred in a box that holds both."""
    if first.isNull() or second.isNull() or _same_shape(first, second):
        place = _fit(QSizeF(first.size()), frame)
        return place, place, place
    box = _fit(
        QSizeF(max(first.width(), second.width()), max(first.height(), second.height())), frame
    )
    scale = box.width() / max(first.width(), second.width())
    places = []
    for image in (first, second):
        width, height = image.width() * scale, image.height() * scale
        places.append(
            QRectF(
                box.x() + (box.width() - width) / 2,
                box.y() + (box.height() - height) / 2,
                width,
                height,
            )
        )
    return places[0], places[1], box


def _fit(size: QSizeF, frame: QRectF) -> QRectF:
    """The largest rectangle of ``size``'s shape centred in ``frame``."""
    if size.width() <= 0 or size.height() <= 0:
        return frame
    scale = min(frame.width() / size.width(), frame.height() / size.height())
    width, height = size.width() * scale, size.height() * scale
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
