"""The training window's strip of sample images: one icon a sample, named by its step,
enlarged in a window of its own on a click."""

from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)

SAMPLE_ICON = 112


class SampleStrip(QListWidget):
    """The run's samples, left to right as they come."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer: QDialog | None = None
        """The last sample opened large."""
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(False)
        self.setIconSize(QSize(SAMPLE_ICON, SAMPLE_ICON))
        self.setFixedHeight(SAMPLE_ICON + 48)
        self.itemClicked.connect(self.open_sample)

    def add_sample(self, path: str) -> None:
        """Show a sample image (``…step000004.png`` is labelled "step 4")."""
        pixmap = QPixmap(path)
        found = re.search(r"step0*(\d+)$", Path(path).stem)
        item = QListWidgetItem(f"step {found.group(1)}" if found else Path(path).stem)
        item.setData(Qt.ItemDataRole.UserRole, path)
        item.setToolTip(path)
        if not pixmap.isNull():
            item.setIcon(
                QIcon(pixmap.scaled(SAMPLE_ICON, SAMPLE_ICON, Qt.AspectRatioMode.KeepAspectRatio))
            )
        self.addItem(item)
        self.scrollToItem(item)

    def open_sample(self, item: QListWidgetItem) -> None:
        """Show the sample at its size (at least 512 pixels wide)."""
        path = str(item.data(Qt.ItemDataRole.UserRole) or "")
        viewer = QDialog(self)
        viewer.setWindowTitle(Path(path).name)
        viewer.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        label = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        pixmap = QPixmap(path)
        if pixmap.isNull():
            label.setText(f"{path} could not be read.")
        else:
            label.setPixmap(pixmap if pixmap.width() >= 512 else pixmap.scaledToWidth(512))
        QVBoxLayout(viewer).addWidget(label)
        viewer.show()
        self.viewer = viewer
