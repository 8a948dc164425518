"""The control layer: a scribble map drawn on the canvas, white strokes on black, that
can guide the next image as a ControlNet unit with preprocessor ``none``.

It covers the source image (and has its size) or, for text-to-image, is a dark page of
the next image's size. The same item shows, at a chosen opacity, either the drawing or
a unit's preprocessed map over the picture ("Show control map"). Strokes and clears
are undoable commands on the canvas's QUndoStack (``"scribble stroke"``).
"""

from __future__ import annotations

from PIL import Image
from PySide6.QtCore import QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QImage,
    QPainter,
    QPen,
    QPixmap,
    QTransform,
    QUndoStack,
)
from PySide6.QtWidgets import QGraphicsPixmapItem, QGraphicsScene

from sdstudio.ui.mask_layer import LayerChange

INK = QColor(255, 255, 255)
PAPER = QColor(0, 0, 0)


class ControlLayer(QObject):
    """A paintable white-on-black map shown over the picture (or as the page)."""

    changed = Signal()

    def __init__(self, scene: QGraphicsScene, undo: QUndoStack) -> None:
        super().__init__(scene)
        self.undo = undo
        self.brush_size = 6
        self.erasing = False
        self.opacity = 0.6
        """How strongly the map covers the picture (the page is always opaque)."""
        self.map_wanted = False
        """Whether "Show control map" is on."""
        self.on_page = False
        """Whether the layer is shown as the page (no picture on the canvas)."""
        self._image = _blank(1, 1)
        self._map: QImage | None = None
        self._drawing_shown = True
        self._rect = QRectF(0, 0, 1, 1)
        self._before: QImage | None = None
        self._last: QPointF | None = None
        self._item = QGraphicsPixmapItem()
        self._item.setZValue(2)
        self._item.setVisible(False)
        scene.addItem(self._item)

    @property
    def size(self) -> tuple[int, int]:
        """The drawing's size in pixels."""
        return (self._image.width(), self._image.height())

    @property
    def item(self) -> QGraphicsPixmapItem:
        """The scene item that shows the drawing or a unit's map."""
        return self._item

    def image(self) -> QImage:
        """A copy of the drawing."""
        return self._image.copy()

    def to_pil(self) -> Image.Image:
        """The drawing as an RGB PIL image: white strokes on black, at the layer's size."""
        rgb = self._image.convertToFormat(QImage.Format.Format_RGB888)
        data = bytes(rgb.constBits())[: rgb.sizeInBytes()]
        return Image.frombuffer(
            "RGB", (rgb.width(), rgb.height()), data, "raw", "RGB", rgb.bytesPerLine(), 1
        ).copy()

    def has_paint(self) -> bool:
        """Whether any stroke is drawn."""
        return bool(self.to_pil().convert("L").getextrema()[1] > 0)  # type: ignore[operator]

    def fit_size(self, width: int, height: int) -> None:
        """Take this size (not undoable: the picture or the page changed); a drawing is
        scaled to it, an empty layer starts anew."""
        if (width, height) == self.size:
            return
        if self.has_paint():
            self._image = self._image.scaled(
                width,
                height,
                Qt.AspectRatioMode.IgnoreAspectRatio,
                Qt.TransformationMode.FastTransformation,
            )
        else:
            self._image = _blank(width, height)
        self._refresh()

    def replace(self, image: QImage) -> None:
        """Set the drawing without an undo step (used by undo commands)."""
        self._image = image.copy()
        self._refresh()

    def clear(self) -> bool:
        """Remove every stroke, undoably; returns whether there was any."""
        if not self.has_paint():
            return False
        blank = _blank(*self.size)
        self.undo.push(LayerChange(self, self._image.copy(), blank, "clear control layer"))
        return True

    def show_map(self, image: QImage | None) -> None:
        """Show this map (a unit's, preprocessed) instead of the drawing; ``None``: the
        drawing again."""
        self._map = None if image is None else image.copy()
        self._refresh()

    def place(self, rect: QRectF | None, *, page: bool, drawing: bool) -> None:
        """Cover ``rect`` (scene coordinates; ``None`` hides the layer), as the opaque page
        or at :attr:`opacity` over a picture; ``drawing`` shows the drawing even where a
        unit's map is chosen (while the scribble tool paints)."""
        self.on_page = page and rect is not None
        self._drawing_shown = drawing or self._map is None
        if rect is not None:
            self._rect = QRectF(rect)
        self._item.setVisible(rect is not None)
        self._item.setOpacity(1.0 if self.on_page else self.opacity)
        self._refresh()

    def begin_stroke(self, point: QPointF, *, erase: bool = False) -> None:
        """Start drawing (or erasing, painting black) at ``point`` (scene coordinates)."""
        self.erasing = erase
        self._before = self._image.copy()
        self._last = self._to_layer(point)
        self._paint(self._last, self._last)

    def continue_stroke(self, point: QPointF) -> None:
        """Draw from the last point to ``point``."""
        if self._before is None or self._last is None:
            return
        here = self._to_layer(point)
        self._paint(self._last, here)
        self._last = here

    def end_stroke(self) -> None:
        """Finish the stroke as one undo step."""
        if self._before is None:
            return
        self.undo.push(LayerChange(self, self._before, self._image.copy(), "scribble stroke"))
        self._before = None
        self._last = None

    def _to_layer(self, point: QPointF) -> QPointF:
        rect = self._rect
        return QPointF(
            (point.x() - rect.x()) * self._image.width() / max(rect.width(), 1e-6),
            (point.y() - rect.y()) * self._image.height() / max(rect.height(), 1e-6),
        )

    def _paint(self, start: QPointF, end: QPointF) -> None:
        painter = QPainter(self._image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        pen = QPen(
            PAPER if self.erasing else INK,
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
        shown = self._image if self._drawing_shown or self._map is None else self._map
        self._item.setPixmap(QPixmap.fromImage(shown))
        self._item.setPos(self._rect.topLeft())
        self._item.setTransform(
            QTransform.fromScale(
                self._rect.width() / max(shown.width(), 1),
                self._rect.height() / max(shown.height(), 1),
            )
        )
        self.changed.emit()


def _blank(width: int, height: int) -> QImage:
    image = QImage(max(width, 1), max(height, 1), QImage.Format.Format_RGB32)
    image.fill(PAPER)
    return image
