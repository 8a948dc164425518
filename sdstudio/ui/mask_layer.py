"""The inpainting mask: painted over the source image, white (opaque) means repaint.

Strokes, clears and outpainting are undoable commands on a QUndoStack, whose
text (``"mask stroke"``) names the change in the Undo and Redo tooltips.
"""

from __future__ import annotations

from typing import Any

from PIL import Image
from PySide6.QtCore import QObject, QPointF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QPixmap, QUndoCommand, QUndoStack
from PySide6.QtWidgets import QGraphicsPixmapItem, QGraphicsScene

OVERLAY_COLOR = QColor(255, 64, 96)


class MaskLayer(QObject):
    """A paintable mask of the source image's size, shown as a translucent overlay."""

    changed = Signal()

    def __init__(self, scene: QGraphicsScene, undo: QUndoStack) -> None:
        super().__init__(scene)
        self.undo = undo
        self.brush_size = 48
        self.erasing = False
        self._mask = QImage()
        self._before: QImage | None = None
        self._last: QPointF | None = None
        self._item = QGraphicsPixmapItem()
        self._item.setZValue(1)
        self._item.setOpacity(0.55)
        scene.addItem(self._item)

    @property
    def size(self) -> tuple[int, int]:
        """The mask's size in pixels."""
        return (self._mask.width(), self._mask.height())

    def reset(self, width: int, height: int) -> None:
        """Start an empty mask of this size (not undoable: a new source image)."""
        self._mask = _blank(width, height)
        self._refresh()

    def replace(self, mask: QImage) -> None:
        """Set the mask without an undo step (used by undo commands)."""
        self._mask = mask.copy()
        self._refresh()

    def image(self) -> QImage:
        """A copy of the mask (alpha = repaint)."""
        return self._mask.copy()

    def has_paint(self) -> bool:
        """Whether any pixel is marked for repainting."""
        if self._mask.isNull():
            return False
        alpha = self.to_pil().getextrema()
        return bool(alpha[1] > 0)  # type: ignore[index, operator]

    def to_pil(self) -> Image.Image:
        """The mask as a greyscale PIL image: 255 = repaint."""
        rgba = self._mask.convertToFormat(QImage.Format.Format_RGBA8888)
        data = bytes(rgba.constBits())[: rgba.sizeInBytes()]
        image = Image.frombuffer(
            "RGBA", (rgba.width(), rgba.height()), data, "raw", "RGBA", rgba.bytesPerLine(), 1
        )
        return image.getchannel("A").point(lambda a: 255 if a >= 128 else 0)

    def set_visible(self, visible: bool) -> None:
        """Show or hide the overlay."""
        self._item.setVisible(visible)

    def begin_stroke(self, point: QPointF) -> None:
        """Start painting (or erasing) at ``point`` (scene coordinates)."""
        if self._mask.isNull():
            return
        self._before = self._mask.copy()
        self._last = point
        self._paint(point, point)

    def continue_stroke(self, point: QPointF) -> None:
        """Paint from the last point to ``point``."""
        if self._before is None or self._last is None:
            return
        self._paint(self._last, point)
        self._last = point

    def end_stroke(self) -> None:
        """Finish the stroke as one undo step."""
        if self._before is None:
            return
        self.undo.push(LayerChange(self, self._before, self._mask.copy(), "mask stroke"))
        self._before = None
        self._last = None

    def clear(self) -> None:
        """Remove all paint, undoably."""
        if self.has_paint():
            blank = _blank(*self.size)
            self.undo.push(LayerChange(self, self._mask.copy(), blank, "clear mask"))

    def _paint(self, start: QPointF, end: QPointF) -> None:
        painter = QPainter(self._mask)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if self.erasing:
            painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_Clear)
        pen = QPen(
            OVERLAY_COLOR,
            self.brush_size,
            Qt.PenStyle.SolidLine,
            Qt.PenCapStyle.RoundCap,
            Qt.PenJoinStyle.RoundJoin,
        )
        painter.setPen(pen)
        painter.drawLine(start, end)
        painter.end()
        self._refresh()

    def _refresh(self) -> None:
        self._item.setPixmap(QPixmap.fromImage(self._mask))
        self.changed.emit()


class LayerChange(QUndoCommand):
    """Swap a painted layer (the mask, a control drawing) between two states."""

    def __init__(self, layer: Any, before: QImage, after: QImage, text: str) -> None:
        super().__init__(text)
        self._layer = layer
        self._before = before
        self._after = after

    def redo(self) -> None:
        self._layer.replace(self._after)

    def undo(self) -> None:
        self._layer.replace(self._before)


def mask_from_pil(mask: Image.Image) -> QImage:
    """A mask layer image from a greyscale PIL mask (255 = repaint)."""
    alpha = mask.convert("L")
    overlay = Image.new("RGBA", alpha.size, (*OVERLAY_COLOR.getRgb()[:3], 0))
    overlay.putalpha(alpha)
    data = overlay.tobytes("raw", "RGBA")
    image = QImage(
        data, overlay.width, overlay.height, overlay.width * 4, QImage.Format.Format_RGBA8888
    )
    return image.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)


def _blank(width: int, height: int) -> QImage:
    image = QImage(width, height, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    return image
