"""The text encoders of a model kept as a transformer file alone (ComfyUI's
``diffusion_models``): found automatically, or chosen from the files that fit its family."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QMenu, QToolButton, QWidget

from sdstudio.engine.families import family

AUTOMATIC = "Automatic"


class TextEncoderPicker(QToolButton):
    """A button whose menu offers "Automatic" and the text encoder files that fit."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.setToolTip(
            "The text encoder files of a model kept as a transformer alone; Automatic uses "
            "the fitting files found in its folders and the text-encoder folders"
        )
        self._menu = QMenu(self)
        self.setMenu(self._menu)
        self._files: list[tuple[str, str, str, str]] = []
        self._chosen: list[str] = []
        self._kinds: set[str] = set()
        self._active = False
        self.setVisible(False)
        self._update_text()

    def set_files(self, files: list[tuple[str, str, str, str]]) -> None:
        """The text encoder files found, as (name, path, kind, label)."""
        self._files = list(files)
        self._rebuild()

    def show_for(self, model: str, family_id: str) -> bool:
        """Offer the files of the kinds its family takes when ``model`` (a path) is a
        transformer kept alone; say whether it is (the row is shown only then)."""
        layout = family(family_id).split if _transformer_alone(model) else None
        self._active = layout is not None
        self._kinds = {slot.kind for slot in layout.text} if layout is not None else set()
        self.setVisible(self._active)
        self._rebuild()
        return self._active

    def value(self) -> tuple[str, ...]:
        """The chosen files' paths (or names); empty for Automatic or another model."""
        return tuple(self._chosen) if self._active else ()

    def select(self, values: tuple[str, ...]) -> None:
        """Choose these files (paths or names); none is Automatic."""
        self._chosen = list(values)
        self._rebuild()

    def _rebuild(self) -> None:
        self._menu.clear()
        automatic = QAction(AUTOMATIC + " (the fitting files found)", self._menu, checkable=True)
        automatic.setChecked(not self._chosen)
        automatic.triggered.connect(lambda: self._choose([]))
        group = QActionGroup(self._menu)
        group.addAction(automatic)
        self._menu.addAction(automatic)
        self._menu.addSeparator()
        fitting = [f for f in self._files if not self._kinds or f[2] in self._kinds]
        listed = {path for _name, path, _kind, _label in fitting}
        for name, path, _kind, label in fitting:
            self._add_file(f"{name} · {label}", path)
        for value in self._chosen:  # chosen before (a loaded image's) but not found now
            if value not in listed:
                self._add_file(Path(value.replace("\\", "/")).name, value)
        if not fitting:
            none = self._menu.addAction("No fitting text encoder files found")
            none.setEnabled(False)
        self._update_text()

    def _add_file(self, text: str, path: str) -> None:
        action = QAction(text, self._menu, checkable=True)
        action.setChecked(path in self._chosen)
        action.setToolTip(path)
        action.toggled.connect(lambda on, p=path: self._toggle(p, on))
        self._menu.addAction(action)

    def _toggle(self, path: str, on: bool) -> None:
        chosen = [p for p in self._chosen if p != path] + ([path] if on else [])
        self._choose(chosen)

    def _choose(self, chosen: list[str]) -> None:
        if chosen != self._chosen:
            self._chosen = chosen
            self.changed.emit()
        self._rebuild()

    def _update_text(self) -> None:
        names = [Path(value.replace("\\", "/")).stem for value in self._chosen]
        self.setText(", ".join(names) if names else AUTOMATIC)


def _transformer_alone(model: str) -> bool:
    """Whether ``model`` is a transformer file kept alone (its header says so)."""
    from sdstudio.engine.models.part_folders import identify
    from sdstudio.engine.parts import PART_SUFFIXES, Role

    path = Path(model)
    if not model or path.suffix.lower() not in PART_SUFFIXES:
        return False
    part = identify(path)
    return part is not None and part.role is Role.TRANSFORMER
