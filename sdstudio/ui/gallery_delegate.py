"""How one gallery tile is drawn: the thumbnail, a line of prompt, a star for favourites."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QWidget,
)

from sdstudio.engine.history import HistoryEntry
from sdstudio.ui.gallery_model import ENTRY_ROLE
from sdstudio.ui.thumbnails import THUMBNAIL_SIZE

PADDING = 6
STAR_COLOR = QColor(255, 196, 0)


class GalleryDelegate(QStyledItemDelegate):
    """Paints a tile; every tile has the same size, so the view never measures rows."""

    def __init__(self, view: QWidget | None = None, thumbnail_size: int = THUMBNAIL_SIZE) -> None:
        super().__init__(view)
        self._view = view
        self.thumbnail_size = thumbnail_size

    def sizeHint(
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> QSize:
        side = self.thumbnail_size + 2 * PADDING
        return QSize(side, side + option.fontMetrics.height() + PADDING)

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        painter.save()
        widget = self._view
        style = widget.style() if widget is not None else QApplication.style()
        style.drawPrimitive(QStyle.PrimitiveElement.PE_PanelItemViewItem, option, painter, widget)
        rect = option.rect
        size = self.thumbnail_size
        image_area = QRect(rect.x() + PADDING, rect.y() + PADDING, size, size)
        pixmap = index.data(Qt.ItemDataRole.DecorationRole)
        if isinstance(pixmap, QPixmap) and not pixmap.isNull():
            scaled = pixmap.size().scaled(image_area.size(), Qt.AspectRatioMode.KeepAspectRatio)
            target = QRect(0, 0, scaled.width(), scaled.height())
            target.moveCenter(image_area.center())
            painter.drawPixmap(target, pixmap)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        text_rect = QRect(
            rect.x() + PADDING,
            image_area.bottom() + PADDING // 2,
            size,
            option.fontMetrics.height(),
        )
        text = option.fontMetrics.elidedText(
            str(index.data(Qt.ItemDataRole.DisplayRole) or ""), Qt.TextElideMode.ElideRight, size
        )
        role = (
            option.palette.ColorRole.HighlightedText if selected else option.palette.ColorRole.Text
        )
        painter.setPen(option.palette.color(role))
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignCenter, text)
        entry = index.data(ENTRY_ROLE)
        if isinstance(entry, HistoryEntry) and entry.favorite:
            self._draw_star(painter, image_area)
        painter.restore()

    def _draw_star(self, painter: QPainter, area: QRect) -> None:
        font = QFont(painter.font())
        font.setPixelSize(max(12, self.thumbnail_size // 8))
        painter.setFont(font)
        badge = QRect(
            area.right() - font.pixelSize() - 4,
            area.top() + 2,
            font.pixelSize() + 4,
            font.pixelSize() + 4,
        )
        painter.setPen(QColor(0, 0, 0, 160))
        painter.drawText(badge.translated(1, 1), Qt.AlignmentFlag.AlignCenter, "★")
        painter.setPen(STAR_COLOR)
        painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, "★")
