"""Models ▸ Train…: one training window for the app's life, taking turns on the device
with the generation queue, its run stopped (with a state saved) when the app quits."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import QCoreApplication, QObject
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu

from sdstudio.engine.paths import AppPaths

if TYPE_CHECKING:
    from sdstudio.ui.controller import GenerationController
    from sdstudio.ui.main_window import MainWindow
    from sdstudio.ui.training_dialog import TrainingDialog


class TrainingActions(QObject):
    """The menu action that opens (or brings back) the training window, added to the
    window's Models menu (or to ``menu``).

    ``rescan`` looks for models again, so that a finished LoRA, embedding, hypernetwork
    or model appears in the pickers. With ``controller`` a run waits for the generations
    queued before it, and holds the queue while it runs (see
    :mod:`sdstudio.ui.device_share`).
    """

    def __init__(
        self,
        window: MainWindow,
        paths: AppPaths,
        rescan: Callable[[], None],
        menu: QMenu | None = None,
        controller: GenerationController | None = None,
    ) -> None:
        super().__init__(window)
        self.controller = controller
        self.window = window
        self.paths = paths
        self.rescan = rescan
        self.dialog: TrainingDialog | None = None
        self.action = QAction("Train a LoRA, embedding or model…", window)
        self.action.setStatusTip(
            "Train a LoRA, an embedding, a hypernetwork or a DreamBooth model on a folder of "
            "captioned images"
        )
        self.action.triggered.connect(self.open)
        menu = menu or models_menu(window)
        menu.addSeparator()
        menu.addAction(self.action)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    def open(self) -> TrainingDialog:
        """Show the training window, made on first use (the training modules load then)."""
        if self.dialog is None:
            from sdstudio.ui.device_share import DeviceShare
            from sdstudio.ui.training_dialog import TrainingDialog

            share = DeviceShare(self.controller, self)
            self.dialog = TrainingDialog(
                self.paths, self.window.panel, self.rescan, self.window, share
            )
        self.dialog.show()
        self.dialog.raise_()
        self.dialog.activateWindow()
        return self.dialog

    def shutdown(self) -> None:
        """Stop a run going on, so that no training process outlives the app."""
        if self.dialog is not None:
            self.dialog.shutdown()


def models_menu(window: MainWindow) -> QMenu:
    """The window's Models menu (made when there is none yet)."""
    for action in window.menuBar().actions():
        menu = action.menu()
        if isinstance(menu, QMenu) and action.text().replace("&", "") == "Models":
            return menu
    return window.menuBar().addMenu("&Models")
