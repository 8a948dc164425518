"""Start the desktop app: the one place where the engine is wired to the UI.

torch and diffusers are not imported here; the worker imports them on its own
thread when the first job runs, so the window is interactive at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sqlite3
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import sdstudio
from sdstudio.desktop_entry import APP_ID, run_command
from sdstudio.display_check import display_problem
from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.fileio import write_atomically
from sdstudio.engine.history.library import MEMORY, ImageLibrary
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.settings import Settings, choose_vae, load_settings, save_settings
from sdstudio.logs import configure_logging
from sdstudio.resource_files import resource_path

if TYPE_CHECKING:
    from PySide6.QtCore import SignalInstance

    from sdstudio.ui.main_window import MainWindow
    from sdstudio.ui.model_list import ModelListLoader

log = logging.getLogger("sdstudio.app")

LAST_REQUEST_FILE = "last-request.json"
WARM_UP_DELAY_MS = 1500
"""The worker imports torch this long after the window appears."""


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """The app's command line: images to open, and device choice."""
    parser = argparse.ArgumentParser(prog="sdstudio", description="Stable Diffusion studio")
    parser.add_argument("images", nargs="*", help="images to open (their settings are offered)")
    parser.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda", "mps"],
        help="where to generate (default: the Device setting, itself automatic)",
    )
    parser.add_argument(
        "--new-instance",
        action="store_true",
        help="open a separate window instead of handing the images to the running one",
    )
    parser.add_argument("--version", action="version", version=f"sdstudio {sdstudio.__version__}")
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="generate with a tiny model through the window, print a JSON summary, and exit",
    )
    desktop = parser.add_mutually_exclusive_group()
    desktop.add_argument(
        "--install-desktop-entry",
        action="store_true",
        help="add sdstudio to the applications menu of this Linux user, and exit",
    )
    desktop.add_argument(
        "--uninstall-desktop-entry",
        action="store_true",
        help="remove what --install-desktop-entry added, and exit",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the app until its window closes."""
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    if args.install_desktop_entry or args.uninstall_desktop_entry:
        return run_command(uninstall=args.uninstall_desktop_entry)
    if args.self_test:
        from sdstudio.ui.self_test import run_self_test

        return run_self_test("cpu" if args.device == "auto" else args.device)
    problem = display_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    from PySide6.QtCore import QTimer
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from sdstudio.ui.single_instance import FileOpenEvents, InstanceServer, claim_instance

    paths = AppPaths.default()
    log_file = configure_logging(paths.log_dir / "sdstudio.log")
    settings = load_settings(paths)
    notices: list[str] = []
    app = QApplication.instance() or QApplication([sys.argv[0]])
    instance: InstanceServer | None = None
    if not args.new_instance:
        instance = claim_instance(paths, args.images)
        if instance is None:
            log.info("Handed %d file(s) to the sdstudio already running", len(args.images))
            return 0
    # Imported only now, so that a launch that hands its files over stays quick.
    from sdstudio.ui.controller import GenerationController
    from sdstudio.ui.main_window import MainWindow
    from sdstudio.ui.model_list import ModelListLoader
    from sdstudio.ui.theme import apply_theme
    from sdstudio.ui.training_actions import TrainingActions
    from sdstudio.ui.worker import GenerationWorker
    from sdstudio.ui.xyz_actions import XyzActions

    library = open_library(paths, settings, notices.append)
    app.setApplicationName("sdstudio")
    app.setApplicationVersion(sdstudio.__version__)
    app.setOrganizationName("sdstudio")
    app.setDesktopFileName(APP_ID)
    app.setWindowIcon(QIcon(str(resource_path("sdstudio.svg"))))
    apply_theme(app, settings.theme)

    device = args.device if args.device != "auto" else settings.device
    controller = GenerationController(GenerationWorker(library, paths, device))
    window = MainWindow(controller, library, paths)
    install_excepthook(window, log_file)
    for notice in notices:
        window.show_error(notice)
    remember_vae_choices(window, paths, settings)
    restore_last_request(window, paths)
    for image in args.images:
        window.open_file(Path(image))
    models = ModelListLoader(paths, settings)
    models.loaded.connect(window.show_models)
    add_settings_action(window, paths, library)
    add_models_menu(window, paths, models)
    XyzActions(window)
    TrainingActions(
        window, paths, lambda: models.reload(load_settings(paths)), controller=controller
    )
    add_help_menu(window, paths, device, log_file, controller.warmed_up)
    if instance is not None:
        instance.files_received.connect(lambda files: open_handed_over(window, files))
    file_events = FileOpenEvents(app)
    file_events.files_received.connect(lambda files: open_handed_over(window, files))
    app.installEventFilter(file_events)
    window.show()
    window.queue_keeper.offer_saved()
    models.refresh()
    QTimer.singleShot(WARM_UP_DELAY_MS, controller.warm_up)
    try:
        return int(app.exec())
    finally:
        # However the loop ended, stop the worker thread before Qt objects go away.
        save_last_request(window, paths)
        controller.shutdown()
        models.shutdown()
        window.gallery.shutdown()
        library.close()
        if instance is not None:
            instance.close()


def open_library(
    paths: AppPaths, settings: Settings, on_notice: Callable[[str], None]
) -> ImageLibrary:
    """Open the image library; if the history cannot be used, keep one in memory.

    The database is checked (a damaged one is moved aside and rebuilt); one
    that is locked, on a full or read-only disk or behind an I/O error is left
    untouched for the next start. Images are still written to the outputs
    folder with their settings, so a later rebuild recovers them.
    """
    outputs = settings.outputs_path(paths)
    data_folders = (paths.data_dir, paths.inputs_dir, paths.config_dir, paths.cache_dir)
    try:
        return ImageLibrary.open(
            paths.history_db,
            outputs,
            on_notice=on_notice,
            data_folders=data_folders,
            check_integrity=True,
        )
    except (SdStudioError, sqlite3.Error, OSError) as error:
        log.warning("The history could not be opened: %s", error, exc_info=True)
        on_notice(
            f"{error} sdstudio keeps working without its history for now: new images are "
            f"still saved to {outputs} with their settings; run `sdstudio-cli history rebuild` "
            "later to add them."
        )
        return ImageLibrary.open(MEMORY, outputs, data_folders=())


def add_settings_action(window: MainWindow, paths: AppPaths, library: ImageLibrary) -> None:
    """File ▸ Settings…: the outputs folder takes effect at once, the theme too."""
    from PySide6.QtGui import QAction, QKeySequence
    from PySide6.QtWidgets import QApplication

    from sdstudio.ui.preferences import PreferencesDialog
    from sdstudio.ui.theme import apply_theme

    def applied(settings: Settings) -> None:
        library.set_outputs_dir(settings.outputs_path(paths))
        app = QApplication.instance()
        if isinstance(app, QApplication):
            apply_theme(app, settings.theme)

    def open_settings() -> None:
        dialog = PreferencesDialog(paths, load_settings(paths), window)
        dialog.saved.connect(applied)
        dialog.open()

    action = QAction("Settings…", window, shortcut=QKeySequence("Ctrl+,"))
    action.setMenuRole(action.MenuRole.PreferencesRole)
    action.triggered.connect(open_settings)
    window.file_menu.insertAction(window.quit_action, action)


def add_models_menu(window: MainWindow, paths: AppPaths, models: ModelListLoader) -> None:
    """The Models menu: the model manager, whose changes refresh the model picker and
    whose "Use" chooses the model to generate with."""
    from PySide6.QtGui import QKeySequence

    from sdstudio.ui.model_manager import ModelManager

    def open_manager() -> None:
        manager = ModelManager(paths, load_settings(paths), window)
        manager.models_changed.connect(lambda: models.reload(load_settings(paths)))
        manager.model_chosen.connect(window.panel.pick_model)
        manager.open()

    action = window.menuBar().addMenu("&Models").addAction("Manage models…")
    action.setShortcut(QKeySequence("Ctrl+M"))
    action.triggered.connect(open_manager)


def add_help_menu(
    window: MainWindow,
    paths: AppPaths,
    device: str,
    log_file: Path | None,
    engine_started: SignalInstance | None = None,
) -> None:
    """The Help menu: About, with versions and data locations for bug reports.

    ``device`` is the Device setting; About shows the device it resolves to once
    ``engine_started`` (the worker's warm-up) has fired, torch being imported then.
    """
    from PySide6.QtCore import Qt

    from sdstudio.ui.about import AboutDialog, AboutInfo, DeviceInUse

    in_use = DeviceInUse(device)
    if engine_started is not None:
        engine_started.connect(in_use.engine_started)

    def show_about() -> None:
        info = AboutInfo.collect(
            device=in_use.text(),
            outputs_dir=load_settings(paths).outputs_path(paths),
            history_db=paths.history_db,
            models_dir=paths.models_dir,
            log_file=log_file,
        )
        dialog = AboutDialog(info, log_file, window)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        if not in_use.started and engine_started is not None:
            dialog.follow_device(in_use, engine_started)
        dialog.open()

    window.menuBar().addMenu("&Help").addAction("About sdstudio").triggered.connect(show_about)


def open_handed_over(window: MainWindow, files: list[str]) -> None:
    """Open the files a later launch handed over, and bring the window to the front."""
    for file in files:
        window.open_file(Path(file))
    if window.isMinimized():
        window.showNormal()
    window.show()
    window.raise_()
    window.activateWindow()


def remember_vae_choices(window: MainWindow, paths: AppPaths, settings: Settings) -> None:
    """Show each model with the VAE chosen for it, and keep new choices in the settings."""
    window.panel.set_model_vaes(settings.model_vaes)

    def save(model: str, vae: str) -> None:
        try:
            save_settings(paths, choose_vae(load_settings(paths), model, vae))
        except SdStudioError as error:
            window.show_error(f"The VAE choice was not saved: {error}")

    window.panel.vae_chosen.connect(save)


def restore_last_request(window: MainWindow, paths: AppPaths) -> None:
    """Fill the prompt panel with the settings used last time."""
    file = paths.config_dir / LAST_REQUEST_FILE
    with contextlib.suppress(OSError, SdStudioError):
        window.panel.load(GenerationRequest.from_json(file.read_text("utf-8")))


def save_last_request(window: MainWindow, paths: AppPaths) -> None:
    """Remember the panel's settings for the next start."""
    with contextlib.suppress(SdStudioError):
        request = window.panel.request()
        data = json.dumps(request.to_dict(), indent=2).encode("utf-8")
        write_atomically(paths.config_dir / LAST_REQUEST_FILE, data)


def install_excepthook(window: MainWindow, log_file: Path | None) -> None:
    """Log any uncaught exception (a crash in a slot) and show it instead of dying."""

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        log.error("Uncaught exception:\n%s", "".join(traceback.format_exception(kind, error, tb)))
        where = f"\n\nDetails are in {log_file}." if log_file else ""
        window.show_error(f"Something went wrong: {type(error).__name__}: {error}{where}")

    sys.excepthook = hook
