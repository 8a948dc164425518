"""The history gallery: paged model, background thumbnails, filters and actions (offscreen)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QObject, Qt, QUrl, Slot
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtTest import QTest

from sdstudio.engine.generation import GeneratedImage
from sdstudio.engine.history import HistoryEntry, HistoryQuery
from sdstudio.engine.history.library import ImageLibrary
from sdstudio.engine.metadata import ImageRecord
from sdstudio.engine.request import GenerationRequest
from sdstudio.ui.gallery import GalleryPanel
from sdstudio.ui.gallery_model import GalleryModel
from sdstudio.ui.thumbnails import ThumbnailLoader, make_thumbnail

PROMPTS = ["a red lighthouse at dusk", "a castle in fog", "a lighthouse in the rain", "a fox"]


def generated(prompt: str, seed: int) -> GeneratedImage:
    request = GenerationRequest(
        model="/models/dreamy", prompt=prompt, seed=seed, width=96, height=64
    )
    record = ImageRecord(
        request=request, model_name="dreamy", created=f"2026-01-01T00:00:{seed:02d}.000+00:00"
    )
    return GeneratedImage(Image.new("RGB", (96, 64), (seed * 40, 90, 200)), record)


@pytest.fixture
def library(tmp_path: Path):
    opened = ImageLibrary.open(tmp_path / "db.sqlite3", tmp_path / "outputs")
    yield opened
    opened.close()


@pytest.fixture
def saved(library: ImageLibrary) -> list[HistoryEntry]:
    return [library.save(generated(prompt, seed)) for seed, prompt in enumerate(PROMPTS)]


@pytest.fixture
def panel(qtbot, library: ImageLibrary, saved: list[HistoryEntry], tmp_path: Path):
    gallery = GalleryPanel(library, tmp_path / "thumbnails")
    qtbot.addWidget(gallery)
    gallery.resize(900, 600)
    gallery.show()
    yield gallery
    gallery.shutdown()
    assert gallery.thumbnails.pool.activeThreadCount() == 0


def ids(model: GalleryModel) -> list[int]:
    return [
        model.data(model.index(row), GalleryModel.EntryRole).id for row in range(model.rowCount())
    ]


def test_rows_are_newest_first_with_text_and_tooltip(panel, saved) -> None:
    model = panel.model
    assert ids(model) == [entry.id for entry in reversed(saved)]
    first = model.index(0)
    assert model.data(first, Qt.ItemDataRole.DisplayRole) == "a fox"
    tooltip = model.data(first, Qt.ItemDataRole.ToolTipRole)
    assert "a fox" in tooltip and "Seed 3" in tooltip and "dreamy" in tooltip
    assert "96×64" in tooltip and "2026-01-01 00:00:03" in tooltip
    assert model.entry_at(99) is None and model.row_of_id(saved[0].id) == 3
    assert panel.count_label.text() == "4 images"


def test_search_box_filters_after_a_pause(qtbot, panel, saved) -> None:
    qtbot.keyClicks(panel.search, "lighthouse")
    assert panel.model.rowCount() == 4  # debounced: nothing yet
    qtbot.waitUntil(lambda: panel.model.rowCount() == 2)
    assert ids(panel.model) == [saved[2].id, saved[0].id]
    assert panel.count_label.text() == "2 images"
    panel.search.clear()
    qtbot.waitUntil(lambda: panel.model.rowCount() == 4)


def test_favourite_toggle_and_filter(qtbot, panel, library, saved) -> None:
    panel.select_row(2)
    assert panel.favourite_action.text() == "Add to favourites"
    panel.favourite_action.trigger()
    assert library.store.get(saved[1].id).favorite
    assert panel.model.entry_at(2).favorite
    assert panel.favourite_action.text() == "Remove from favourites"
    panel.favourites.click()
    assert ids(panel.model) == [saved[1].id] and panel.count_label.text() == "1 image"
    panel.select_row(0)
    panel.favourite_action.trigger()  # unmarked: it leaves the favourites view
    assert panel.model.rowCount() == 0 and not library.store.get(saved[1].id).favorite
    panel.favourites.click()
    assert panel.model.rowCount() == 4


def test_thumbnails_arrive_off_the_gui_thread_and_are_cached_on_disk(
    qtbot, panel, tmp_path
) -> None:
    model, loader = panel.model, panel.thumbnails
    placeholder = loader.placeholder.cacheKey()

    def decoration(row: int):
        return model.data(model.index(row), Qt.ItemDataRole.DecorationRole)

    qtbot.waitUntil(lambda: all(decoration(r).cacheKey() != placeholder for r in range(4)))
    pixmap = decoration(0)
    assert pixmap.cacheKey() != loader.missing.cacheKey()
    assert (pixmap.width(), pixmap.height()) == (96, 64)  # never enlarged
    assert len(list((tmp_path / "thumbnails").glob("*.jpg"))) == 4
    assert loader.pending == 0


def test_missing_or_broken_file_gives_the_missing_placeholder(qtbot, tmp_path, saved) -> None:
    Path(saved[0].path).unlink()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    assert make_thumbnail(saved[0].path, 160) is None
    assert make_thumbnail(str(broken), 160, tmp_path / "cache") is None
    loader = ThumbnailLoader()
    try:
        for path in (saved[0].path, str(broken)):
            assert loader.pixmap(path).cacheKey() == loader.placeholder.cacheKey()
        qtbot.waitUntil(lambda: loader.pending == 0)
        for path in (saved[0].path, str(broken)):
            assert loader.pixmap(path).cacheKey() == loader.missing.cacheKey()
    finally:
        loader.shutdown()


def test_same_path_is_requested_once_and_the_cache_is_bounded(qtbot, saved) -> None:
    loader = ThumbnailLoader(capacity=2)
    arrived: list[str] = []
    loader.ready.connect(arrived.append)
    try:
        for entry in saved:
            loader.pixmap(entry.path)
            loader.pixmap(entry.path)
        assert loader.pending == 4
        qtbot.waitUntil(lambda: loader.pending == 0)
        assert sorted(arrived) == sorted(entry.path for entry in saved)
        assert sum(loader.cached(entry.path) is not None for entry in saved) == 2
    finally:
        loader.shutdown()
    assert loader.pool.activeThreadCount() == 0


def test_old_requests_are_dropped_when_scrolling_fast(qtbot, saved) -> None:
    loader = ThumbnailLoader(max_pending=2)
    arrived: list[str] = []
    loader.ready.connect(arrived.append)
    paths = [entry.path for entry in saved]
    try:
        for path in paths:
            loader.request(path)
        assert loader.pending == 2
        qtbot.waitUntil(lambda: loader.pending == 0)
        assert sorted(arrived) == sorted(paths[2:])
        assert loader.pixmap(paths[0]).cacheKey() == loader.placeholder.cacheKey()
        qtbot.waitUntil(lambda: loader.cached(paths[0]) is not None)
    finally:
        loader.shutdown()


@pytest.mark.parametrize(
    ("action", "signal"),
    [
        ("open_action", "open_requested"),
        ("rerun_action", "rerun_requested"),
        ("rerun_new_seed_action", "rerun_new_seed_requested"),
        ("load_settings_action", "load_settings_requested"),
        ("use_as_init_action", "use_as_init_requested"),
    ],
)
def test_menu_actions_emit_the_entry(qtbot, panel, saved, action: str, signal: str) -> None:
    panel.select_row(1)
    with qtbot.waitSignal(getattr(panel, signal), timeout=1000) as blocker:
        getattr(panel, action).trigger()
    assert blocker.args == [saved[2]]
    assert getattr(panel, action) in panel.menu_actions


def test_double_click_and_keys(qtbot, panel, library, saved) -> None:
    panel.select_row(0)
    with qtbot.waitSignal(panel.open_requested, timeout=1000) as blocker:
        panel.view.doubleClicked.emit(panel.model.index(0))
    assert blocker.args == [saved[3]]
    panel.view.setFocus()
    panel.activateWindow()
    qtbot.waitUntil(panel.view.hasFocus)
    with qtbot.waitSignal(panel.open_requested, timeout=1000):
        QTest.keyClick(panel.view, Qt.Key.Key_Return)
    with qtbot.waitSignal(panel.rerun_requested, timeout=1000):
        QTest.keyClick(panel.view, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    QTest.keyClick(panel.view, Qt.Key.Key_F)
    assert library.store.get(saved[3].id).favorite
    panel.confirm = lambda text: True
    QTest.keyClick(panel.view, Qt.Key.Key_Delete)
    assert panel.model.rowCount() == 3 and not Path(saved[3].path).exists()


def test_delete_asks_first(panel, library, saved) -> None:
    questions: list[str] = []
    panel.confirm = lambda text: questions.append(text) or False
    panel.select_row(1)
    panel.delete_action.trigger()
    assert panel.model.rowCount() == 4 and Path(saved[2].path).exists()
    assert saved[2].path in questions[0]
    panel.confirm = lambda text: True
    panel.delete_action.trigger()
    assert ids(panel.model) == [saved[3].id, saved[1].id, saved[0].id]
    assert not Path(saved[2].path).exists() and library.store.count() == 3
    assert panel.count_label.text() == "3 images"
    assert panel.current_entry() == saved[1]  # the next image is selected
    # It went to the desktop's trash (here, the test's XDG data folder), not into the void.
    trash = Path(os.environ["XDG_DATA_HOME"]) / "Trash" / "files" / Path(saved[2].path).name
    assert trash.is_file()


def test_discarding_without_a_trash_asks_before_deleting(tmp_path: Path, monkeypatch) -> None:
    from sdstudio.engine import trash
    from sdstudio.ui.gallery import discard_file

    def no_trash(path, now=None):
        raise trash.TrashUnavailable("the drive is read-only")

    monkeypatch.setattr(trash, "move_to_trash", no_trash)
    monkeypatch.setattr(trash, "FREEDESKTOP", True)
    file = tmp_path / "image.png"
    file.write_bytes(b"x")
    assert discard_file(str(file)).startswith("was kept") and file.exists()
    assert discard_file(str(file), lambda reason: True) == "was deleted permanently"
    assert not file.exists()
    assert discard_file(str(file)) == "was already gone"


def test_copy_image_and_open_folder(qtbot, panel, saved) -> None:
    panel.select_row(0)
    panel.copy_action.trigger()
    image = QGuiApplication.clipboard().image()
    assert (image.width(), image.height()) == (96, 64)

    class Handler(QObject):
        def __init__(self) -> None:
            super().__init__()
            self.urls: list[QUrl] = []

        @Slot(QUrl)
        def handle(self, url: QUrl) -> None:
            self.urls.append(url)

    handler = Handler()
    QDesktopServices.setUrlHandler("file", handler, "handle")
    try:
        panel.folder_action.trigger()
    finally:
        QDesktopServices.unsetUrlHandler("file")
    assert handler.urls == [QUrl.fromLocalFile(str(Path(saved[3].path).parent))]


def test_open_folder_without_a_file_manager_copies_the_path(panel, saved, monkeypatch) -> None:
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: False))
    messages: list[str] = []
    panel.message.connect(messages.append)
    QGuiApplication.clipboard().setText("")
    panel.select_row(0)
    panel.folder_action.trigger()
    folder = str(Path(saved[3].path).parent)
    assert messages == [f"Could not open a file manager; the folder path was copied: {folder}"]
    assert QGuiApplication.clipboard().text() == folder


def test_drag_carries_the_file_url(panel, saved) -> None:
    model = panel.model
    index = model.index(2)
    assert model.flags(index) & Qt.ItemFlag.ItemIsDragEnabled
    mime = model.mimeData([index])
    assert mime.urls() == [QUrl.fromLocalFile(saved[1].path)]
    assert model.mimeTypes() == ["text/uri-list"]


def test_new_images_appear_at_once(qtbot, panel, library, saved) -> None:
    entry = library.save(generated("a new owl", 30))
    with qtbot.waitSignal(panel.model.rowsInserted, timeout=1000):
        panel.add_entry(entry)
    assert panel.model.entry_at(0) == entry and panel.count_label.text() == "5 images"
    panel.model.set_query(HistoryQuery(search="castle"))
    panel.add_entry(library.save(generated("another owl", 31)))
    assert ids(panel.model) == [saved[1].id]
    castle = library.save(generated("a castle by night", 32))
    panel.add_entry(castle)
    assert ids(panel.model) == [castle.id, saved[1].id]


def test_refresh_catches_changes_made_elsewhere(panel, library, saved) -> None:
    model = panel.model
    assert not model.entry_at(0).favorite
    library.store.set_favorite(saved[3].id, True)
    changed: list[int] = []
    model.dataChanged.connect(lambda top, bottom, roles=(): changed.append(top.row()))
    panel.refresh()
    assert model.entry_at(0).favorite and changed == [0]
    library.delete(saved[0].id)
    panel.refresh()
    assert ids(model) == [saved[3].id, saved[2].id, saved[1].id]


@pytest.mark.slow
def test_a_large_history_is_paged_not_loaded(qtbot, tmp_path) -> None:
    rows = 20_000
    library = ImageLibrary.open(tmp_path / "big.sqlite3", tmp_path / "big-outputs")
    base = GenerationRequest(model="/models/big", prompt="", width=64, height=64)
    library.store.add_many(
        (
            tmp_path / "big-outputs" / f"{i:06d}.png",
            ImageRecord(
                request=dataclasses.replace(base, prompt=f"image {i}", seed=i),
                model_name="big",
                created=f"2026-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}+00:00",
            ),
            "sdstudio",
        )
        for i in range(rows)
    )
    calls: list[tuple[int, int]] = []
    page = library.store.page

    def counted_page(query=None, *, offset=0, limit=100):
        calls.append((offset, limit))
        return page(query, offset=offset, limit=limit)

    library.store.page = counted_page  # type: ignore[method-assign]
    gallery = GalleryPanel(library, tmp_path / "big-thumbnails")
    qtbot.addWidget(gallery)
    try:
        gallery.resize(900, 600)
        gallery.show()
        model = gallery.model
        assert model.rowCount() == rows and gallery.count_label.text() == "20,000 images"
        for row in (rows - 1, rows - 2, rows // 2, 0):
            assert model.entry_at(row).seed == rows - 1 - row
        assert model.data(model.index(rows - 1), Qt.ItemDataRole.DisplayRole) == "image 0"
        gallery.select_row(rows - 1)
        qtbot.waitUntil(lambda: gallery.thumbnails.pending == 0)
        assert sum(limit for _offset, limit in calls) <= 20 * 200
    finally:
        gallery.shutdown()
        library.close()


def test_qt_calls_keep_their_references_to_none_and_false() -> None:
    """PySide6 6.12.0 on Python 3.11 drops one per call and soon aborts the app."""
    probe = QObject()
    nones, falses = sys.getrefcount(None), sys.getrefcount(False)
    for _ in range(1000):
        probe.setObjectName("probe")
        probe.signalsBlocked()
    assert sys.getrefcount(None) >= nones - 10
    assert sys.getrefcount(False) >= falses - 10


def test_scroll_benchmark_still_runs(qapp, capsys) -> None:
    script = Path(__file__).parents[1] / "benchmarks" / "gallery_scroll.py"
    spec = importlib.util.spec_from_file_location("gallery_scroll", script)
    assert spec is not None and spec.loader is not None
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    assert benchmark.main(["--rows", "300", "--steps", "4", "--images", "2"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["rows"] == 300 and figures["scroll_steps"] == 4 and figures["last_row_shown"]
    assert figures["thumbnail_cold_ms"] > 0


def test_two_selected_images_can_be_compared(qtbot, panel, saved) -> None:
    from PySide6.QtCore import QItemSelectionModel

    selection = panel.view.selectionModel()
    panel.select_row(0)
    assert not panel.compare_action.isEnabled()  # one image: nothing to compare
    selection.select(panel.model.index(2), QItemSelectionModel.SelectionFlag.Select)
    assert panel.compare_action.isEnabled()
    with qtbot.waitSignal(panel.compare_requested) as asked:
        panel.compare_action.trigger()
    assert [entry.id for entry in asked.args] == [saved[1].id, saved[3].id]  # older first
    selection.select(panel.model.index(3), QItemSelectionModel.SelectionFlag.Select)
    assert not panel.compare_action.isEnabled()  # three: which two?


def test_compare_window_wipes_between_the_images_and_lists_differences(qtbot, saved) -> None:
    from sdstudio.ui.compare import CompareDialog

    red, blue = Image.new("RGB", (96, 64), (255, 0, 0)), Image.new("RGB", (96, 64), (0, 0, 255))
    dialog = CompareDialog((saved[0], red), (saved[1], blue))
    qtbot.addWidget(dialog)
    dialog.show()
    view = dialog.view
    view.resize(400, 200)
    view.set_split(0.5)
    shot = view.grab().toImage()
    y = shot.height() // 2
    assert shot.pixelColor(int(shot.width() * 0.3), y).red() > 200  # A on the left
    assert shot.pixelColor(int(shot.width() * 0.7), y).blue() > 200  # B on the right
    view.set_split(1.0)
    assert view.grab().toImage().pixelColor(int(shot.width() * 0.7), y).red() > 200
    dialog.side_by_side.setChecked(True)
    shot = view.grab().toImage()
    assert shot.pixelColor(shot.width() // 4, y).red() > 200
    assert shot.pixelColor(shot.width() * 3 // 4, y).blue() > 200
    rows = {
        dialog.table.topLevelItem(i).text(0): dialog.table.topLevelItem(i).text(2)
        for i in range(dialog.table.topLevelItemCount())
    }
    assert rows == {"prompt": PROMPTS[1], "seed": "1"}


def test_request_differences() -> None:
    from sdstudio.engine.request import differences

    a = GenerationRequest(model="m", prompt="a cat", seed=1)
    assert differences(a, a) == []
    assert differences(a, a.replace(seed=2, steps=30)) == [("steps", 20, 30), ("seed", 1, 2)]
