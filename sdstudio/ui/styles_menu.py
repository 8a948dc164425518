"""The prompt panel's "Styles" button: prompt styles to apply, saving the prompt as a style
and editing the styles file (see :mod:`sdstudio.engine.prompting.styles`).

Checked styles are applied when the request is built (on Generate): the fields keep the
user's own text, the request gets the styled prompts and the styles' names, and the
button names how many are checked. Loading an image's settings unchecks them all: its
prompts already hold the styles' text.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QInputDialog, QMenu, QMessageBox, QToolButton, QWidget

from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.prompting import styles
from sdstudio.engine.request import GenerationRequest


def _a1111_files() -> list[Path]:
    """The ``styles.csv`` of the A1111 installs among the settings' model folders."""
    from sdstudio.engine.settings import load_settings

    return styles.a1111_style_files(load_settings(AppPaths.default()).model_folders)


class StylesButton(QToolButton):
    """A menu of the styles with check marks, and the actions on the styles file."""

    changed = Signal()

    def __init__(
        self, prompts: Callable[[], tuple[str, str]], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.prompts = prompts
        """The prompt and negative prompt as typed (for "Save current prompt as style")."""
        self.own_file: Callable[[], Path] = lambda: AppPaths.default().styles_file
        self.other_files: Callable[[], list[Path]] = _a1111_files
        self.checked: list[str] = []
        """The names of the styles to apply, in the order they were checked."""
        self.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.setToolTip(
            "Prompt styles (A1111's styles.csv): the checked ones are applied to the "
            "prompts when generating"
        )
        self.setMenu(QMenu(self))
        self.menu().aboutToShow.connect(self.rebuild)
        self._update_text()

    def available(self) -> list[styles.Style]:
        """The styles there are: sdstudio's own, then the A1111 installs' (read now)."""
        return styles.all_styles(self.own_file(), self.other_files())

    def apply(self, request: GenerationRequest) -> GenerationRequest:
        """``request`` with the checked styles applied (an unknown one is refused)."""
        if not self.checked:
            return request
        chosen = styles.find_styles(self.checked, self.available())
        return styles.styled_request(request, chosen)

    def set_checked(self, names: list[str]) -> None:
        """Check these styles (and no others)."""
        self.checked = list(names)
        self._update_text()
        self.changed.emit()

    def rebuild(self) -> None:
        """Fill the menu with the styles there are now."""
        menu = self.menu()
        menu.clear()
        try:
            found = self.available()
        except SdStudioError as error:
            menu.addAction(str(error)).setEnabled(False)
            found = []
        own = str(self.own_file())
        for style in found:
            label = style.name if style.source == own else f"{style.name} (A1111)"
            action = menu.addAction(label)
            action.setCheckable(True)
            action.setChecked(style.name in self.checked)
            action.setToolTip(_describe(style))
            action.toggled.connect(lambda on, name=style.name: self._toggle(name, on))
        if not found:
            menu.addAction("No styles yet").setEnabled(False)
        menu.setToolTipsVisible(True)
        menu.addSeparator()
        menu.addAction("Save current prompt as style…", self.save_current)
        menu.addAction("Edit styles…", self.edit)
        if self.checked:
            menu.addAction("Uncheck all", lambda: self.set_checked([]))

    def save_current(self, name: str | None = None) -> bool:
        """Save the typed prompts as a style (asking for its name); a style of that name
        in sdstudio's file is replaced."""
        if name is None:
            name, ok = QInputDialog.getText(self, "Save as style", "Style name:")
            if not ok:
                return False
        prompt, negative = self.prompts()
        path = self.own_file()
        try:
            mine = [s for s in styles.read_styles(path) if s.name != name.strip()]
            styles.write_styles(path, [*mine, styles.Style(name.strip(), prompt, negative)])
        except SdStudioError as error:
            QMessageBox.warning(self, "Save as style", str(error))
            return False
        return True

    def edit(self) -> None:
        """Open the styles table."""
        from sdstudio.ui.styles_dialog import StylesDialog

        dialog = StylesDialog(self.own_file(), self.other_files(), self)
        dialog.exec()
        known = {style.name for style in self.available()}
        self.set_checked([name for name in self.checked if name in known])

    def _toggle(self, name: str, on: bool) -> None:
        names = [n for n in self.checked if n != name]
        self.set_checked([*names, name] if on else names)

    def _update_text(self) -> None:
        count = len(self.checked)
        self.setText(f"Styles ({count})" if count else "Styles")


def _describe(style: styles.Style) -> str:
    text = style.prompt or "(no prompt text)"
    if style.negative_prompt:
        text += f"\nNegative: {style.negative_prompt}"
    return text
