"""Choosing models in the window: the model manager's "Use", a listing that never
chooses for the user, names after a restart, and settings naming a model you do not
have (pytest-qt, offscreen)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from sdstudio.engine.models.catalog import ModelEntry
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.settings import load_settings
from sdstudio.ui.image_settings import PanelChoices, settings_to_load


def checkpoint(name: str, path: str, family: str = "sd1") -> ModelEntry:
    return ModelEntry(name, "checkpoint", "safetensors", path, 1, "folder", family, "SD 1.x")


A = checkpoint("aaa-model", "/m/aaa-model.safetensors")
B = checkpoint("bbb-model", "/m/bbb-model.safetensors")


@pytest.fixture
def models(qtbot, window, paths):
    """The app's model list and its Models menu, wired as at start-up."""
    from sdstudio.app import add_models_menu
    from sdstudio.ui.model_list import ModelListLoader

    loader = ModelListLoader(paths, load_settings(paths))
    loader.loaded.connect(window.show_models)
    add_models_menu(window, paths, loader)
    yield loader
    loader.shutdown()


def open_manager(qtbot, window):
    from sdstudio.ui.model_manager import ModelManager

    [menu] = [m for m in window.menuBar().actions() if m.text() == "&Models"]
    [action] = menu.menu().actions()
    action.trigger()
    manager = window.findChild(ModelManager)
    with qtbot.waitSignal(manager.listed, timeout=30_000):
        pass  # the scan's result is queued to this thread
    return manager


def row(manager, name: str):
    items = manager.table.findItems(name, Qt.MatchFlag.MatchExactly, 0)
    assert items, name
    return items[0]


# A listing never chooses a model.


def test_listing_models_chooses_none_when_none_was_chosen(window) -> None:
    window.show_models([B, A])
    assert window.panel.model_path() == ""
    assert window.panel.model.currentText() == ""
    assert not window.panel.generate_button.isEnabled()
    assert window.stack.currentWidget() is window.welcome


def test_listing_more_models_keeps_the_chosen_one(window) -> None:
    window.show_models([B])
    window.panel.set_model(B.path)
    window.show_models([A, B])
    assert window.panel.model_path() == B.path
    assert window.panel.model.currentText() == "bbb-model"


def test_adding_a_folder_in_the_model_manager_keeps_the_model_choice(
    qtbot, window, models, tiny_model: Path, tmp_path: Path
) -> None:
    manager = open_manager(qtbot, window)
    root = tmp_path / "my-models"
    shutil.copytree(tiny_model, root / "aaa-model")
    shutil.copytree(tiny_model, root / "zzz-model")
    with qtbot.waitSignal(models.loaded, timeout=30_000):
        manager.add_folder(root)
    panel = window.panel
    assert panel.model.findText("aaa-model") >= 0 and panel.model.findText("zzz-model") >= 0
    assert panel.model_path() == ""  # nothing was chosen, and nothing is chosen for the user
    panel.set_model(str(root / "zzz-model"))
    shutil.copytree(tiny_model, tmp_path / "more" / "aaa-first")
    with qtbot.waitSignal(models.loaded, timeout=30_000):
        manager.add_folder(tmp_path / "more")
    assert panel.model.findText("aaa-first") >= 0
    assert panel.model_path() == str(root / "zzz-model")
    manager.shutdown()


# The model manager picks the model to generate with.


def test_the_model_manager_uses_a_model_by_double_click_or_use(
    qtbot, window, models, tiny_model: Path, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import save_file

    root = tmp_path / "my-models"
    shutil.copytree(tiny_model, root / "first")
    shutil.copytree(tiny_model, root / "second")
    (root / "VAE").mkdir()
    save_file({"decoder.conv_in.weight": torch.zeros(2)}, root / "VAE" / "v.safetensors")
    manager = open_manager(qtbot, window)
    with qtbot.waitSignals([manager.listed, models.loaded], timeout=30_000):
        manager.add_folder(root)
    panel = window.panel
    panel.steps.setValue(33)
    item = row(manager, "second")
    manager.table.itemDoubleClicked.emit(item, 0)
    assert panel.model_path() == str(root / "second")
    assert panel.model.currentText() == "second"
    assert panel.steps.value() == 33  # the user's steps stay
    manager.table.setCurrentItem(row(manager, "v"))
    assert not manager.use_button.isEnabled()  # a VAE is chosen in the prompt panel
    manager.table.setCurrentItem(row(manager, "first"))
    assert manager.use_button.isEnabled()
    manager.use_button.click()
    assert panel.model_path() == str(root / "first")
    assert "Generating with first" in manager.status.text()
    manager.shutdown()


# After a restart the model box shows the model's name.


def test_after_a_restart_the_model_box_shows_the_models_name(window, paths, tiny_model) -> None:
    from sdstudio.app import restore_last_request, save_last_request

    panel = window.panel
    panel.load(GenerationRequest(model=str(tiny_model), prompt="a boat"))
    save_last_request(window, paths)
    panel.set_model(str(paths.models_dir))
    restore_last_request(window, paths)
    assert panel.model.currentText() == "tiny-sd"  # the folder's name, not its path
    assert panel.model_path() == str(tiny_model)
    tooltip = panel.model.itemData(panel.model.currentIndex(), Qt.ItemDataRole.ToolTipRole)
    assert str(tiny_model) in tooltip
    window.show_models([checkpoint("org/tiny-sd", str(tiny_model))])  # the catalog's name
    assert panel.model.currentText() == "org/tiny-sd"
    assert panel.model_path() == str(tiny_model)
    assert [panel.model.itemData(i) for i in range(panel.model.count())].count(str(tiny_model)) == 1


# Settings naming a model you do not have say so.


def test_loading_settings_naming_a_missing_model_says_so(window) -> None:
    window.show_models([A, B])
    window.panel.set_model(A.path)
    window.pending_settings = GenerationRequest(
        model="/elsewhere/foo.safetensors", prompt="a boat", steps=7
    )
    window.pending_model_name = "foo"
    window.load_pending_settings()
    assert window.panel.model_path() == A.path
    assert window.panel.steps.value() == 7
    assert (
        "the image was made with 'foo.safetensors', which is not among your models; "
        "keeping aaa-model" in window.statusBar().currentMessage()
    )


def test_a_model_named_in_settings_is_found_by_its_name() -> None:
    choices = PanelChoices(models=[("aaa-model", A.path), ("bbb-model", B.path)], vaes=[],
                           model=A.path, vae="")  # fmt: skip
    request = GenerationRequest(model="BBB-Model", prompt="x")
    loaded, notices = settings_to_load(request, "BBB-Model", choices, trusted=False)
    assert (loaded.model, notices) == (B.path, [])
    nothing = PanelChoices(models=[("aaa-model", A.path)], vaes=[], model="", vae="")
    loaded, notices = settings_to_load(request, "BBB-Model", nothing, trusted=False)
    assert notices == [
        "the image was made with 'BBB-Model', which is not among your models; "
        "choose a model to generate with"
    ]
