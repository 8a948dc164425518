"""The gallery's list model: history entries, newest first, paged in from the history store.

The row count is one cached ``count`` query; rows are read a page at a time
when the view asks for them, and only a few pages are kept, so a history of
100,000 images costs no more to show than one of a hundred.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QMimeData,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    QUrl,
    Slot,
)

from sdstudio.engine.history import HistoryEntry, HistoryQuery, HistoryStore
from sdstudio.ui.thumbnails import ThumbnailLoader

PAGE_SIZE = 200
MAX_PAGES = 8
DISPLAY_CHARS = 40
_MAX_WAITING = 2 * PAGE_SIZE
ENTRY_ROLE = Qt.ItemDataRole.UserRole + 1

_Index = QModelIndex | QPersistentModelIndex


class GalleryModel(QAbstractListModel):
    """History entries matching a :class:`HistoryQuery`, newest first, read lazily in pages."""

    EntryRole = ENTRY_ROLE
    """The role whose data is the row's :class:`HistoryEntry`."""

    def __init__(
        self, store: HistoryStore, thumbnails: ThumbnailLoader, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.store = store
        self.thumbnails = thumbnails
        self._query = HistoryQuery()
        self._count = store.count(self._query)
        self._pages: OrderedDict[int, list[HistoryEntry]] = OrderedDict()
        self._waiting: dict[str, int] = {}
        thumbnails.ready.connect(self._on_thumbnail)

    @property
    def query(self) -> HistoryQuery:
        """The query the model shows."""
        return self._query

    def set_query(self, query: HistoryQuery) -> None:
        """Show the entries matching ``query`` instead (resets the model)."""
        if query == self._query:
            return
        self.beginResetModel()
        self._query = query
        self._reload()
        self.endResetModel()

    def refresh(self) -> None:
        """Catch up with changes made elsewhere (the CLI, another window).

        Costs a count and a one-row page. The model resets only if rows came or
        went; otherwise the few pages in memory (at most ``MAX_PAGES``) are
        re-read and only rows that differ (a favourite mark, say) are signalled.
        """
        self._sync(self.store.count(self._query), self.store.page(self._query, limit=1))

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else self._count

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or role not in _ROLES:
            return None
        entry = self.entry_at(index.row())
        if entry is None:
            return None
        if role == ENTRY_ROLE:
            return entry
        if role == Qt.ItemDataRole.DisplayRole:
            prompt = " ".join(caption(entry).split())
            return prompt if len(prompt) <= DISPLAY_CHARS else prompt[: DISPLAY_CHARS - 1] + "…"
        if role == Qt.ItemDataRole.ToolTipRole:
            return tooltip(entry)
        pixmap = self.thumbnails.cached(entry.path)
        if pixmap is None:
            if len(self._waiting) > _MAX_WAITING:
                self._waiting.clear()  # rows of dropped requests; _on_thumbnail copes
            self._waiting[entry.path] = index.row()
            pixmap = self.thumbnails.pixmap(entry.path)
        return pixmap

    def flags(self, index: _Index) -> Qt.ItemFlag:
        base = super().flags(index)
        return base | Qt.ItemFlag.ItemIsDragEnabled if index.isValid() else base

    def mimeTypes(self) -> list[str]:
        return ["text/uri-list"]

    def mimeData(self, indexes: Sequence[QModelIndex]) -> QMimeData:
        """The file URLs of the dragged images, for dropping on the canvas or elsewhere."""
        mime = QMimeData()
        entries = [self.entry_at(index.row()) for index in indexes if index.isValid()]
        mime.setUrls([QUrl.fromLocalFile(entry.path) for entry in entries if entry is not None])
        return mime

    def supportedDragActions(self) -> Qt.DropAction:
        return Qt.DropAction.CopyAction

    def entry_at(self, row: int) -> HistoryEntry | None:
        """The entry shown in ``row`` (read from the store with its page if need be)."""
        if not 0 <= row < self._count:
            return None
        number, offset = divmod(row, PAGE_SIZE)
        page = self._pages.get(number)
        if page is None:
            page = self.store.page(self._query, offset=number * PAGE_SIZE, limit=PAGE_SIZE)
            self._pages[number] = page
            while len(self._pages) > MAX_PAGES:
                self._pages.popitem(last=False)
        else:
            self._pages.move_to_end(number)
        return page[offset] if offset < len(page) else None

    def row_of_id(self, entry_id: int) -> int:
        """The row of an entry among the pages in memory, or -1 (the store is not searched)."""
        for number, page in self._pages.items():
            for offset, entry in enumerate(page):
                if entry.id == entry_id:
                    return number * PAGE_SIZE + offset
        return -1

    @Slot(object)
    def on_image_saved(self, entry: HistoryEntry) -> None:
        """Show a newly saved image at once: at the top if it matches the query."""
        query = self._query
        if (query.favorites and not entry.favorite) or (
            query.model and entry.model_name != query.model
        ):
            return
        count = self.store.count(query)
        first = self.store.page(query, limit=1)
        if count != self._count + 1 or not first or first[0].id != entry.id:
            self._sync(count, first)
            return
        self.beginInsertRows(QModelIndex(), 0, 0)
        self._count = count
        self._pages.clear()
        self._waiting.clear()
        self.endInsertRows()

    def set_favorite(self, row: int, favorite: bool) -> None:
        """Mark or unmark the entry in ``row`` as a favourite, in the store and on screen."""
        entry = self.entry_at(row)
        if entry is None:
            return
        self.store.set_favorite(entry.id, favorite)
        if self._query.favorites and not favorite:
            self.remove_row(row)
            return
        number, offset = divmod(row, PAGE_SIZE)
        page = self._pages.get(number)
        if page is not None and offset < len(page):
            page[offset] = dataclasses.replace(entry, favorite=favorite)
        index = self.index(row)
        self.dataChanged.emit(index, index)

    def remove_row(self, row: int) -> None:
        """Take ``row`` off the list (after its entry was deleted or no longer matches)."""
        if not 0 <= row < self._count:
            return
        self.beginRemoveRows(QModelIndex(), row, row)
        self._count -= 1
        first_stale = row // PAGE_SIZE
        for number in [n for n in self._pages if n >= first_stale]:
            del self._pages[number]
        self._waiting.clear()
        self.endRemoveRows()

    def _reload(self, count: int | None = None) -> None:
        self._count = self.store.count(self._query) if count is None else count
        self._pages.clear()
        self._waiting.clear()

    def _sync(self, count: int, first: list[HistoryEntry]) -> None:
        known = self._pages.get(0)
        top_moved = bool(known and first and known[0].id != first[0].id)
        if count != self._count or top_moved:
            self.beginResetModel()
            self._reload(count)
            self.endResetModel()
            return
        for number, old in list(self._pages.items()):
            new = self.store.page(self._query, offset=number * PAGE_SIZE, limit=PAGE_SIZE)
            self._pages[number] = new
            for offset, (before, after) in enumerate(zip(old, new, strict=False)):
                if before != after:
                    index = self.index(number * PAGE_SIZE + offset)
                    self.dataChanged.emit(index, index)

    @Slot(str)
    def _on_thumbnail(self, path: str) -> None:
        row = self._waiting.pop(path, -1)
        number, offset = divmod(row, PAGE_SIZE)
        page = self._pages.get(number) if row >= 0 else None
        if page is None or offset >= len(page) or page[offset].path != path:
            row = self._find_path(path)
        if row >= 0:
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])

    def _find_path(self, path: str) -> int:
        for number, page in self._pages.items():
            for offset, entry in enumerate(page):
                if entry.path == path:
                    return number * PAGE_SIZE + offset
        return -1


_ROLES = frozenset(
    {
        Qt.ItemDataRole.DisplayRole,
        Qt.ItemDataRole.ToolTipRole,
        Qt.ItemDataRole.DecorationRole,
        ENTRY_ROLE,
    }
)


def caption(entry: HistoryEntry) -> str:
    """What a tile says: the prompt, or for an image upscaled alone, which upscaler made it."""
    if entry.mode == "upscale":
        return f"Upscaled with {entry.model_name}" if entry.model_name else "Upscaled"
    return entry.prompt


def tooltip(entry: HistoryEntry) -> str:
    """The hover text of an entry: prompt, seed, model, size and date."""
    if entry.mode == "upscale":
        when = entry.created[:19].replace("T", " ")
        return f"{caption(entry)}, {entry.width}×{entry.height}\n{when}"
    return (
        f"{entry.prompt}\n\nSeed {entry.seed} · {entry.model_name} · "
        f"{entry.width}×{entry.height}\n{entry.created[:19].replace('T', ' ')}"
    )
