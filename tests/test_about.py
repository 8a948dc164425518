"""Help ▸ About: versions, data folders and the log file, copyable for bug reports."""

from __future__ import annotations

import html
import subprocess
import sys

import pytest
from PySide6.QtCore import QObject, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QMainWindow

import sdstudio
from sdstudio.engine.paths import AppPaths
from sdstudio.ui.about import (
    ENGINE_STARTING,
    AboutDialog,
    AboutInfo,
    DeviceInUse,
    cpu_description,
    describe_device,
    library_version,
)


@pytest.fixture
def info(paths: AppPaths) -> AboutInfo:
    return AboutInfo.collect(
        device="cpu",
        outputs_dir=paths.outputs_dir,
        history_db=paths.history_db,
        models_dir=paths.models_dir,
        log_file=paths.log_dir / "sdstudio.log",
    )


class UrlRecorder(QObject):
    """Takes the place of the file manager for ``file:`` URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[QUrl] = []

    @Slot(QUrl)
    def open(self, url: QUrl) -> None:
        self.urls.append(url)


def test_details_name_versions_device_and_folders(info: AboutInfo, paths: AppPaths) -> None:
    details = dict(info.rows)
    assert details["sdstudio"] == sdstudio.__version__
    assert details["diffusers"] == library_version("diffusers") != "not installed"
    assert details["Device"] == "cpu"
    assert details["History"] == str(paths.history_db)
    assert details["Log file"] == str(paths.log_dir / "sdstudio.log")
    assert library_version("no-such-distribution-here") == "not installed"


def test_collecting_details_does_not_import_torch() -> None:
    """Run in a fresh process: earlier tests in this one have imported torch."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sdstudio.ui.about import AboutInfo\n"
        "info = AboutInfo.collect(device='auto', outputs_dir=Path('o'), history_db=Path('h'),\n"
        "                         models_dir=Path('m'), log_file=None)\n"
        "from sdstudio.ui.about import DeviceInUse\n"
        "assert 'engine has started' in DeviceInUse('auto').text()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_dialog_shows_version_and_log_file(qtbot, info: AboutInfo, paths: AppPaths) -> None:
    dialog = AboutDialog(info, paths.log_dir / "sdstudio.log")
    qtbot.addWidget(dialog)
    dialog.show()
    text = dialog.details.text()
    assert str(paths.log_dir / "sdstudio.log") in text
    assert sdstudio.__version__ in text
    assert dialog.log_button.isEnabled()


def test_copy_puts_the_details_on_the_clipboard(qtbot, info: AboutInfo, paths) -> None:
    dialog = AboutDialog(info, paths.log_dir / "sdstudio.log")
    qtbot.addWidget(dialog)
    dialog.copy_button.click()
    copied = QGuiApplication.clipboard().text()
    assert copied == info.as_text()
    assert f"sdstudio: {sdstudio.__version__}" in copied
    assert f"Log file: {paths.log_dir / 'sdstudio.log'}" in copied


def test_open_log_folder_asks_for_the_folder(qtbot, info: AboutInfo, paths) -> None:
    recorder = UrlRecorder()
    QDesktopServices.setUrlHandler("file", recorder, "open")
    try:
        dialog = AboutDialog(info, paths.log_dir / "sdstudio.log")
        qtbot.addWidget(dialog)
        dialog.log_button.click()
    finally:
        QDesktopServices.unsetUrlHandler("file")
    assert [url.toLocalFile() for url in recorder.urls] == [str(paths.log_dir)]


def test_without_a_log_file_the_button_is_off(qtbot, info: AboutInfo) -> None:
    dialog = AboutDialog(info, None)
    qtbot.addWidget(dialog)
    assert not dialog.log_button.isEnabled()
    assert dialog.open_log_folder() is False


def test_help_menu_opens_the_dialog(qtbot, paths: AppPaths) -> None:
    from sdstudio.app import add_help_menu

    window = QMainWindow()
    qtbot.addWidget(window)
    log_file = paths.log_dir / "sdstudio.log"
    add_help_menu(window, paths, "cpu", log_file)  # type: ignore[arg-type]
    [help_menu] = [a.menu() for a in window.menuBar().actions() if a.text() == "&Help"]
    [about] = help_menu.actions()
    assert about.text() == "About sdstudio"
    about.trigger()
    dialog = window.findChild(AboutDialog)
    assert dialog is not None and dialog.isVisible()
    assert dict(dialog.info.rows)["Device"] == cpu_description()
    assert str(log_file) in dialog.details.text()
    dialog.close()


class Engine(QObject):
    started = Signal()


def expected_device() -> str:
    import torch

    if torch.cuda.is_available():
        from sdstudio.engine.cuda_path import current_gpu, describe_fast_path, sd_gpu_precision

        sd, why = sd_gpu_precision(current_gpu())
        from sdstudio.engine.devices import choose_device

        flow = "bfloat16" if torch.cuda.is_bf16_supported(False) else "float16"
        precision = f"{sd}: {why} (flow-matching models: {flow})"
        fast_path = describe_fast_path(choose_device("cuda"))
        return f"CUDA: {torch.cuda.get_device_name()} ({precision}); {fast_path}"
    mps = getattr(torch.backends, "mps", None)
    return "MPS (float16)" if mps is not None and mps.is_available() else cpu_description()


def test_about_shows_the_device_auto_resolves_to(qtbot, paths: AppPaths) -> None:
    from sdstudio.app import add_help_menu

    window = QMainWindow()
    qtbot.addWidget(window)
    engine = Engine()
    add_help_menu(window, paths, "auto", None, engine.started)  # type: ignore[arg-type]
    [help_menu] = [a.menu() for a in window.menuBar().actions() if a.text() == "&Help"]
    help_menu.actions()[0].trigger()
    dialog = window.findChild(AboutDialog)
    starting = dict(dialog.info.rows)["Device"]
    assert starting == f"Automatic: {ENGINE_STARTING}"
    engine.started.emit()  # the worker has imported torch
    device = dict(dialog.info.rows)["Device"]
    assert device == expected_device() and "auto" not in device.casefold()
    assert html.escape(device) in dialog.details.text()
    dialog.close()
    help_menu.actions()[0].trigger()  # later dialogs show it at once
    [*_, later] = window.findChildren(AboutDialog)
    assert dict(later.info.rows)["Device"] == expected_device()
    later.close()


def test_describing_devices() -> None:
    import torch

    assert describe_device("auto") == expected_device()
    assert describe_device("cpu") == cpu_description()
    assert cpu_description().startswith("CPU (float32")  # as the tests pin it
    if not torch.cuda.is_available():
        assert describe_device("cuda") == (
            "cuda: CUDA was requested but no CUDA GPU is available to this torch build."
        )
    assert DeviceInUse("cpu").text() == cpu_description()  # known without torch
    assert DeviceInUse("cuda").text() == f"cuda: {ENGINE_STARTING}"


def test_open_log_folder_without_a_file_manager(qtbot, info: AboutInfo, paths, monkeypatch):
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: False))
    dialog = AboutDialog(info, paths.log_dir / "sdstudio.log")
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.open_log_folder() is False
    assert dialog.note.isVisible()
    assert dialog.note.text() == (
        f"Could not open a file manager; the folder path was copied: {paths.log_dir}"
    )
    assert QGuiApplication.clipboard().text() == str(paths.log_dir)
