"""A dataset's captions, one image at a time: the ``.txt`` beside each image, edited and
written back whole (never half-written if the disk fills)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QIcon, QImageReader, QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.fileio import write_atomically
from sdstudio.ui.dataset_scan import DatasetSummary

THUMBNAIL = 96
PATH_ROLE = Qt.ItemDataRole.UserRole
THUMBNAILS_PER_TICK = 6
"""Thumbnails read per turn of the event loop, so that a large folder stays responsive."""


def caption_file(image: Path) -> Path:
    """Where an image's caption is written: the same name with ``.txt`` (kohya's)."""
    return image.with_suffix(".txt")


def read_caption_text(image: Path) -> str:
    """The caption as written (``.txt``, else ``.caption``), empty when there is none."""
    for suffix in (".txt", ".caption"):
        file = image.with_suffix(suffix)
        if file.is_file():
            return file.read_text("utf-8", errors="replace")
    return ""


class CaptionEditor(QDialog):
    """The dataset's images, with their captions editable; unreadable files are listed
    with the reason and cannot be selected. A changed caption is saved when another
    image is chosen and when the editor closes (the ``.caption`` file some tools
    write is read when there is no ``.txt``; the ``.txt`` written then takes over)."""

    def __init__(self, summary: DatasetSummary, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Captions — {Path(summary.folder).name}")
        self.resize(820, 560)
        self.images = QListWidget()
        self.images.setViewMode(QListView.ViewMode.ListMode)
        self.images.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.images.setWordWrap(True)
        self.images.setSpacing(2)
        self.images.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.images.setMinimumWidth(300)
        self.caption = QPlainTextEdit(placeholderText="Tags or a sentence describing the image")
        self.caption.setEnabled(False)
        self.status = QLabel(wordWrap=True)
        self.current: Path | None = None
        self._loaded = ""
        """The shown caption as read (or last saved): saving writes only a change."""
        self.last_error = ""
        self._waiting: list[QListWidgetItem] = []
        for path in summary.images:
            item = QListWidgetItem(path.name)
            item.setData(PATH_ROLE, str(path))
            item.setToolTip(str(path))
            item.setSizeHint(QSize(THUMBNAIL, THUMBNAIL + 6))
            self.images.addItem(item)
            self._waiting.append(item)
        for reason in summary.skipped:
            item = QListWidgetItem(QIcon.fromTheme("dialog-warning"), reason)
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            item.setToolTip(reason)
            item.setSizeHint(QSize(THUMBNAIL, 4 * self.fontMetrics().height()))
            self.images.addItem(item)
        self.images.currentItemChanged.connect(self._on_current)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        right = QVBoxLayout()
        right.addWidget(QLabel("Caption (saved to the image's .txt file)"))
        right.addWidget(self.caption, 1)
        right.addWidget(self.status)
        right.addWidget(buttons)
        layout = QHBoxLayout(self)
        layout.addWidget(self.images, 2)
        layout.addLayout(right, 3)
        self._thumbnails = QTimer(self, interval=0)
        self._thumbnails.timeout.connect(self._load_some_thumbnails)
        self._thumbnails.start()
        if summary.images:
            self.images.setCurrentRow(0)

    def select(self, image: Path) -> bool:
        """Show ``image``'s caption (saving the one shown first)."""
        for row in range(self.images.count()):
            if self.images.item(row).data(PATH_ROLE) == str(image):
                self.images.setCurrentRow(row)
                return True
        return False

    def save(self) -> bool:
        """Write the caption shown, if it changed; a failure is shown, not raised."""
        text = self.caption.toPlainText().strip()
        if self.current is None or text == self._loaded:
            return True
        file = caption_file(self.current)
        try:
            write_atomically(file, (text + "\n").encode("utf-8") if text else b"")
        except SdStudioError as error:
            self.last_error = f"The caption was not saved: {error}"
            self.status.setText(self.last_error)
            return False
        self._loaded = text
        self.status.setText(f"Saved {file.name}")
        return True

    def closeEvent(self, event: QCloseEvent) -> None:
        self._thumbnails.stop()
        self.save()
        super().closeEvent(event)

    def _on_current(self, item: QListWidgetItem | None, _previous: object) -> None:
        self.save()
        path = item.data(PATH_ROLE) if item is not None else None
        if not path:
            self.current = None
            self.caption.clear()
            self.caption.setEnabled(False)
            return
        self.current = Path(path)
        try:
            text = read_caption_text(self.current)
        except OSError as error:
            text = ""
            self.status.setText(f"The caption could not be read: {error}")
        else:
            self.status.setText("" if text else "No caption yet: one will be written.")
        self._loaded = text.strip()
        self.caption.setPlainText(self._loaded)
        self.caption.setEnabled(True)

    def _load_some_thumbnails(self) -> None:
        for _ in range(THUMBNAILS_PER_TICK):
            if not self._waiting:
                self._thumbnails.stop()
                return
            item = self._waiting.pop(0)
            reader = QImageReader(str(item.data(PATH_ROLE)))
            reader.setAutoTransform(True)
            size = reader.size()
            if size.isValid():
                reader.setScaledSize(
                    size.scaled(THUMBNAIL, THUMBNAIL, Qt.AspectRatioMode.KeepAspectRatio)
                )
            image = reader.read()
            if not image.isNull():
                item.setIcon(QIcon(QPixmap.fromImage(image)))
