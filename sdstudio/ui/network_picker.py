"""A button that lists LoRAs or embeddings found on disk and hands back the one picked.

As in AUTOMATIC1111's extra networks, picking a LoRA writes its
``<lora:name:1>`` tag into the prompt and picking an embedding writes its
name; the prompt stays the single place where they are chosen, so pasted
prompts and picked ones work the same.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLineEdit, QMenu, QToolButton, QWidget, QWidgetAction

from sdstudio.engine.families import FAMILIES

MAX_SHOWN = 200
"""Entries shown at once; typing in the filter narrows larger lists."""


class NetworkPicker(QToolButton):
    """A drop-down button of named files with a filter box; ``chosen`` carries the name."""

    chosen = Signal(str)

    def __init__(
        self,
        label: str,
        empty_hint: str,
        in_use: Callable[[str], bool] = lambda _name: False,
        model_family: Callable[[], str] = lambda: "",
        parent: QWidget | None = None,
    ) -> None:
        """``in_use`` tells which names the prompt already holds: they are shown ticked.

        ``model_family`` gives the chosen model's family (``sd1``, ``sdxl``, …);
        files made for another family are listed last and cannot be picked.
        """
        super().__init__(parent)
        self._in_use = in_use
        self._model_family = model_family
        self.setText(label)
        self.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self._empty_hint = empty_hint
        self._entries: list[tuple[str, str, str, str]] = []
        """(name, description, family, family label) of each file."""
        self._menu = QMenu(self)
        self._filter = QLineEdit(placeholderText="Filter…", clearButtonEnabled=True)
        self._filter.textChanged.connect(self._fill)
        self._filter.returnPressed.connect(self._choose_first)
        filter_action = QWidgetAction(self._menu)
        filter_action.setDefaultWidget(self._filter)
        self._filter_action = filter_action
        self._menu.aboutToShow.connect(self._on_show)
        self.setMenu(self._menu)
        self._fill()

    def set_entries(self, entries: list[tuple[str, str, str, str]]) -> None:
        """The files to offer, as (name, description, family, family label)."""
        unique = {entry[0]: entry for entry in entries}
        self._entries = sorted(unique.values(), key=lambda entry: entry[0].lower())
        self.setToolTip(f"{len(self._entries)} found" if self._entries else self._empty_hint)
        self._fill()

    def names(self) -> list[str]:
        """The names offered, in order."""
        return [entry[0] for entry in self._entries]

    def enabled_names(self) -> list[str]:
        """The names shown that can be picked (made for the chosen model's family)."""
        return [a.data() for a in self._menu.actions() if a.data() is not None and a.isEnabled()]

    def visible_names(self) -> list[str]:
        """The names the menu shows for the current filter."""
        return [a.data() for a in self._menu.actions() if a.data() is not None]

    def ticked_names(self) -> list[str]:
        """The names shown as already in the prompt."""
        return [a.data() for a in self._menu.actions() if a.data() is not None and a.isChecked()]

    def set_filter(self, text: str) -> None:
        """Narrow the list to names containing ``text`` (and refresh the ticks)."""
        if self._filter.text() == text:
            self._fill()
        else:
            self._filter.setText(text)

    def _on_show(self) -> None:
        self._filter.clear()
        self._fill()
        self._filter.setFocus(Qt.FocusReason.PopupFocusReason)

    def _fill(self) -> None:
        menu = self._menu
        for action in menu.actions():
            if action is not self._filter_action:
                menu.removeAction(action)
                action.deleteLater()
        if not self._entries:
            menu.removeAction(self._filter_action)
            menu.addAction(self._empty_hint).setEnabled(False)
            return
        if self._filter_action not in menu.actions():
            menu.addAction(self._filter_action)
        words = self._filter.text().lower().split()
        model = self._model_family()
        shown = [entry for entry in self._entries if all(w in entry[0].lower() for w in words)]
        fits = [e for e in shown if not _other_family(e[2], model)]
        others = [e for e in shown if _other_family(e[2], model)]
        for name, description, family, label in (fits + others)[:MAX_SHOWN]:
            other = _other_family(family, model)
            action = menu.addAction(f"{name}  ({label})" if other else name)
            action.setData(name)
            action.setCheckable(True)
            action.setChecked(self._in_use(name))
            action.setEnabled(not other or self._in_use(name))  # a tag in the prompt can go
            action.setToolTip(
                f"Made for {label}, not for the chosen model\n{description}"
                if other
                else description
            )
            action.triggered.connect(lambda _checked=False, n=name: self.chosen.emit(n))
        if len(shown) > MAX_SHOWN:
            menu.addAction(f"… {len(shown) - MAX_SHOWN} more: type to filter").setEnabled(False)
        if not shown:
            menu.addAction("No match").setEnabled(False)
        menu.setToolTipsVisible(True)

    def _choose_first(self) -> None:
        names = self.enabled_names()
        if names:
            self._menu.close()
            self.chosen.emit(names[0])


def _other_family(family: str, model_family: str) -> bool:
    """Whether a file made for ``family`` surely does not fit a ``model_family`` model."""
    known = (*FAMILIES, "flux2-dev", "lumina2")
    return family in known and model_family in known and family != model_family
