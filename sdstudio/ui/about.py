"""Help ▸ About: versions, device and where the data and logs are, ready to paste into a report."""

from __future__ import annotations

import html
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import PySide6
from PySide6.QtCore import Qt, QUrl, qVersion
from PySide6.QtGui import QDesktopServices, QGuiApplication
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

LIBRARIES = ("torch", "diffusers", "transformers")


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

        rows = "".join(
            f"<tr><td><b>{html.escape(label)}</b>&nbsp;&nbsp;</td>"
            f"<td>{html.escape(value)}</td></tr>"
            for label, value in info.rows
        )
        self.details = QLabel(f"<table>{rows}</table>")
        self.details.setObjectName("aboutDetails")
        self.details.setTextFormat(Qt.TextFormat.RichText)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

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
        layout.addWidget(buttons)

    def copy_details(self) -> None:
        """Put the details on the clipboard as plain text."""
        QGuiApplication.clipboard().setText(self.info.as_text())
        self.copy_button.setText("Copied")

    def open_log_folder(self) -> bool:
        """Show the log folder in the file manager."""
        if self.log_file is None:
            return False
        return QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.log_file.parent)))
