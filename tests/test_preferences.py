"""The settings window, and the outputs folder taking effect at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdstudio.engine.errors import StorageError
from sdstudio.engine.fileio import check_writable_folder
from sdstudio.engine.history.library import ImageLibrary
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.settings import load_settings
from sdstudio.ui.preferences import PreferencesDialog


@pytest.fixture
def dialog(qtbot, paths: AppPaths) -> PreferencesDialog:
    window = PreferencesDialog(paths, load_settings(paths))
    qtbot.addWidget(window)
    window.show()
    return window


def test_shows_the_settings_in_effect(dialog: PreferencesDialog, paths: AppPaths) -> None:
    assert dialog.outputs.text() == str(paths.outputs_dir)
    assert (dialog.theme.currentData(), dialog.device.currentData()) == ("system", "auto")
    assert dialog.memory.currentData() == "auto"
    assert dialog.compile.currentData() == "off"


def test_saving_writes_the_settings_file(
    qtbot, dialog: PreferencesDialog, paths: AppPaths, tmp_path: Path
) -> None:
    folder = tmp_path / "my pictures" / "sd"
    dialog.outputs.setText(str(folder))
    dialog.theme.setCurrentIndex(dialog.theme.findData("dark"))
    dialog.memory.setCurrentIndex(dialog.memory.findData("low"))
    dialog.compile.setCurrentIndex(dialog.compile.findData("on"))
    with qtbot.waitSignal(dialog.saved) as saved:
        assert dialog.save()
    settings = load_settings(paths)
    assert saved.args[0] == settings
    assert (settings.outputs_dir, settings.theme, settings.memory) == (str(folder), "dark", "low")
    assert settings.compile_denoiser  # the next generation compiles its denoiser
    assert folder.is_dir()  # created when checked
    assert not dialog.isVisible()


def test_the_default_folder_is_stored_as_the_default(dialog: PreferencesDialog, paths) -> None:
    dialog.outputs.setText(str(paths.outputs_dir))
    assert dialog.save()
    assert load_settings(paths).outputs_dir == ""


@pytest.mark.parametrize("value", ["", "relative/folder", "FILE"])
def test_an_unusable_folder_is_refused_and_nothing_saved(
    dialog: PreferencesDialog, paths: AppPaths, tmp_path: Path, value: str
) -> None:
    if value == "FILE":
        (tmp_path / "a-file").write_text("x")
        value = str(tmp_path / "a-file")
    dialog.outputs.setText(value)
    assert not dialog.save()
    assert dialog.isVisible() and dialog.error.isVisible()
    assert dialog.error.text().startswith("Not saved: ")
    assert not paths.settings_file.exists()


def test_check_writable_folder_says_why(tmp_path: Path) -> None:
    check_writable_folder(tmp_path / "new" / "folder")
    assert (tmp_path / "new" / "folder").is_dir()
    assert list((tmp_path / "new" / "folder").iterdir()) == []  # the probe file is gone
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="is a file, not a folder"):
        check_writable_folder(tmp_path / "file")
    with pytest.raises(StorageError, match="part of its path is a file"):
        check_writable_folder(tmp_path / "file" / "below")


def test_new_images_go_to_the_folder_chosen_in_settings(
    qtbot, paths: AppPaths, tiny_model: Path, tmp_path: Path
) -> None:
    from sdstudio.app import add_settings_action
    from sdstudio.ui.controller import GenerationController
    from sdstudio.ui.main_window import MainWindow
    from sdstudio.ui.worker import GenerationWorker

    library = ImageLibrary.open(paths.history_db, paths.outputs_dir)
    controller = GenerationController(GenerationWorker(library, paths, "cpu"))
    window = MainWindow(controller, library, paths)
    qtbot.addWidget(window)
    add_settings_action(window, paths, library)
    try:
        action = next(a for a in window.file_menu.actions() if a.text() == "Settings…")
        assert window.file_menu.actions().index(action) < window.file_menu.actions().index(
            window.quit_action
        )
        action.trigger()
        dialog = window.findChild(PreferencesDialog)
        assert dialog is not None
        dialog.outputs.setText(str(tmp_path / "chosen"))
        assert dialog.save()
        window.panel.load(
            GenerationRequest(model=str(tiny_model), prompt="x", steps=2, width=64, height=64)
        )
        with qtbot.waitSignal(controller.finished, timeout=60_000) as done:
            window.generate()
        assert Path(done.args[1][0]).is_relative_to(tmp_path / "chosen")
    finally:
        controller.shutdown()
        window.gallery.shutdown()
        library.close()
