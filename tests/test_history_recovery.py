"""Opening the history when something is wrong: only real damage is rebuilt, the rest is told.

A locked, full, read-only or failing database is left exactly as it was (with
its favourites); a damaged one is moved aside and rebuilt; a missing or empty
one is filled from the images; a lost search index is put back.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from sdstudio.engine.generation import GeneratedImage
from sdstudio.engine.history import (
    HistoryError,
    HistoryQuery,
    HistoryStore,
    HistoryUnavailable,
)
from sdstudio.engine.history import store as store_module
from sdstudio.engine.history.library import MEMORY, ImageLibrary
from sdstudio.engine.metadata import ImageRecord
from sdstudio.engine.request import GenerationRequest

_connect = sqlite3.connect


def result(prompt: str, seed: int) -> GeneratedImage:
    """A small generated image with its record."""
    request = GenerationRequest(
        model="/models/dreamy", prompt=prompt, seed=seed, width=64, height=64
    )
    record = ImageRecord(
        request=request, model_name="dreamy", created=f"2026-01-01T00:00:{seed:02d}"
    )
    return GeneratedImage(Image.new("RGB", (64, 64), (seed, 0, 0)), record)


def make_library(tmp_path: Path, count: int = 3) -> tuple[Path, Path]:
    """A closed library of ``count`` images, the first a favourite; (database, outputs)."""
    database, outputs = tmp_path / "data" / "history.sqlite3", tmp_path / "outputs"
    library = ImageLibrary.open(database, outputs)
    saved = [library.save(result(f"picture {i}", i)) for i in range(count)]
    library.store.set_favorite(saved[0].id, True)
    library.close()
    return database, outputs


def fingerprint(database: Path) -> dict[str, str]:
    """Every file in the database's folder, with a digest of its bytes."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(database.parent.iterdir())
    }


def assert_intact(database: Path, outputs: Path, count: int = 3) -> None:
    """The database opens again with every image and the favourite."""
    with ImageLibrary.open(database, outputs).store as store:
        assert store.count() == count
        assert store.count(HistoryQuery(favorites=True)) == 1


def failing_connect(message: str, database: Path) -> Callable[..., sqlite3.Connection]:
    """``sqlite3.connect`` whose connections to ``database`` fail every statement."""

    class Failing(sqlite3.Connection):
        def execute(self, *args: object, **kwargs: object) -> sqlite3.Cursor:
            raise sqlite3.OperationalError(message)

    def connect(path: Path, *args: object, **kwargs: object) -> sqlite3.Connection:
        if Path(path) == database:
            kwargs["factory"] = Failing
        return _connect(path, *args, **kwargs)  # type: ignore[arg-type]

    return connect


def test_a_locked_database_is_reported_and_left_untouched(tmp_path, monkeypatch) -> None:
    database, outputs = make_library(tmp_path)
    before = fingerprint(database)
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.2)
    holder = _connect(database, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("SELECT count(*) FROM images").fetchall()
        with pytest.raises(HistoryUnavailable, match=r"in use by another program.*0\.2 s"):
            ImageLibrary.open(database, outputs)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert fingerprint(database) == before
    assert_intact(database, outputs)


def test_a_write_waiting_on_a_lock_is_a_clear_error(tmp_path, monkeypatch) -> None:
    database, outputs = make_library(tmp_path)
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.1)
    library = ImageLibrary.open(database, outputs)
    holder = _connect(database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(HistoryUnavailable, match="in use by another program"):
            library.store.set_favorite(library.store.page()[0].id, True)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        library.close()
    assert_intact(database, outputs)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("database or disk is full", "is full"),
        ("attempt to write a readonly database", "cannot be written"),
        ("disk I/O error", "disk I/O error"),
        ("unable to open database file", "cannot be opened"),
        ("database is locked", "in use by another program"),
    ],
)
def test_a_healthy_database_is_never_moved_aside(tmp_path, monkeypatch, message, expected) -> None:
    database, outputs = make_library(tmp_path)
    before = fingerprint(database)
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.05)
    monkeypatch.setattr(sqlite3, "connect", failing_connect(message, database))
    with pytest.raises(HistoryUnavailable, match=expected) as raised:
        ImageLibrary.open(database, outputs, check_integrity=True)
    assert "left untouched" in str(raised.value)
    monkeypatch.undo()
    assert fingerprint(database) == before
    assert_intact(database, outputs)


def test_a_full_disk_while_saving_keeps_the_history(tmp_path, monkeypatch) -> None:
    database, outputs = make_library(tmp_path)

    def small_disk(*args: object, **kwargs: object) -> sqlite3.Connection:
        connection = _connect(*args, **kwargs)  # type: ignore[arg-type]
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {pages}")
        return connection

    monkeypatch.setattr(sqlite3, "connect", small_disk)
    library = ImageLibrary.open(database, outputs)
    with pytest.raises(HistoryUnavailable, match="is full"):
        library.save(result("a long prompt " * 2000, 7))
    library.close()
    monkeypatch.undo()
    assert_intact(database, outputs)
    assert len(list(outputs.rglob("*.png"))) == 4  # the image itself was saved
    assert not list(database.parent.glob("*.corrupt-*"))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_a_read_only_folder_is_reported_and_left_untouched(tmp_path) -> None:
    database, outputs = make_library(tmp_path)
    before = fingerprint(database)
    database.parent.chmod(0o555)
    try:
        with pytest.raises(HistoryUnavailable):
            ImageLibrary.open(database, outputs, check_integrity=True)
    finally:
        database.parent.chmod(0o755)
    assert fingerprint(database) == before
    assert_intact(database, outputs)


def test_the_app_keeps_working_without_a_history_it_cannot_open(paths, monkeypatch) -> None:
    from sdstudio.app import open_library
    from sdstudio.engine.settings import Settings

    database, _outputs = make_library(paths.outputs_dir.parent / "seed")
    paths.data_dir.mkdir(parents=True)
    os.replace(database, paths.history_db)
    monkeypatch.setattr(
        sqlite3, "connect", failing_connect("database or disk is full", paths.history_db)
    )
    notices: list[str] = []
    library = open_library(paths, Settings(), notices.append)
    monkeypatch.undo()
    try:
        assert library.store.path == MEMORY
        entry = library.save(result("made while the history was away", 9))
        assert Path(entry.path).is_file()
    finally:
        library.close()
    assert len(notices) == 1 and "is full" in notices[0]
    assert "keeps working without its history" in notices[0]
    assert not list(paths.data_dir.glob("*.corrupt-*"))


def test_a_damaged_database_is_moved_aside_and_rebuilt(tmp_path) -> None:
    database, outputs = make_library(tmp_path)
    data = bytearray(database.read_bytes())
    page = 4096
    assert len(data) > 3 * page
    data[page:] = b"\xa5" * (len(data) - page)  # every page but the header page
    database.write_bytes(bytes(data))
    notices: list[str] = []
    library = ImageLibrary.open(database, outputs, on_notice=notices.append, check_integrity=True)
    try:
        assert library.store.count() == 3
    finally:
        library.close()
    assert len(notices) == 1 and "3 images restored" in notices[0]
    assert len(list(database.parent.glob("history.sqlite3.corrupt-*"))) == 1


def test_a_failed_quick_check_counts_as_damage(tmp_path, monkeypatch) -> None:
    database, outputs = make_library(tmp_path)
    monkeypatch.setattr(HistoryStore, "quick_check", lambda self: "row 7 missing from index")
    ImageLibrary.open(database, outputs).close()  # the check runs only when asked for
    assert not list(database.parent.glob("*.corrupt-*"))
    notices: list[str] = []
    library = ImageLibrary.open(database, outputs, on_notice=notices.append, check_integrity=True)
    try:
        assert library.store.count() == 3
    finally:
        library.close()
    assert "row 7 missing from index" in notices[0] and "3 images restored" in notices[0]
    assert len(list(database.parent.glob("*.corrupt-*"))) == 1


@pytest.mark.parametrize("how", ["deleted", "empty"])
def test_a_missing_or_empty_database_is_rebuilt_from_the_outputs(tmp_path, how) -> None:
    database, outputs = make_library(tmp_path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    if how == "empty":
        database.write_bytes(b"")
    notices: list[str] = []
    library = ImageLibrary.open(database, outputs, on_notice=notices.append)
    try:
        assert sorted(e.prompt for e in library.store.page()) == [f"picture {i}" for i in range(3)]
    finally:
        library.close()
    assert len(notices) == 1 and "missing or empty" in notices[0] and "3 images" in notices[0]


def test_a_first_start_says_nothing(tmp_path) -> None:
    notices: list[str] = []
    ImageLibrary.open(tmp_path / "db.sqlite3", tmp_path / "outputs", on_notice=notices.append)
    assert notices == []


@pytest.mark.parametrize(
    "drop",
    [
        ["DROP TABLE images_text"],
        ["DROP TABLE images_text_data"],
        ["DROP TRIGGER images_text_insert", "DROP INDEX images_by_time"],
    ],
)
def test_a_lost_search_index_is_rebuilt_at_open(tmp_path, drop) -> None:
    database, outputs = make_library(tmp_path)
    with _connect(database) as db:
        for statement in drop:
            db.execute(statement)
    db.close()
    notices: list[str] = []
    library = ImageLibrary.open(database, outputs, on_notice=notices.append)
    try:
        assert library.store.count(HistoryQuery(search="picture")) == 3
        library.save(result("a lighthouse", 5))
        assert [e.seed for e in library.store.page(HistoryQuery(search="lighthouse"))] == [5]
        assert library.store.integrity_check() == "ok"
    finally:
        library.close()
    assert len(notices) == 1 and "repaired" in notices[0]


@pytest.mark.parametrize("table", ["images_text", "images_text_data"])
def test_a_search_index_dropped_while_open_is_rebuilt(tmp_path, table) -> None:
    database, outputs = make_library(tmp_path)
    library = ImageLibrary.open(database, outputs)
    try:
        assert library.store.count(HistoryQuery(search="picture")) == 3
        other = _connect(database, isolation_level=None)
        other.execute(f"DROP TABLE {table}")
        other.close()
        assert library.store.count(HistoryQuery(search="picture")) == 3
        assert [e.seed for e in library.store.page(HistoryQuery(search="picture 1"))] == [1]
        assert library.store.integrity_check() == "ok"
    finally:
        library.close()


def test_a_database_without_its_images_table_is_rebuilt(tmp_path) -> None:
    database, outputs = make_library(tmp_path)
    with _connect(database) as db:
        db.execute("DROP TABLE images")
    db.close()
    notices: list[str] = []
    library = ImageLibrary.open(database, outputs, on_notice=notices.append)
    try:
        assert library.store.count() == 3
    finally:
        library.close()
    assert "lost its table of images" in notices[0] and "3 images restored" in notices[0]


def test_ids_and_pages_beyond_sqlite_integers_are_no_error(tmp_path) -> None:
    with HistoryStore(tmp_path / "db.sqlite3") as store:
        store.add(tmp_path / "a.png", result("a cat", 1).record)
        huge = 10**20
        for call in (store.get, store.delete, lambda i: store.set_favorite(i, True)):
            with pytest.raises(HistoryError, match=f"No image with id {huge}"):
                call(huge)
        assert len(store.page(limit=huge)) == 1
        assert store.page(offset=huge) == []
