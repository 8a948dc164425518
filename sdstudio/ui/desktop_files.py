"""The desktop's file manager and trash: showing a folder, discarding an image.

Each has a way out where the desktop offers none: a folder's path goes on the
clipboard, and an image that cannot go to the trash is deleted only when the
user agrees to lose it for good."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QFile, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QMessageBox, QWidget

from sdstudio.engine import trash

log = logging.getLogger(__name__)


def show_folder(folder: Path) -> str | None:
    """Open ``folder`` in the file manager.

    Where none opens (no file manager registered for folders, as on a bare
    window manager), the folder's path is put on the clipboard and the message
    to show the user is returned; None when the file manager was asked.
    """
    try:
        opened = QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))
    except (OSError, RuntimeError) as error:
        log.warning("Opening %s failed: %s", folder, error)
        opened = False
    if opened:
        return None
    QGuiApplication.clipboard().setText(str(folder))
    return f"Could not open a file manager; the folder path was copied: {folder}"


def trash_problem(path: str) -> str | None:
    """Why a file could not go to the trash, found before anything is moved; None when
    it can (or, where the desktop keeps its own trash, when that is only known by trying).
    A link is never trashed (see :func:`discard_file`), so it has no problem."""
    if not trash.FREEDESKTOP or os.path.islink(path) or not os.path.lexists(path):
        return None
    try:
        trash.trash_for(path)
    except trash.TrashUnavailable as error:
        return str(error)
    return None


def discard_file(path: str, confirm_permanent: Callable[[str], bool] = lambda reason: False) -> str:
    """Move a file to the desktop's trash, where the user can get it back. Where it
    cannot go there, it is deleted for good only if ``confirm_permanent(reason)``
    says so. Returns what happened, for the status bar.

    A link is removed itself: trashing it could move the file it points to."""
    if not os.path.lexists(path):
        return "was already gone"
    link = os.path.islink(path)
    if not link:
        reason = _move_to_trash(path)
        if reason is None:
            return "was moved to the trash"
        if not confirm_permanent(reason):
            return f"was kept: it cannot be moved to the trash ({reason})"
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return "was already gone"
    except OSError as error:
        return f"could not be deleted: {error.strerror or error}"
    if link:
        return "(a link) was removed; the file it points to was kept"
    return "was deleted permanently"


def _move_to_trash(path: str) -> str | None:
    """Move a file to the trash; None when done, else why it could not be."""
    if trash.FREEDESKTOP:
        try:
            trash.move_to_trash(path)
        except trash.TrashUnavailable as error:
            return str(error)
        return None
    if QFile.moveToTrash(path):
        return None
    return "the system offers no trash for it"


def permanent_delete_box(reason: str, path: str, parent: QWidget | None = None) -> QMessageBox:
    """The question asked before deleting an image that cannot go to the trash;
    Cancel is the default answer."""
    box = QMessageBox(
        QMessageBox.Icon.Warning,
        "Delete image",
        f"This image cannot be moved to the trash ({reason}). Delete it permanently?",
        QMessageBox.StandardButton.Cancel,
        parent,
    )
    box.setInformativeText(path)
    box.addButton("Delete", QMessageBox.ButtonRole.DestructiveRole)
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    return box
