"""The canvas tools: source or result view, pan, mask brush and eraser, brush size,
outpainting, undo and redo, and the image menu that holds them all.

The single-letter tool keys act only while the canvas has the keyboard focus,
so typing in the prompt (or searching a list) never changes the tool. Labels
stay short and fixed, so the bar fits a 1024-pixel window; the tooltips say
what Undo and Redo would change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMenu, QMenuBar, QMessageBox, QSpinBox, QToolBar, QWidget
from shiboken6 import isValid

from sdstudio.engine.errors import SdStudioError
from sdstudio.ui.canvas import Canvas

if TYPE_CHECKING:
    from sdstudio.engine.outpaint import Fill
    from sdstudio.ui.control_layer import ControlLayer
    from sdstudio.ui.mask_layer import MaskLayer
    from sdstudio.ui.outpaint_dialog import OutpaintDialog

BRUSH_STEP = 1.25
SCRIBBLE_TIP = (
    "Draw a ControlNet scribble on the control layer; the right button or Ctrl erases "
    "(S on the canvas)"
)


class EditToolbar(QToolBar):
    """Tools that edit the canvas's source image and mask."""

    def __init__(self, canvas: Canvas, parent: QWidget | None = None) -> None:
        super().__init__("Edit", parent)
        self.setObjectName("editToolbar")
        self.canvas = canvas
        self.outpaint_dialog: OutpaintDialog | None = None
        self._outpaint_sides = (0, 0, 0, 0)
        self._outpaint_fill: Fill = "stretch"
        self.menu: QMenu | None = None
        """The Image menu, once :meth:`add_menu` made it."""

        views = QActionGroup(self)
        views.setExclusionPolicy(QActionGroup.ExclusionPolicy.ExclusiveOptional)
        self.source_view = self._action(
            "Source",
            lambda: self._show(canvas.show_source),
            "Show the source image and its mask, to edit them",
        )
        self.result_view = self._action(
            "Result",
            lambda: self._show(canvas.show_output),
            "Show the last result (or preview, or opened image) instead of the source",
        )
        for action in (self.source_view, self.result_view):
            action.setCheckable(True)
            views.addAction(action)
        self.addSeparator()

        tools = QActionGroup(self)
        self.tool_actions: dict[str, QAction] = {}
        for name, label, key, tip in (
            ("pan", "Pan", "H", "Pan and zoom (H on the canvas)"),
            ("brush", "Brush", "B", "Paint the mask: what to repaint (B on the canvas)"),
            ("eraser", "Eraser", "E", "Erase mask paint (E on the canvas)"),
            ("scribble", "Scribble", "S", SCRIBBLE_TIP),
        ):
            action = self._action(label, lambda _c=False, tool=name: canvas.set_tool(tool), tip)
            action.setCheckable(True)
            self._on_canvas(action, key)
            tools.addAction(action)
            self.tool_actions[name] = action
        self.tool_actions["pan"].setChecked(True)

        self.brush_size = QSpinBox(minimum=2, maximum=512, value=canvas.mask.brush_size)
        self.brush_size.setSuffix(" px")
        self.brush_size.setToolTip(
            "Brush size ([ and ] on the canvas); the scribble brush keeps a size of its own"
        )
        self.brush_size.valueChanged.connect(
            lambda value: setattr(self._brush_layer(), "brush_size", value)
        )
        self.addWidget(self.brush_size)
        self.larger_brush = QAction("Larger brush", self)
        self.larger_brush.triggered.connect(lambda: self._scale_brush(BRUSH_STEP))
        self.smaller_brush = QAction("Smaller brush", self)
        self.smaller_brush.triggered.connect(lambda: self._scale_brush(1 / BRUSH_STEP))
        self._on_canvas(self.larger_brush, "]")
        self._on_canvas(self.smaller_brush, "[")

        self.clear_mask = self._action("Clear mask", canvas.mask.clear, "Remove all mask paint")
        self.show_mask = QAction("Show mask", self, checkable=True, checked=canvas.mask_wanted)
        self.show_mask.setToolTip(
            "Show the mask over the source (brings the source back if a result is on show)"
        )
        self.show_mask.toggled.connect(canvas.set_mask_visible)
        self.addAction(self.show_mask)
        self.addSeparator()
        self.outpaint = self._action(
            "Outpaint…",
            self.open_outpaint_dialog,
            "Grow the source on any side; the model paints the new area",
        )
        self.addSeparator()
        self.undo = self._action("Undo", canvas.undo, "")
        self.undo.setShortcut(QKeySequence.StandardKey.Undo)
        self.redo = self._action("Redo", canvas.redo, "")
        self.redo.setShortcut(QKeySequence.StandardKey.Redo)
        self.addSeparator()
        self.use_shown = self._action(
            "Use as source",
            canvas.use_shown_as_source,
            "Edit the image on show: image-to-image, inpainting, outpainting (Ctrl+I)",
        )
        self.use_shown.setShortcut(QKeySequence("Ctrl+I"))
        self.clear_source = self._action(
            "Clear image",
            canvas.clear,
            "Clear the canvas: source, mask and result (back to text-to-image)",
        )

        canvas.source_changed.connect(self._update)
        canvas.view_changed.connect(self._update)
        canvas.tool_changed.connect(self._on_tool_changed)
        canvas.control.changed.connect(self._update)
        stack = canvas.undo_stack
        for signal in (
            stack.canUndoChanged,
            stack.canRedoChanged,
            stack.undoTextChanged,
            stack.redoTextChanged,
        ):
            signal.connect(self._update)
        self._update()

    def add_menu(self, menu_bar: QMenuBar) -> QMenu:
        """Put every tool in an Image menu too (before View, when there is one)."""
        menu = QMenu("&Image", menu_bar)
        groups = (
            (self.source_view, self.result_view),
            (*self.tool_actions.values(), self.larger_brush, self.smaller_brush),
            (self.clear_mask, self.show_mask),
            (self.outpaint,),
            (self.undo, self.redo),
            (self.use_shown, self.clear_source),
        )
        for number, group in enumerate(groups):
            if number:
                menu.addSeparator()
            menu.addActions(list(group))
        view = next((a for a in menu_bar.actions() if a.text() == "&View"), None)
        if view is not None:
            menu_bar.insertMenu(view, menu)
        else:
            menu_bar.addMenu(menu)
        self.menu = menu
        return menu

    def open_outpaint_dialog(self) -> None:
        """Ask how much to add on each side, then outpaint the source."""
        from sdstudio.ui.outpaint_dialog import OutpaintDialog

        if self.canvas.source is None:
            return
        dialog = OutpaintDialog(
            self.canvas.source.size, self._outpaint_sides, self._outpaint_fill, self.window()
        )
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self._outpaint(dialog.sides(), dialog.fill()))
        dialog.finished.connect(lambda _result: setattr(self, "outpaint_dialog", None))
        self.outpaint_dialog = dialog
        dialog.open()

    def _outpaint(self, sides: tuple[int, int, int, int], fill: Fill) -> None:
        self._outpaint_sides, self._outpaint_fill = sides, fill
        try:
            self.canvas.outpaint(*sides, fill=fill)
        except SdStudioError as error:
            box = QMessageBox(QMessageBox.Icon.Warning, "sdstudio", str(error), parent=self)
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.open()

    def _action(self, label: str, slot: Callable[..., object], tip: str) -> QAction:
        action = QAction(label, self, toolTip=tip)
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _on_canvas(self, action: QAction, key: str) -> None:
        """Give ``action`` a key that works only while the canvas has the focus."""
        action.setShortcut(QKeySequence(key))
        action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.canvas.addAction(action)

    def _show(self, show: Callable[[], None]) -> None:
        show()
        self._update()  # a click on the view on show must not uncheck it

    def _scale_brush(self, factor: float) -> None:
        size = self.brush_size.value()
        scaled = round(size * factor)
        if scaled == size:
            scaled += 1 if factor > 1 else -1
        self.brush_size.setValue(scaled)

    def _on_tool_changed(self, tool: str) -> None:
        self.tool_actions[tool].setChecked(True)
        self.brush_size.setValue(self._brush_layer().brush_size)

    def _brush_layer(self) -> MaskLayer | ControlLayer:
        """The layer the brush size is for: the control layer's while scribbling."""
        return self.canvas.control if self.canvas.tool == "scribble" else self.canvas.mask

    def _update(self) -> None:
        canvas = self.canvas
        if not isValid(canvas.undo_stack):  # the stack clears itself as it is deleted
            return
        has_source = canvas.source is not None
        editing = canvas.strokes.editing()
        self.source_view.setEnabled(has_source)
        self.source_view.setChecked(canvas.showing_source)
        self.result_view.setEnabled(canvas.has_output)
        self.result_view.setChecked(canvas.view == Canvas.OUTPUT)
        for action in (
            self.outpaint,
            self.clear_mask,
            self.tool_actions["brush"],
            self.tool_actions["eraser"],
        ):
            action.setEnabled(has_source)
        self.use_shown.setEnabled(canvas.view == Canvas.OUTPUT)
        self.clear_source.setEnabled(has_source or canvas.has_output)
        stack = canvas.undo_stack
        for action, word, able, text in (
            (self.undo, "Undo", stack.canUndo(), stack.undoText()),
            (self.redo, "Redo", stack.canRedo(), stack.redoText()),
        ):
            action.setEnabled(able and editing)
            if not able:
                action.setToolTip(f"{word}: nothing to {word.lower()}")
            elif not editing:
                action.setToolTip(f"{word} {text}: show the source first")
            else:
                action.setToolTip(f"{word} {text} ({action.shortcut().toString()})")
