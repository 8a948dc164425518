"""Where the canvas's mouse paints: the inpainting mask (Brush, Eraser) or the control
layer (Scribble), and where the control layer lies.

The mask is painted only while the source is on show. The control layer is drawn over
the source or, with no source and nothing on show, on a dark page of the next image's
size (text-to-image); the right button (or Ctrl) erases it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QMouseEvent

if TYPE_CHECKING:
    from sdstudio.ui.canvas import Canvas

MASK_TOOLS = ("brush", "eraser")
SCRIBBLE = "scribble"


class CanvasStrokes:
    """Routes the canvas's mouse to the layer its tool paints, and places the control
    layer over what is on show."""

    def __init__(self, canvas: Canvas) -> None:
        self.canvas = canvas
        self.page_size: Callable[[], tuple[int, int]] = lambda: (512, 512)
        """The next image's size, the page's for text-to-image; set by the window."""
        self._layer: object | None = None

    def editing(self) -> bool:
        """Whether what is on show can be painted and its strokes undone: the source, or
        the page of a text-to-image drawing."""
        canvas = self.canvas
        return canvas.showing_source or (canvas.source is None and canvas.control.on_page)

    def press(self, event: QMouseEvent) -> bool:
        """Start a stroke; returns whether the event was taken."""
        canvas = self.canvas
        point = canvas.mapToScene(event.position().toPoint())
        if canvas.tool in MASK_TOOLS and canvas.showing_source:
            canvas.mask.begin_stroke(point)
            self._layer = canvas.mask
        elif canvas.tool == SCRIBBLE and self.editing():
            erase = event.button() == Qt.MouseButton.RightButton or bool(
                event.modifiers() & Qt.KeyboardModifier.ControlModifier
            )
            canvas.control.begin_stroke(point, erase=erase)
            self._layer = canvas.control
        else:
            return False
        canvas.setFocus(Qt.FocusReason.MouseFocusReason)
        event.accept()
        return True

    def move(self, event: QMouseEvent) -> bool:
        """Continue the stroke under way; returns whether the event was taken."""
        canvas = self.canvas
        if self._layer is canvas.mask and event.buttons() & Qt.MouseButton.LeftButton:
            canvas.mask.continue_stroke(canvas.mapToScene(event.position().toPoint()))
        elif self._layer is canvas.control and event.buttons() & (
            Qt.MouseButton.LeftButton | Qt.MouseButton.RightButton
        ):
            canvas.control.continue_stroke(canvas.mapToScene(event.position().toPoint()))
        else:
            return self._layer is not None
        event.accept()
        return True

    def release(self, event: QMouseEvent) -> bool:
        """End the stroke as one undo step; returns whether the event was taken."""
        if self._layer is None:
            return False
        self.finish()
        event.accept()
        return True

    def finish(self) -> None:
        """End any stroke under way (the view changes, the tool changes)."""
        canvas, layer = self.canvas, self._layer
        self._layer = None
        if layer is canvas.mask:
            canvas.mask.end_stroke()
        elif layer is canvas.control:
            canvas.control.end_stroke()

    def sync(self) -> None:
        """Size the control layer to the source (or the page) and lay it over what is
        on show: the page with the scribble tool or "Show control map" and nothing on
        show, the picture at the chosen opacity, or nothing."""
        canvas, layer = self.canvas, self.canvas.control
        size = canvas.source.size if canvas.source is not None else self.page_size()
        layer.fit_size(*size)
        scribbling = canvas.tool == SCRIBBLE
        wanted = scribbling or layer.map_wanted
        was_page = layer.on_page
        if canvas.has_image:
            layer.place(canvas.sceneRect() if wanted else None, page=False, drawing=scribbling)
            return
        page = QRectF(0, 0, *size) if wanted and canvas.source is None else None
        layer.place(page, page=True, drawing=scribbling)
        if page is not None:
            canvas.scene().setSceneRect(page)
            if not was_page:
                canvas.fit()
        canvas.viewport().update()
