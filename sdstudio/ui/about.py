"""Help ▸ About: versions, device and where the data and logs are, ready to paste into a report."""

from __future__ import annotations

import html
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import PySide6
from PySide6.QtCore import Qt, SignalInstance, Slot, qVersion
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

import sdstudio
from sdstudio.engine.errors import SdStudioError, first_line
from sdstudio.ui.desktop_files import show_folder

LIBRARIES = ("torch", "diffusers", "transformers")
ENGINE_STARTING = "chosen once the engine has started (a few seconds after launch)"


def describe_device(choice: str) -> str:
    """The device the engine runs on for the Device setting ``choice`` ("auto", "cpu",
    "cuda" or "mps"), resolved as the engine resolves it: "CPU (bfloat16: the CPU has
    AMX)" (the precision ``auto`` picks and why), "CUDA: NVIDIA GeForce RTX 4090
    (float16: …); FlashAttention (PyTorch SDPA), …" (with the fast path), "MPS (float16)".

    Imports torch (no model is loaded): call it once the worker has imported it.
    """
    try:
        from sdstudio.engine.devices import choose_device

        config = choose_device(choice)
        if config.device == "cuda":
            import torch

            from sdstudio.engine.cuda_path import describe_fast_path
            from sdstudio.engine.precision import auto_precision

            name = torch.cuda.get_device_name()
            return f"CUDA: {name} ({auto_precision('cuda')}); {describe_fast_path(config)}"
    except SdStudioError as error:
        return f"{choice}: {error}"
    except Exception as error:  # a broken torch install must not break the dialog
        return f"{choice} (torch could not tell: {first_line(error, 200)})"
    if config.device == "cpu":
        return cpu_description()
    return f"{config.device.upper()} ({config.precision})"


def cpu_description() -> str:
    """The CPU with the precision ``auto`` picks on it and why (no torch needed)."""
    from sdstudio.engine.precision import auto_precision

    try:
        return f"CPU ({auto_precision('cpu')})"
    except SdStudioError as error:  # a bad SDSTUDIO_SD_CPU_PRECISION
        return f"CPU ({error})"


class DeviceInUse:
    """What About shows as the device: resolved (see :func:`describe_device`) once the
    engine has started, since torch is imported only then; call :meth:`engine_started`."""

    def __init__(self, choice: str) -> None:
        self.choice = choice
        self.started = False
        self._described: str | None = None

    def engine_started(self) -> None:
        """The worker has imported torch; the device can be told without a pause."""
        self.started = True

    def text(self) -> str:
        """The device in words, or what it will be chosen from while the engine starts."""
        if self._described is not None:
            return self._described
        if self.started:
            self._described = describe_device(self.choice)
            return self._described
        if self.choice == "cpu":
            return cpu_description()
        return f"{'Automatic' if self.choice == 'auto' else self.choice}: {ENGINE_STARTING}"


def library_version(name: str) -> str:
    """An installed distribution's version, read from its metadata (nothing is imported)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


@dataclass(frozen=True, slots=True)
class AboutInfo:
    """What the About dialog shows, as label and value pairs."""

    rows: tuple[tuple[str, str], ...]

    @classmethod
    def collect(
        cls,
        *,
        device: str,
        outputs_dir: Path,
        history_db: Path,
        models_dir: Path,
        log_file: Path | None,
    ) -> AboutInfo:
        """Versions of sdstudio and its libraries, the device, and the data locations."""
        rows = [
            ("sdstudio", sdstudio.__version__),
            *((name, library_version(name)) for name in LIBRARIES),
            ("PySide6", f"{PySide6.__version__} (Qt {qVersion()})"),
            ("Python", f"{platform.python_version()} ({sys.platform}, {platform.machine()})"),
            ("Device", device),
            ("Outputs", str(outputs_dir)),
            ("History", str(history_db)),
            ("Models", str(models_dir)),
            ("Log file", str(log_file) if log_file else "off (the log folder is not writable)"),
        ]
        return cls(tuple(rows))

    def with_row(self, label: str, value: str) -> AboutInfo:
        """The same details with one row's value changed."""
        return AboutInfo(tuple((key, value if key == label else v) for key, v in self.rows))

    def as_text(self) -> str:
        """Plain text, one ``label: value`` line each, for bug reports."""
        return "\n".join(f"{label}: {value}" for label, value in self.rows)


class AboutDialog(QDialog):
    """Name, icon and version, with the details a bug report needs."""

    def __init__(
        self, info: AboutInfo, log_file: Path | None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("About sdstudio")
        self.info = info
        self.log_file = log_file
        self._device: DeviceInUse | None = None

        icon = QLabel()
        icon.setPixmap(QApplication.windowIcon().pixmap(64, 64))
        title = QLabel(
            f"<h2>sdstudio {html.escape(sdstudio.__version__)}</h2>"
            "<p>A desktop studio for Stable Diffusion.<br>"
            "Images are made on this computer; nothing is sent anywhere.</p>"
        )
        header = QHBoxLayout()
        header.addWidget(icon, 0, Qt.AlignmentFlag.AlignTop)
        header.addWidget(title, 1)

        self.details = QLabel()
        self.details.setObjectName("aboutDetails")
        self.details.setTextFormat(Qt.TextFormat.RichText)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._show_details()
        self.note = QLabel(wordWrap=True)
        self.note.hide()
        self.note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copy_button = buttons.addButton("Copy details", QDialogButtonBox.ButtonRole.ActionRole)
        self.log_button = buttons.addButton(
            "Open log folder", QDialogButtonBox.ButtonRole.ActionRole
        )
        self.log_button.setEnabled(log_file is not None)
        self.copy_button.clicked.connect(self.copy_details)
        self.log_button.clicked.connect(self.open_log_folder)
        buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(self.details)
        layout.addWidget(self.note)
        layout.addWidget(buttons)

    def follow_device(self, device: DeviceInUse, engine_started: SignalInstance) -> None:
        """Show the device once ``engine_started`` fires (connected after
        :meth:`DeviceInUse.engine_started`, so it can be told then)."""
        self._device = device
        engine_started.connect(self._show_device)

    @Slot()
    def _show_device(self) -> None:
        if self._device is not None:
            self.info = self.info.with_row("Device", self._device.text())
            self._show_details()

    def _show_details(self) -> None:
        rows = "".join(
            f"<tr><td><b>{html.escape(label)}</b>&nbsp;&nbsp;</td>"
            f"<td>{html.escape(value)}</td></tr>"
            for label, value in self.info.rows
        )
        self.details.setText(f"<table>{rows}</table>")

    def copy_details(self) -> None:
        """Put the details on the clipboard as plain text."""
        QGuiApplication.clipboard().setText(self.info.as_text())
        self.copy_button.setText("Copied")

    def open_log_folder(self) -> bool:
        """Show the log folder in the file manager (or, without one, copy its path)."""
        if self.log_file is None:
            return False
        problem = show_folder(self.log_file.parent)
        if problem is not None:
            self.note.setText(problem)
            self.note.show()
        return problem is None
