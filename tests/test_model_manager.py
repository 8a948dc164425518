"""The model manager window and removing downloads (offscreen)."""

from __future__ import annotations

import shutil
import sys
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


def memory_cell(dialog, name: str) -> tuple[str, str, bool]:
    """A model's memory figure, its tooltip and whether it carries the warning icon."""
    from PySide6.QtCore import Qt

    from sdstudio.ui.model_manager import MEMORY_COLUMN

    [item] = dialog.table.findItems(name, Qt.MatchFlag.MatchExactly, 0)
    return (
        item.text(MEMORY_COLUMN),
        item.toolTip(MEMORY_COLUMN),
        not item.icon(MEMORY_COLUMN).isNull(),
    )


@pytest.mark.skipif(sys.platform == "win32", reason="sparse files")
def test_the_memory_each_model_needs_is_shown_and_warned_of(qtbot, dialog, tmp_path: Path) -> None:
    from test_memory_estimate import write_huge_checkpoint

    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.memory import format_gb, machine_memory, model_needs, ram_available

    qtbot.waitUntil(lambda: memory_cell(dialog, "app-model")[0] != "", timeout=30_000)
    config = choose_device(dialog.settings.device)
    needs = model_needs(
        dialog.paths.models_dir / "app-model", config, machine_memory(config.device)
    )
    text, tip, warned = memory_cell(dialog, "app-model")
    assert text == format_gb(needs.estimate.total)
    assert tip.startswith("About ") and "It fits this computer." in tip and not warned

    available = ram_available()
    if available is None or available > 1.5e12:
        pytest.skip("this computer's free memory is unknown or larger than the test model")
    root = tmp_path / "large-models"
    root.mkdir()
    write_huge_checkpoint(root / "enormous.safetensors", 2 * 10**12)
    with qtbot.waitSignal(dialog.listed, timeout=30_000):
        dialog.add_folder(root)
    assert memory_cell(dialog, "app-model")[0] == text  # known figures come back at once
    qtbot.waitUntil(lambda: memory_cell(dialog, "enormous")[0] != "", timeout=30_000)
    text, tip, warned = memory_cell(dialog, "enormous")
    assert text.startswith("4") and text.endswith(" GB") and warned
    assert "enormous will not fit: it needs about 4" in tip and "use a smaller model" in tip
