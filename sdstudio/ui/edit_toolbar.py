"""The canvas tools: pan, mask brush and eraser, brush size, extend, undo and redo."""

from __future__ import annotations

from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QSpinBox, QToolBar, QWidget

from sdstudio.ui.canvas import Canvas

EXTEND_PIXELS = 128


class EditToolbar(QToolBar):
    """Tools that edit the canvas's source image and mask."""

    def __init__(self, canvas: Canvas, parent: QWidget | None = None) -> None:
        super().__init__("Edit", parent)
        self.setObjectName("editToolbar")
        self.canvas = canvas
        tools = QActionGroup(self)
        self.tool_actions: dict[str, QAction] = {}
        for name, label, key, tip in (
            ("pan", "Pan", "H", "Pan and zoom (H)"),
            ("brush", "Mask brush", "B", "Paint what to repaint (B)"),
            ("eraser", "Eraser", "E", "Erase mask paint (E)"),
        ):
            action = QAction(label, self, checkable=True, shortcut=QKeySequence(key), toolTip=tip)
            action.triggered.connect(lambda _checked=False, tool=name: canvas.set_tool(tool))
            tools.addAction(action)
            self.addAction(action)
            self.tool_actions[name] = action
        self.tool_actions["pan"].setChecked(True)

        self.brush_size = QSpinBox(minimum=2, maximum=512, value=canvas.mask.brush_size)
        self.brush_size.setSuffix(" px")
        self.brush_size.setToolTip("Brush size")
        self.brush_size.valueChanged.connect(
            lambda value: setattr(canvas.mask, "brush_size", value)
        )
        self.addWidget(self.brush_size)

        self.clear_mask = self._action("Clear mask", canvas.mask.clear, "Remove all mask paint")
        self.show_mask = QAction("Show mask", self, checkable=True, checked=True)
        self.show_mask.toggled.connect(canvas.mask.set_visible)
        self.addAction(self.show_mask)
        self.addSeparator()
        self.extend_actions = {
            side: self._action(
                label,
                lambda _checked=False, side=side: canvas.extend(side, EXTEND_PIXELS),
                f"Extend the canvas {side} by {EXTEND_PIXELS} px (outpainting)",
            )
            for side, label in (
                ("left", "◀ Extend"),
                ("right", "Extend ▶"),
                ("up", "▲ Extend"),
                ("down", "▼ Extend"),
            )
        }
        self.addSeparator()
        undo = canvas.undo_stack.createUndoAction(self, "Undo")
        undo.setShortcut(QKeySequence.StandardKey.Undo)
        redo = canvas.undo_stack.createRedoAction(self, "Redo")
        redo.setShortcut(QKeySequence.StandardKey.Redo)
        self.addAction(undo)
        self.addAction(redo)
        self.addSeparator()
        self.use_shown = self._action(
            "Use as source",
            canvas.use_shown_as_source,
            "Edit the image on show: image-to-image, inpainting, outpainting (Ctrl+I)",
        )
        self.use_shown.setShortcut(QKeySequence("Ctrl+I"))
        self.clear_source = self._action(
            "Clear image", canvas.clear_source, "Stop using the source image (text-to-image)"
        )
        canvas.source_changed.connect(self._update_enabled)
        self._update_enabled()

    def _action(self, label: str, slot, tip: str) -> QAction:
        action = QAction(label, self, toolTip=tip)
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _update_enabled(self) -> None:
        has_source = self.canvas.source is not None
        for action in (
            *self.extend_actions.values(),
            self.clear_mask,
            self.clear_source,
            self.tool_actions["brush"],
            self.tool_actions["eraser"],
        ):
            action.setEnabled(has_source)
        if not has_source:
            self.tool_actions["pan"].setChecked(True)
            self.canvas.set_tool("pan")
