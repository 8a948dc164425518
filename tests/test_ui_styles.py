"""The app's styles button and table, the Advanced section's variation rows, and "Vary"
(pytest-qt, offscreen)."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from PySide6.QtWidgets import QApplication

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.prompting.styles import Style, read_styles, write_styles
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.variation_noise import VARY_BATCH, VARY_STRENGTH
from sdstudio.ui.advanced_settings import AdvancedSettings
from sdstudio.ui.styles_dialog import StylesDialog
from sdstudio.ui.styles_menu import StylesButton


def _button(qtbot, tmp_path: Path, prompts=("a cat", "ugly")) -> StylesButton:
    button = StylesButton(lambda: prompts)
    qtbot.addWidget(button)
    button.own_file = lambda: tmp_path / "styles.csv"
    button.other_files = lambda: []
    return button


def test_checked_styles_are_applied_when_the_request_is_built(qtbot, tmp_path: Path) -> None:
    button = _button(qtbot, tmp_path)
    write_styles(
        tmp_path / "styles.csv", [Style("Art", "art of {prompt}", "bad"), Style("4k", "4k")]
    )
    button.rebuild()
    actions = {a.text(): a for a in button.menu().actions()}
    actions["4k"].setChecked(True)
    actions["Art"].setChecked(True)
    assert button.checked == ["4k", "Art"] and button.text() == "Styles (2)"
    request = button.apply(GenerationRequest(model="m", prompt="a cat", negative_prompt="ugly"))
    assert (request.prompt, request.negative_prompt) == ("art of a cat, 4k", "ugly, bad")
    assert request.styles == ("4k", "Art")
    write_styles(tmp_path / "styles.csv", [Style("Art", "x")])  # 4k removed meanwhile
    with pytest.raises(InvalidRequest, match="Unknown style '4k'"):
        button.apply(request)


def test_save_current_prompt_as_style_and_edit_table(qtbot, tmp_path: Path) -> None:
    button = _button(qtbot, tmp_path)
    assert button.save_current("Mine")
    [mine] = read_styles(tmp_path / "styles.csv")
    assert (mine.name, mine.prompt, mine.negative_prompt) == ("Mine", "a cat", "ugly")
    other = tmp_path / "a1111.csv"
    other.write_text('name,prompt\n"Old, style","old {prompt}"\n', encoding="utf-8")
    dialog = StylesDialog(tmp_path / "styles.csv", [other])
    qtbot.addWidget(dialog)
    assert dialog.table.rowCount() == 1
    assert dialog.import_a1111() == 1
    dialog.table.item(0, 1).setText('say "hi", {prompt}')
    dialog.save()
    saved = [(s.name, s.prompt, s.negative_prompt) for s in read_styles(tmp_path / "styles.csv")]
    assert saved == [("Mine", 'say "hi", {prompt}', "ugly"), ("Old, style", "old {prompt}", "")]


def test_variation_rows_give_the_request_fields(qtbot) -> None:
    advanced = AdvancedSettings()
    qtbot.addWidget(advanced)
    rows = advanced.variation
    assert rows.values() == {"variation_seed": 0, "variation_strength": 0.0,
                             "seed_resize_from": (0, 0)}  # fmt: skip
    rows.strength.setValue(0.3)
    drawn = rows.values(random.Random(1))
    assert drawn["variation_seed"] == random.Random(1).randint(0, 2**32 - 1)
    rows.seed.setText("42")
    rows.resize_width.setValue(512)
    rows.resize_height.setValue(768)
    values = advanced.values()
    assert (values["variation_seed"], values["variation_strength"]) == (42, 0.3)
    assert values["seed_resize_from"] == (512, 768)
    assert "variation 0.3" in advanced.toggle.text()
    advanced.load(GenerationRequest(model="m", prompt="", variation_seed=7, variation_strength=0.5))
    assert (rows.seed.text(), rows.strength.value(), rows.resize_width.value()) == ("7", 0.5, 0)


def test_vary_queues_a_batch_of_four_variations(window, monkeypatch: pytest.MonkeyPatch) -> None:
    submitted: list[GenerationRequest] = []
    monkeypatch.setattr(window.controller, "submit", lambda r, *a: submitted.append(r) or 1)
    made = GenerationRequest(model="m", prompt="a cat", seed=1234, steps=3)
    entry = SimpleNamespace(request=made)
    window.gallery.vary_requested.emit(entry)
    [request] = submitted
    assert request.batch_size == VARY_BATCH == 4
    assert request.variation_strength == VARY_STRENGTH == 0.25
    assert request.seed == 1234 and request.steps == 3
    assert 0 <= request.variation_seed < 2**32
    assert window.gallery.vary_action in window.gallery.menu_actions
    menus = [a.menu() for a in window.menuBar().actions() if a.text() == "&Generate"]
    assert window.history_actions.vary_action in menus[0].actions()
    QApplication.processEvents()
