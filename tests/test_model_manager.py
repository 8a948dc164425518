"""The model manager window and removing downloads (offscreen)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from safetensors.torch import save_file

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.models.removal import remove_downloaded, repo_id_of
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.settings import Settings, load_settings


@pytest.fixture
def dialog(qtbot, sdstudio_home, tiny_model):
    from sdstudio.ui.model_manager import ModelManager

    paths = AppPaths.default()
    shutil.copytree(tiny_model, paths.models_dir / "app-model")
    manager = ModelManager(paths, load_settings(paths))
    qtbot.addWidget(manager)
    # The scan runs on a pool thread; its result is queued to this thread.
    with qtbot.waitSignal(manager.listed, timeout=30_000):
        pass
    yield manager
    manager.shutdown()


def names(dialog) -> list[str]:
    return [dialog.table.topLevelItem(i).text(0) for i in range(dialog.table.topLevelItemCount())]


def kinds(dialog) -> list[str]:
    return [dialog.table.topLevelItem(i).text(1) for i in range(dialog.table.topLevelItemCount())]


def test_lists_models_and_manages_folders(qtbot, dialog, tmp_path: Path) -> None:
    import torch

    assert names(dialog) == ["app-model"]
    root = tmp_path / "stable-diffusion-webui"
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    save_file({"x": torch.zeros(2)}, root / "models" / "Stable-diffusion" / "mine.safetensors")
    changes = []
    dialog.models_changed.connect(lambda: changes.append(1))
    (root / "models" / "VAE").mkdir()
    save_file({"decoder.conv_in.weight": torch.zeros(2)}, root / "models" / "VAE" / "v.safetensors")
    with qtbot.waitSignal(dialog.listed, timeout=30_000):
        dialog.add_folder(root)
    assert names(dialog) == ["app-model", "mine", "v"] and changes == [1]
    assert kinds(dialog) == ["Model", "Model", "VAE"]
    assert load_settings(dialog.paths).model_folders == (str(root.resolve()),)
    with qtbot.waitSignal(dialog.listed, timeout=30_000):
        dialog.remove_folder.activated.emit(0)
    assert names(dialog) == ["app-model"]
    assert load_settings(dialog.paths).model_folders == ()


def test_failed_download_is_reported_and_resets(qtbot, dialog) -> None:
    dialog.repo.setCurrentIndex(0)  # SD-Turbo, but this machine is offline
    with qtbot.waitSignal(dialog.download_failed, timeout=60_000) as failed:
        dialog.start_download()
    assert failed.args[0] == "stabilityai/sd-turbo"
    assert failed.args[1]  # a one-line reason
    qtbot.waitUntil(lambda: dialog.download_button.isEnabled())
    assert not dialog.cancel_button.isEnabled()
    assert dialog.status.text() == failed.args[1]


def test_only_app_downloads_are_deleted(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="was not downloaded by sdstudio"):
        remove_downloaded(Settings(), "someone/else", cache_dir=tmp_path)
    settings = Settings(downloaded_models=("org/model",))
    assert remove_downloaded(settings, "org/model", cache_dir=tmp_path).downloaded_models == ()
    snapshot = tmp_path / "models--org--my-model" / "snapshots" / "abc"
    assert repo_id_of(snapshot) == "org/my-model"
    assert repo_id_of(tmp_path / "plain") is None
