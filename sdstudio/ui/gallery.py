"""The history gallery: search, favourites and a grid of every image made, with actions."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import (
    QModelIndex,
    QPoint,
    Qt,
    QTimer,
    Signal,
    SignalInstance,
    Slot,
)
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QMenu,
    QMessageBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.history import HistoryEntry, HistoryError
from sdstudio.engine.history.library import ImageLibrary
from sdstudio.ui.canvas import load_qimage
from sdstudio.ui.desktop_files import discard_file, permanent_delete_box, show_folder, trash_problem
from sdstudio.ui.gallery_delegate import GalleryDelegate
from sdstudio.ui.gallery_model import GalleryModel
from sdstudio.ui.thumbnails import ThumbnailLoader

log = logging.getLogger(__name__)

SEARCH_DELAY_MS = 200


class GalleryPanel(QWidget):
    """Every image in the history, newest first, with search, favourites and re-run actions.

    The panel only asks; the main window decides what re-running or opening
    means by connecting the ``*_requested`` signals, each carrying the
    :class:`HistoryEntry`. Call :meth:`shutdown` before the window closes.
    """

    rerun_requested = Signal(object)
    """Re-run this entry exactly (same seed)."""
    rerun_new_seed_requested = Signal(object)
    """Run this entry's settings again with a new seed."""
    vary_requested = Signal(object)
    """Make a batch of variations of this entry (its seed with variation seeds)."""
    load_settings_requested = Signal(object)
    """Put this entry's settings into the prompt panel."""
    use_as_init_requested = Signal(object)
    """Use this entry's image as the init image of an img2img run."""
    open_requested = Signal(object)
    """Show this entry's image (double-click or Enter)."""
    compare_requested = Signal(object, object)
    control_requested = Signal(object)
    """(HistoryEntry): the user asked to guide the next image with this one (ControlNet)."""
    ip_adapter_requested = Signal(object)
    """(HistoryEntry): the user asked to use this image as an image prompt (IP-Adapter)."""
    upscale_requested = Signal(object)
    """(HistoryEntry): the user asked to upscale this image."""
    """Compare the two selected entries (older first)."""
    message = Signal(str)
    """Something to tell the user, for the status bar."""

    def __init__(
        self, library: ImageLibrary, cache_dir: Path | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("gallery")
        self.library = library
        self.confirm: Callable[[str], bool] = self._ask
        """Asks before deleting; replace it to answer without a dialog (tests, scripts)."""
        self.confirm_permanent: Callable[[str, str], bool] = self._ask_permanent
        """Asks (reason, path) before deleting an image that cannot go to the trash."""
        self.thumbnails = ThumbnailLoader(cache_dir, parent=self)
        self.model = GalleryModel(library.store, self.thumbnails, self)

        self.search = QLineEdit(placeholderText="Search prompts", clearButtonEnabled=True)
        self.favourites = QToolButton()
        self.favourites.setText("★ Favourites")
        self.favourites.setCheckable(True)
        self.favourites.setToolTip("Show only favourites")
        self.count_label = QLabel()
        self.view = QListView()
        self._setup_view()

        bar = QHBoxLayout()
        bar.addWidget(self.search, 1)
        bar.addWidget(self.favourites)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.count_label)

        self._search_timer = QTimer(self, singleShot=True, interval=SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(self._apply_query)
        self.search.textChanged.connect(self._search_timer.start)
        self.favourites.toggled.connect(self._apply_query)
        for changed in (self.model.modelReset, self.model.rowsInserted, self.model.rowsRemoved):
            changed.connect(self._update_count)
        self._make_actions()
        self._update_count()
        self._update_actions()

    def _setup_view(self) -> None:
        view = self.view
        view.setModel(self.model)
        view.setItemDelegate(GalleryDelegate(view, self.thumbnails.size))
        view.setViewMode(QListView.ViewMode.IconMode)
        view.setMovement(QListView.Movement.Static)
        view.setResizeMode(QListView.ResizeMode.Adjust)
        view.setLayoutMode(QListView.LayoutMode.Batched)
        view.setBatchSize(500)
        view.setUniformItemSizes(True)
        view.setSpacing(4)
        view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        view.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        view.setDragEnabled(True)
        view.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        view.setDefaultDropAction(Qt.DropAction.CopyAction)
        view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        view.customContextMenuRequested.connect(self._show_menu)
        view.doubleClicked.connect(lambda index: self._emit(self.open_requested, index))
        view.selectionModel().currentChanged.connect(self._update_actions)
        view.selectionModel().selectionChanged.connect(self._update_actions)

    def _make_actions(self) -> None:
        def action(text: str, slot: Callable[[], None], *keys: str) -> QAction:
            made = QAction(text, self.view)
            made.setShortcuts([QKeySequence(key) for key in keys])
            made.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            made.triggered.connect(slot)
            self.view.addAction(made)
            return made

        self.open_action = action(
            "Open", lambda: self._emit(self.open_requested), "Return", "Enter"
        )
        self.rerun_action = action("Re-run", lambda: self._emit(self.rerun_requested), "Ctrl+R")
        self.rerun_new_seed_action = action(
            "Re-run with a new seed", lambda: self._emit(self.rerun_new_seed_requested)
        )
        self.vary_action = action("Vary", lambda: self._emit(self.vary_requested))
        self.vary_action.setToolTip("Four variations of this image (variation strength 0.25)")
        self.load_settings_action = action(
            "Load settings", lambda: self._emit(self.load_settings_requested)
        )
        self.use_as_init_action = action(
            "Use as init image", lambda: self._emit(self.use_as_init_requested)
        )
        self.compare_action = action("Compare the two selected", self.compare_selected)
        self.compare_action.setToolTip("Select two images (Ctrl+click) to compare them")
        self.upscale_action = action("Upscale…", lambda: self._emit(self.upscale_requested))
        self.control_action = action(
            "Use as ControlNet image…", lambda: self._emit(self.control_requested)
        )
        self.ip_adapter_action = action(
            "Use as image prompt…", lambda: self._emit(self.ip_adapter_requested)
        )
        self.copy_action = action("Copy image", self.copy_image, "Ctrl+C")
        self.folder_action = action("Open containing folder", self.open_folder)
        self.favourite_action = action("Add to favourites", self.toggle_favourite, "F")
        self.delete_action = action("Delete…", self.delete_current, "Delete")
        self.menu_actions = [
            self.open_action,
            self.compare_action,
            self.rerun_action,
            self.rerun_new_seed_action,
            self.vary_action,
            self.load_settings_action,
            self.use_as_init_action,
            self.control_action,
            self.ip_adapter_action,
            self.upscale_action,
            None,
            self.copy_action,
            self.folder_action,
            None,
            self.favourite_action,
            self.delete_action,
        ]

    def selected_entries(self) -> list[HistoryEntry]:
        """The entries of the selected tiles, in gallery order (newest first)."""
        rows = sorted(index.row() for index in self.view.selectionModel().selectedIndexes())
        entries = (self.model.entry_at(row) for row in rows)
        return [entry for entry in entries if entry is not None]

    @Slot()
    def compare_selected(self) -> None:
        """Ask to compare the two selected images, the older one first."""
        entries = self.selected_entries()
        if len(entries) == 2:
            self.compare_requested.emit(entries[1], entries[0])

    def current_entry(self) -> HistoryEntry | None:
        """The entry of the current (selected) tile, if any."""
        index = self.view.currentIndex()
        return self.model.entry_at(index.row()) if index.isValid() else None

    def select_row(self, row: int) -> None:
        """Make ``row`` the current tile and show it."""
        index = self.model.index(row)
        self.view.setCurrentIndex(index)
        self.view.scrollTo(index)

    @Slot()
    def refresh(self) -> None:
        """Catch up with history changes made elsewhere."""
        self.model.refresh()

    @Slot(object)
    def add_entry(self, entry: HistoryEntry) -> None:
        """Show a newly generated image (connect to the controller's ``image_saved``)."""
        self.model.on_image_saved(entry)

    def shutdown(self) -> None:
        """Stop the thumbnail workers and wait for them."""
        self._search_timer.stop()
        self.thumbnails.shutdown()

    @Slot()
    def copy_image(self) -> None:
        """Put the current image on the clipboard."""
        entry = self.current_entry()
        if entry is None:
            return
        try:
            image = load_qimage(entry.path)
        except SdStudioError as error:
            self.message.emit(str(error))
            return
        QGuiApplication.clipboard().setImage(image)
        self.message.emit("Image copied")

    @Slot()
    def open_folder(self) -> None:
        """Show the current image's folder in the file manager."""
        entry = self.current_entry()
        if entry is not None:
            problem = show_folder(Path(entry.path).parent)
            if problem is not None:
                self.message.emit(problem)

    @Slot()
    def toggle_favourite(self) -> None:
        """Mark the current image as a favourite, or unmark it."""
        entry = self.current_entry()
        if entry is None:
            return
        row = self.view.currentIndex().row()
        try:
            self.model.set_favorite(row, not entry.favorite)
        except HistoryError as error:
            self.message.emit(str(error))
        self._update_actions()

    @Slot()
    def delete_current(self) -> None:
        """Move the current image to the desktop's trash, after asking; where it cannot
        go there, delete it for good only if the user agrees to that."""
        entry = self.current_entry()
        if entry is None:
            return
        path = entry.path
        reason = trash_problem(path)
        if reason is not None:
            if not self.confirm_permanent(reason, path):
                return
        elif not self.confirm(f"Move this image to the trash and out of the history?\n\n{path}"):
            return
        row = self.view.currentIndex().row()
        try:
            self.library.delete(entry.id, keep_file=True)
        except HistoryError as error:
            self.message.emit(f"Could not delete {path}: {error}")
            self.model.refresh()
            return
        agreed = reason is not None
        outcome = discard_file(path, lambda why: agreed or self.confirm_permanent(why, path))
        self.message.emit(f"{Path(path).name} {outcome}.")
        self.thumbnails.forget(path)
        self.model.remove_row(row)
        if self.model.rowCount():
            self.select_row(min(row, self.model.rowCount() - 1))

    def _emit(self, signal: SignalInstance, index: QModelIndex | None = None) -> None:
        entry = self.model.entry_at(index.row()) if index is not None else self.current_entry()
        if entry is not None:
            signal.emit(entry)

    def _ask(self, text: str) -> bool:
        answer = QMessageBox.question(self, "Delete image", text)
        return answer == QMessageBox.StandardButton.Yes

    def _ask_permanent(self, reason: str, path: str) -> bool:
        box = permanent_delete_box(reason, path, self)
        box.exec()
        return box.buttonRole(box.clickedButton()) == QMessageBox.ButtonRole.DestructiveRole

    @Slot(QPoint)
    def _show_menu(self, position: QPoint) -> None:
        index = self.view.indexAt(position)
        if not index.isValid():
            return
        selection = self.view.selectionModel()
        if selection.isSelected(index):  # keep a multiple selection (for Compare)
            selection.setCurrentIndex(index, selection.SelectionFlag.NoUpdate)
        else:
            self.view.setCurrentIndex(index)
        menu = QMenu(self)
        for action in self.menu_actions:
            if action is None:
                menu.addSeparator()
            else:
                menu.addAction(action)
        menu.exec(self.view.viewport().mapToGlobal(position))
        menu.deleteLater()

    @Slot()
    def _apply_query(self) -> None:
        self._search_timer.stop()
        query = dataclasses.replace(
            self.model.query,
            search=self.search.text().strip(),
            favorites=self.favourites.isChecked(),
        )
        self.model.set_query(query)

    @Slot()
    def _update_count(self) -> None:
        count = self.model.rowCount()
        self.count_label.setText("1 image" if count == 1 else f"{count:,} images")
        self._update_actions()

    @Slot()
    def _update_actions(self) -> None:
        entry = self.current_entry()
        for action in self.menu_actions:
            if action is not None:
                action.setEnabled(entry is not None)
        self.compare_action.setEnabled(len(self.view.selectionModel().selectedIndexes()) == 2)
        favourite = entry is not None and entry.favorite
        self.favourite_action.setText(
            "Remove from favourites" if favourite else "Add to favourites"
        )
