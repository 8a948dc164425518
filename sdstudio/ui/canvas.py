"""The canvas: shows the live preview at every step, then the result; zoom, pan, fit."""

from __future__ import annotations

from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPainter, QPixmap, QResizeEvent, QWheelEvent
from PySide6.QtWidgets import QGraphicsPixmapItem, QGraphicsScene, QGraphicsView, QWidget


def pil_to_qimage(image: Image.Image) -> QImage:
    """Convert a PIL image to a QImage that owns its pixels (GUI thread only)."""
    rgba = image.convert("RGBA")
    data = rgba.tobytes("raw", "RGBA")
    qimage = QImage(data, rgba.width, rgba.height, rgba.width * 4, QImage.Format.Format_RGBA8888)
    return qimage.copy()


class Canvas(QGraphicsView):
    """Displays one image, scaled to fit until the user zooms."""

    ZOOM_STEP = 1.25

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("canvas")
        self._scene = QGraphicsScene(self)
        self._item = QGraphicsPixmapItem()
        self._item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self._scene.addItem(self._item)
        self.setScene(self._scene)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self._fit = True
        self._size: tuple[int, int] | None = None

    @property
    def has_image(self) -> bool:
        """Whether an image is shown."""
        return not self._item.pixmap().isNull()

    def show_image(
        self, image: Image.Image, *, display_size: tuple[int, int] | None = None
    ) -> None:
        """Show ``image``, stretched to ``display_size`` (a preview stands in for the result)."""
        pixmap = QPixmap.fromImage(pil_to_qimage(image))
        if display_size is not None and display_size != (pixmap.width(), pixmap.height()):
            pixmap = pixmap.scaled(
                display_size[0],
                display_size[1],
                Qt.AspectRatioMode.IgnoreAspectRatio,
                Qt.TransformationMode.SmoothTransformation,
            )
        self._item.setPixmap(pixmap)
        size = (pixmap.width(), pixmap.height())
        if size != self._size:
            self._size = size
            self._scene.setSceneRect(self._item.boundingRect())
            if self._fit:
                self.fit()

    def clear(self) -> None:
        """Show nothing."""
        self._item.setPixmap(QPixmap())
        self._size = None

    def fit(self) -> None:
        """Scale the image to fit the view, and keep fitting as the window resizes."""
        self._fit = True
        if self.has_image:
            self.fitInView(self._item, Qt.AspectRatioMode.KeepAspectRatio)

    def zoom(self, factor: float) -> None:
        """Zoom by ``factor`` around the mouse (or the centre)."""
        self._fit = False
        self.scale(factor, factor)

    def actual_size(self) -> None:
        """Show the image at 100 %."""
        self._fit = False
        self.resetTransform()

    def wheelEvent(self, event: QWheelEvent) -> None:
        delta = event.angleDelta().y()
        if delta:
            self.zoom(self.ZOOM_STEP if delta > 0 else 1 / self.ZOOM_STEP)
        event.accept()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self._fit:
            self.fit()
