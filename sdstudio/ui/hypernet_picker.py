"""The prompt's Hypernet button: A1111 hypernetworks found in the hypernetwork folders,
ticked when the prompt names them; a click adds or removes ``<hypernet:name:1>``.

It is shown only when hypernetwork files are found (few users still have them), so the
prompt's header keeps its room for LoRAs and embeddings."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QPlainTextEdit

from sdstudio.engine.prompting.hypernetworks import hypernetwork_tags
from sdstudio.engine.prompts import toggle_lora_tag
from sdstudio.ui.network_picker import NetworkPicker


def hypernet_picker(prompt: QPlainTextEdit, model_family: Callable[[], str]) -> NetworkPicker:
    """A picker that toggles hypernetwork tags in ``prompt``."""

    def in_use(name: str) -> bool:
        tags = hypernetwork_tags(prompt.toPlainText())
        return name.lower() in {tag.lower() for tag, _strength in tags}

    def toggle(name: str) -> None:
        prompt.setPlainText(toggle_lora_tag(prompt.toPlainText(), name, kind="hypernet"))
        prompt.moveCursor(prompt.textCursor().MoveOperation.End)

    picker = NetworkPicker(
        "Hypernet", "No hypernetworks found (models/hypernetworks)", in_use, model_family
    )
    picker.setToolTip("A1111 hypernetworks: a click adds or removes <hypernet:name:1>")
    picker.chosen.connect(toggle)
    picker.setVisible(False)
    return picker


def offer(picker: NetworkPicker, entries: list[tuple[str, str, str, str]]) -> None:
    """Offer ``entries`` (name, description, family, family label); the button shows only
    when there are some."""
    picker.set_entries(entries)
    picker.setVisible(bool(entries))
