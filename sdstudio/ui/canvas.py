"""The canvas: live previews and results, and the source image being edited.

It shows each step's preview, then the result; zooms, pans and fits. A dropped
image file becomes the *source* for image-to-image; painting a mask over it
makes the job inpainting, and growing it on any side makes it outpainting.
Mask strokes and outpainting are undoable; the mask is painted and undone only
while the source is on show, never under an output that hides it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image
from PySide6.QtCore import QRect, QRectF, Qt, Signal
from PySide6.QtGui import (
    QDragEnterEvent,
    QDropEvent,
    QImage,
    QMouseEvent,
    QPainter,
    QPalette,
    QPixmap,
    QResizeEvent,
    QUndoCommand,
    QUndoStack,
    QWheelEvent,
)
from PySide6.QtWidgets import QGraphicsPixmapItem, QGraphicsScene, QGraphicsView, QWidget
from shiboken6 import isValid

from sdstudio.engine.images import open_image
from sdstudio.ui.canvas_strokes import MASK_TOOLS, SCRIBBLE, CanvasStrokes
from sdstudio.ui.control_layer import ControlLayer
from sdstudio.ui.mask_layer import MaskLayer, mask_from_pil

if TYPE_CHECKING:
    from sdstudio.engine.outpaint import Fill


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


EMPTY_TEXT = "Drop an image here to edit it, or generate one."


def qimage_to_pil(image: QImage) -> Image.Image:
    """Convert a QImage to an RGB PIL image (GUI thread only)."""
    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    data = bytes(rgb.constBits())[: rgb.sizeInBytes()]
    return Image.frombuffer(
        "RGB", (rgb.width(), rgb.height()), data, "raw", "RGB", rgb.bytesPerLine(), 1
    ).copy()


class Canvas(QGraphicsView):
    """Shows the source image with its mask, or the output (a preview, a result, an
    opened image), scaled to fit until the user zooms.

    What is on show is :attr:`view`. The mask is painted, shown and undone only
    while the source is on show: an output replaces it on screen, so edits there
    would land on an image the user cannot see.
    """

    ZOOM_STEP = 1.25
    SOURCE = "source"
    OUTPUT = "output"
    file_dropped = Signal(Path)
    source_changed = Signal()
    view_changed = Signal()
    """What is on show changed: the source, an output, or nothing."""
    tool_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("canvas")
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
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
        self.mask_wanted = True
        """Whether the mask overlay is shown over the source ("Show mask")."""
        self.control = ControlLayer(self._scene, self.undo_stack)
        self.strokes = CanvasStrokes(self)
        self.source: Image.Image | None = None
        self._output: tuple[Image.Image, tuple[int, int] | None] | None = None
        self._view = ""
        self._fit = True
        self._size: tuple[int, int] | None = None
        self._tool = "pan"
        self.set_tool("pan")
        self.undo_stack.indexChanged.connect(self._on_undo_index)

    @property
    def has_image(self) -> bool:
        """Whether an image is shown."""
        return not self._item.pixmap().isNull()

    @property
    def view(self) -> str:
        """:attr:`SOURCE`, :attr:`OUTPUT`, or ``""`` when nothing is on show."""
        return self._view

    @property
    def showing_source(self) -> bool:
        """Whether the source image (and its mask) is on show."""
        return self._view == self.SOURCE

    @property
    def has_output(self) -> bool:
        """Whether there is an output (preview, result or opened image) to show."""
        return self._output is not None

    @property
    def tool(self) -> str:
        """The current tool: ``"pan"``, ``"brush"``, ``"eraser"`` or ``"scribble"``."""
        return self._tool

    def output_image(self) -> Image.Image | None:
        """The last output as it is shown: a preview scaled to its job's size."""
        if self._output is None:
            return None
        image, size = self._output
        if size is None or image.size == size:
            return image.convert("RGB")
        return qimage_to_pil(_scaled(pil_to_qimage(image), size))

    # Display -----------------------------------------------------------------

    def show_image(
        self, image: Image.Image, *, display_size: tuple[int, int] | None = None
    ) -> None:
        """Show an output (a preview stretched to ``display_size``) instead of the source."""
        self._output = (image, display_size)
        self._show(pil_to_qimage(image), display_size)
        self._set_view(self.OUTPUT)

    def show_output(self) -> None:
        """Show the last output again."""
        if self._output is not None:
            self.show_image(self._output[0], display_size=self._output[1])

    def show_source(self) -> None:
        """Show the source image with its mask."""
        if self.source is not None:
            self._show(pil_to_qimage(self.source), None)
            self._set_view(self.SOURCE)

    def set_mask_visible(self, visible: bool) -> None:
        """Show or hide the mask overlay; showing it brings the source on show."""
        self.mask_wanted = visible
        if visible and not self.showing_source:
            self.show_source()
        self.mask.set_visible(visible and self.showing_source)

    def clear(self) -> None:
        """Show nothing and forget everything: source, mask, edits and output
        (back to text-to-image)."""
        self._output = None
        self._blank()
        self.clear_source()

    def fit(self) -> None:
        """Scale the image to fit the view, and keep fitting as the window resizes."""
        self._fit = True
        if self.has_image or self.control.on_page:
            self.fitInView(self.sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)

    def zoom(self, factor: float) -> None:
        """Zoom by ``factor`` around the mouse (or the centre)."""
        self._fit = False
        self.scale(factor, factor)

    def actual_size(self) -> None:
        """Show the image at 100 %."""
        self._fit = False
        self.resetTransform()

    # Source image, mask and outpainting --------------------------------------------

    def set_source(self, image: Image.Image) -> None:
        """Make ``image`` the source for image-to-image (clears mask and undo history)."""
        self.source = image.convert("RGB")
        self.mask.reset(*self.source.size)
        self.undo_stack.clear()
        self.show_source()
        self.source_changed.emit()

    def use_shown_as_source(self) -> None:
        """Make the output on show (a result, a preview, an opened image) the source."""
        image = self.output_image()
        if self._view == self.OUTPUT and image is not None:
            self.set_source(image)

    def clear_source(self) -> None:
        """Back to text-to-image; the output (if any) takes the source's place on screen."""
        self.source = None
        self.mask.reset(1, 1)
        self.undo_stack.clear()
        if self._view == self.SOURCE:
            if self._output is not None:
                self.show_output()
            else:
                self._blank()
        self.source_changed.emit()

    def outpaint(
        self, left: int, top: int, right: int, bottom: int, fill: Fill = "stretch"
    ) -> None:
        """Grow the source on any side, pre-fill and mask the new area, undoably.

        Raises :class:`~sdstudio.engine.errors.ImageInputError` for amounts out of range.
        """
        from sdstudio.engine.outpaint import extend

        if self.source is None:
            return
        image, mask = extend(self.source, self.mask.to_pil(), left, top, right, bottom, fill)
        if image.size == self.source.size:
            return
        self.undo_stack.push(
            SourceChange(self, (self.source, self.mask.image()), (image, mask_from_pil(mask)))
        )

    def restore(self, image: Image.Image, mask: QImage) -> None:
        """Set source and mask together (used by undo commands)."""
        self.source = image
        self.mask.replace(mask)
        self.show_source()
        self.source_changed.emit()

    def undo(self) -> None:
        """Undo the last edit of the source, mask or drawing, while they are on show."""
        if self.strokes.editing():
            self.undo_stack.undo()

    def redo(self) -> None:
        """Redo the last undone edit, while the source (or the drawing's page) is on show."""
        if self.strokes.editing():
            self.undo_stack.redo()

    def set_tool(self, tool: str) -> None:
        """``"pan"``, ``"brush"``, ``"eraser"`` or ``"scribble"``; a painting tool brings
        the source on show (Scribble with no source: the page of the next image's size)."""
        painting = tool in (*MASK_TOOLS, SCRIBBLE)
        if painting and self.source is None and tool != SCRIBBLE:
            tool, painting = "pan", False
        self.strokes.finish()
        self._tool = tool
        self.mask.erasing = tool == "eraser"
        self.setDragMode(
            QGraphicsView.DragMode.NoDrag if painting else QGraphicsView.DragMode.ScrollHandDrag
        )
        if painting and not self.showing_source:
            self.show_source() if self.source is not None else self._blank()
        self.strokes.sync()
        self.tool_changed.emit(tool)

    # Events ----------------------------------------------------------------------

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if not self.strokes.press(event):
            super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if not self.strokes.move(event):
            super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if not self.strokes.release(event):
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

    def drawForeground(self, painter: QPainter, rect: QRectF | QRect) -> None:
        super().drawForeground(painter, rect)
        if self.has_image or self.control.on_page:
            return
        painter.save()
        painter.resetTransform()
        painter.setPen(self.palette().color(QPalette.ColorRole.PlaceholderText))
        painter.drawText(
            self.viewport().rect().adjusted(24, 24, -24, -24),
            int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap),
            EMPTY_TEXT,
        )
        painter.restore()

    def _set_view(self, view: str) -> None:
        self.mask.set_visible(view == self.SOURCE and self.mask_wanted)
        keeps = view == self.SOURCE or (view == "" and self._tool == SCRIBBLE)
        if not keeps and self._tool != "pan":
            self.set_tool("pan")
        if view != self._view:
            self._view = view
            self.view_changed.emit()
        self.strokes.sync()

    def _blank(self) -> None:
        self._item.setPixmap(QPixmap())
        self._size = None
        self._set_view("")
        self.viewport().update()

    def _on_undo_index(self, _index: int) -> None:
        if not isValid(self.undo_stack):  # the stack clears itself as it is deleted
            return
        if self.source is not None and not self.showing_source:
            self.show_source()

    def _show(self, image: QImage, display_size: tuple[int, int] | None) -> None:
        if display_size is not None and display_size != (image.width(), image.height()):
            image = _scaled(image, display_size)
        pixmap = QPixmap.fromImage(image)
        self._item.setPixmap(pixmap)
        size = (pixmap.width(), pixmap.height())
        if size != self._size:
            self._size = size
            self._scene.setSceneRect(self._item.boundingRect())
            if self._fit:
                self.fit()


class SourceChange(QUndoCommand):
    """Swap source image and mask between two states (outpainting)."""

    def __init__(
        self,
        canvas: Canvas,
        before: tuple[Image.Image, QImage],
        after: tuple[Image.Image, QImage],
    ) -> None:
        super().__init__("outpainting")
        self._canvas = canvas
        self._before = before
        self._after = after

    def redo(self) -> None:
        self._canvas.restore(*self._after)

    def undo(self) -> None:
        self._canvas.restore(*self._before)


def _scaled(image: QImage, size: tuple[int, int]) -> QImage:
    return image.scaled(
        size[0],
        size[1],
        Qt.AspectRatioMode.IgnoreAspectRatio,
        Qt.TransformationMode.SmoothTransformation,
    )


def _first_local_file(urls: list) -> Path | None:  # type: ignore[type-arg]
    for url in urls:
        if url.isLocalFile():
            return Path(url.toLocalFile())
    return None
