""" "Try it" in the training window: the trained LoRA, embedding or hypernetwork put
into the prompt the way a click on its card or picker would, but never taken out again
(a second click leaves the prompt as it is); a DreamBooth model chosen as the model."""

from __future__ import annotations

from PySide6.QtWidgets import QPlainTextEdit

from sdstudio.engine.network_files import named_in
from sdstudio.engine.prompts import parse_prompt, toggle_lora_tag, toggle_word
from sdstudio.engine.training.embedding_options import NEGATIVE_SUFFIX
from sdstudio.ui.prompt_panel import PromptPanel


def try_trained(panel: PromptPanel, kind: str, name: str, path: str = "") -> str:
    """Put the run's result into ``panel``'s prompts, once, and say what to do next.

    A LoRA goes in as ``<lora:NAME:1>``, a hypernetwork as ``<hypernet:NAME:1>``; an
    embedding as the word ``NAME``; DreamArtist's pair as ``NAME`` in the prompt and
    ``NAME-neg`` in the negative prompt. A DreamBooth model (``path``, the file the run
    wrote) becomes the panel's model.
    """
    prompt = panel.prompt.toPlainText()
    if kind == "lora":
        if name.lower() not in {tag.lower() for tag, _weight in parse_prompt(prompt).loras}:
            panel.prompt.setPlainText(toggle_lora_tag(prompt, name))
        return f"<lora:{name}:1> is in the prompt: generate to try it."
    if kind == "hypernetwork":
        if name.lower() not in {tag.lower() for tag, _weight in parse_prompt(prompt).hypernets}:
            panel.prompt.setPlainText(toggle_lora_tag(prompt, name, kind="hypernet"))
        return f"<hypernet:{name}:1> is in the prompt: generate to try it."
    if kind == "dreambooth":
        panel.pick_model(path or name)
        return f"{name} is the model now: generate to try it."
    add_word(panel.prompt, name)
    if kind != "dreamartist":
        return f"{name} is in the prompt: generate to try it."
    negative = f"{name}{NEGATIVE_SUFFIX}"
    add_word(panel.negative, negative)
    return (
        f"{name} is in the prompt and {negative} in the negative prompt: generate to try "
        "them, at about the DreamArtist CFG as guidance."
    )


def try_tooltip(kind: str) -> str:
    """What "Try it" does for a run of ``kind``."""
    if kind == "lora":
        return "Put <lora:NAME:1> into the prompt"
    if kind == "hypernetwork":
        return "Put <hypernet:NAME:1> into the prompt"
    if kind == "dreambooth":
        return "Choose the new model to generate with"
    if kind == "dreamartist":
        return "Put NAME into the prompt and NAME-neg into the negative prompt"
    return "Put NAME into the prompt"


def add_word(edit: QPlainTextEdit, word: str) -> None:
    """Append ``word`` to the text, unless it is there already as a whole word."""
    text = edit.toPlainText()
    if not named_in(word, [text]):
        edit.setPlainText(toggle_word(text, word))
