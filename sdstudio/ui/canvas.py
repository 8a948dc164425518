"""The canvas: live previews and results, and the source image being edited.

It shows each step's preview, then the result; zooms, pans and fits. A dropped
image file becomes the *source* for image-to-image; painting a mask over it
makes the job inpainting, and extending it makes it outpainting. Mask strokes
and extensions are undoable.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import (
    QDragEnterEvent,
    QDropEvent,
    QImage,
    QMouseEvent,
    QPainter,
    QPixmap,
    QResizeEvent,
    QUndoCommand,
    QUndoStack,
    QWheelEvent,
)
from PySide6.QtWidgets import QGraphicsPixmapItem, QGraphicsScene, QGraphicsView, QWidget

from sdstudio.engine.images import open_image
from sdstudio.ui.mask_layer import MaskLayer, mask_from_pil

EXTEND_SIDES = ("left", "right", "up", "down")


def load_qimage(path: str | Path) -> QImage:
    """An image file as a QImage (GUI thread only), opened like every input image.

    Qt would read any format it has a plugin for; this reads only PNG, JPEG
    and WebP, checked for size. Raises :class:`~sdstudio.engine.errors.ImageInputError`.
    """
    return pil_to_qimage(open_image(path))


def pil_to_qimage(image: Image.Image) -> QImage:
    """Convert a PIL image to a QImage that owns its pixels (GUI thread only)."""
    rgba = image.convert("RGBA")
    data = rgba.tobytes("raw", "RGBA")
    qimage = QImage(data, rgba.width, rgba.height, rgba.width * 4, QImage.Format.Format_RGBA8888)
    return qimage.copy()


class Canvas(QGraphicsView):
    """Displays an image, scaled to fit until the user zooms; holds the source image."""

    ZOOM_STEP = 1.25
    file_dropped = Signal(Path)
    source_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("canvas")
        self.setAcceptDrops(True)
        self._scene = QGraphicsScene(self)
        self._item = QGraphicsPixmapItem()
        self._item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self._scene.addItem(self._item)
        self.setScene(self._scene)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.undo_stack = QUndoStack(self)
        self.mask = MaskLayer(self._scene, self.undo_stack)
        self.mask.set_visible(False)
        self.source: Image.Image | None = None
        self.shown: Image.Image | None = None
        """The last full image shown (a result or an opened file), not a preview."""
        self._fit = True
        self._size: tuple[int, int] | None = None
        self._tool = "pan"
        self.set_tool("pan")

    @property
    def has_image(self) -> bool:
        """Whether an image is shown."""
        return not self._item.pixmap().isNull()

    # Display -----------------------------------------------------------------

    def show_image(
        self, image: Image.Image, *, display_size: tuple[int, int] | None = None
    ) -> None:
        """Show an output (a preview stretched to ``display_size``); hides the mask."""
        self.mask.set_visible(False)
        if display_size is None:
            self.shown = image
        self._show(QPixmap.fromImage(pil_to_qimage(image)), display_size)

    def show_source(self) -> None:
        """Show the source image with its mask."""
        if self.source is not None:
            self._show(QPixmap.fromImage(pil_to_qimage(self.source)), None)
            self.mask.set_visible(True)

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

    # Source image, mask and extension ------------------------------------------

    def set_source(self, image: Image.Image) -> None:
        """Make ``image`` the source for image-to-image (clears mask and undo history)."""
        self.source = image.convert("RGB")
        self.mask.reset(*self.source.size)
        self.undo_stack.clear()
        self.show_source()
        self.source_changed.emit()

    def use_shown_as_source(self) -> None:
        """Make the image on show (a result, an opened file) the source."""
        if self.shown is not None:
            self.set_source(self.shown)

    def clear_source(self) -> None:
        """Back to text-to-image."""
        self.source = None
        self.mask.reset(1, 1)
        self.mask.set_visible(False)
        self.undo_stack.clear()
        self.source_changed.emit()

    def extend(self, side: str, pixels: int = 128) -> None:
        """Pad the source on one side and mask the new area (outpainting), undoably."""
        if self.source is None or side not in EXTEND_SIDES:
            return
        image, mask = extend_image(self.source, self.mask.to_pil(), side, pixels)
        self.undo_stack.push(
            SourceChange(self, (self.source, self.mask.image()), (image, mask_from_pil(mask)))
        )

    def restore(self, image: Image.Image, mask: QImage) -> None:
        """Set source and mask together (used by undo commands)."""
        self.source = image
        self.mask.replace(mask)
        self.show_source()
        self.source_changed.emit()

    def set_tool(self, tool: str) -> None:
        """``"pan"``, ``"brush"`` or ``"eraser"``."""
        self._tool = tool
        painting = tool in ("brush", "eraser")
        self.mask.erasing = tool == "eraser"
        self.setDragMode(
            QGraphicsView.DragMode.NoDrag if painting else QGraphicsView.DragMode.ScrollHandDrag
        )
        if painting:
            self.show_source()

    # Events ----------------------------------------------------------------------

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if self._painting(event):
            self.mask.begin_stroke(self.mapToScene(event.position().toPoint()))
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._painting(event) and event.buttons() & Qt.MouseButton.LeftButton:
            self.mask.continue_stroke(self.mapToScene(event.position().toPoint()))
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._painting(event):
            self.mask.end_stroke()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if _first_local_file(event.mimeData().urls()) is not None:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        path = _first_local_file(event.mimeData().urls())
        if path is None:
            event.ignore()
            return
        event.acceptProposedAction()
        self.file_dropped.emit(path)

    def wheelEvent(self, event: QWheelEvent) -> None:
        delta = event.angleDelta().y()
        if delta:
            self.zoom(self.ZOOM_STEP if delta > 0 else 1 / self.ZOOM_STEP)
        event.accept()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self._fit:
            self.fit()

    def _painting(self, event: QMouseEvent) -> bool:
        return self._tool in ("brush", "eraser") and self.source is not None

    def _show(self, pixmap: QPixmap, display_size: tuple[int, int] | None) -> None:
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


class SourceChange(QUndoCommand):
    """Swap source image and mask between two states (canvas extension)."""

    def __init__(
        self,
        canvas: Canvas,
        before: tuple[Image.Image, QImage],
        after: tuple[Image.Image, QImage],
    ) -> None:
        super().__init__("Extend canvas")
        self._canvas = canvas
        self._before = before
        self._after = after

    def redo(self) -> None:
        self._canvas.restore(*self._after)

    def undo(self) -> None:
        self._canvas.restore(*self._before)


def extend_image(
    image: Image.Image, mask: Image.Image, side: str, pixels: int
) -> tuple[Image.Image, Image.Image]:
    """Pad ``image`` by repeating its edge, and ``mask`` with white (repaint) there."""
    import numpy as np  # imported here: numpy adds a tenth of a second to start-up

    pad = {
        "left": ((0, 0), (pixels, 0)),
        "right": ((0, 0), (0, pixels)),
        "up": ((pixels, 0), (0, 0)),
        "down": ((0, pixels), (0, 0)),
    }[side]
    pixels_rgb = np.pad(np.asarray(image.convert("RGB")), (*pad, (0, 0)), mode="edge")
    mask_array = np.pad(np.asarray(mask.convert("L")), pad, mode="constant", constant_values=255)
    return Image.fromarray(pixels_rgb), Image.fromarray(mask_array)


def _first_local_file(urls: list) -> Path | None:  # type: ignore[type-arg]
    for url in urls:
        if url.isLocalFile():
            return Path(url.toLocalFile())
    return None
