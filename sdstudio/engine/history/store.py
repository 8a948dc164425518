"""The history store: one SQLite row per image, searchable and paged.

WAL mode lets the app read while the CLI writes; a busy timeout makes two
writers wait for each other instead of failing. Queries page newest first and
stay fast at 100,000 rows (indexes on time, favourites and model; an FTS5
index over prompt and negative prompt). Every SQLite failure reaches callers
as a :class:`HistoryError` saying what it means (locked, disk full, damaged…).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sdstudio.engine.history.entry import HistoryEntry, HistoryQuery
from sdstudio.engine.history.errors import HistoryError, error_kind, history_error
from sdstudio.engine.history.schema import (
    migrate,
    rebuild_search_index,
    repair_schema,
    seed_from_column,
    seed_to_column,
)
from sdstudio.engine.metadata.record import ImageRecord

__all__ = ["HistoryEntry", "HistoryQuery", "HistoryStore", "fts_query"]

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 15.0
"""How long to wait for another program that holds the database."""
MAX_ID = 2**63 - 1
"""The largest id (and count) SQLite can store."""
ROW_ERRORS = (UnicodeError, ValueError, TypeError, RecursionError, OverflowError)
"""What one record's odd values can raise while becoming a row."""
_COLUMNS = (
    "id, path, created, prompt, negative_prompt, model_name, model_hash, seed, width, height, "
    "mode, sampler, duration_s, source, favorite, request_json, record_json"
)


class HistoryStore:
    """The history database. Safe to share between threads of one process.

    ``busy_timeout_s`` is how long to wait for another program holding the
    database before giving up (default :data:`BUSY_TIMEOUT_S`).
    """

    def __init__(self, path: Path, *, busy_timeout_s: float | None = None) -> None:
        self.path = path
        self.busy_timeout_s = BUSY_TIMEOUT_S if busy_timeout_s is None else busy_timeout_s
        self.repaired: list[str] = []
        """What opening put back (a missing index, the search index)."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise HistoryError(
                f"Cannot create the folder of the history database {path}: "
                f"{error.strerror or error}."
            ) from None
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as error:
            raise self._error(error) from None
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            _enable_wal(self._db, self.busy_timeout_s)
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            migrate(self._db)
            self.repaired = repair_schema(self._db)
        except sqlite3.Error as error:
            self._db.close()
            raise self._error(error) from None
        except BaseException:
            self._db.close()
            raise
        if self.repaired:
            log.warning("Repaired the history database %s: %s", path, ", ".join(self.repaired))

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add(self, path: Path, record: ImageRecord, *, source: str = "sdstudio") -> int:
        """Record an image that is already on disk; returns its id.

        Adding a path that is already recorded updates its row instead.
        """
        try:
            values = _row_values(path, record, source)
            rows = self._run(_UPSERT, values)
        except ROW_ERRORS as error:
            raise HistoryError(
                f"{path} was saved but could not be recorded in the history: {_reason(error)}."
            ) from None
        return int(rows[0][0])

    def add_many(
        self,
        items: Iterable[tuple[Path, ImageRecord, str]],
        on_skip: Callable[[Path, str], None] | None = None,
    ) -> int:
        """Record many images in one transaction (for rebuilds); returns how many.

        An image whose record cannot be stored (odd text, numbers out of range)
        is passed to ``on_skip`` with the reason, and the others are recorded.
        A database that cannot be written at all raises :class:`HistoryError`.
        """
        added = 0
        with self._using():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for path, record, source in items:
                    reason = self._add_one(path, record, source)
                    if reason is None:
                        added += 1
                        continue
                    log.warning("Not recorded in the history: %s: %s", path, reason)
                    if on_skip is not None:
                        on_skip(path, reason)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return added

    def _add_one(self, path: Path, record: ImageRecord, source: str) -> str | None:
        """Insert one row inside a transaction; the reason it was refused, or ``None``."""
        try:
            values = _row_values(path, record, source)
        except ROW_ERRORS as error:
            return _reason(error)
        self._db.execute("SAVEPOINT one_image")
        try:
            self._db.execute(_UPSERT, values).fetchall()
        except ROW_ERRORS as error:
            reason = _reason(error)
        except sqlite3.Error as error:
            if error_kind(error) != "other" or not self._db.in_transaction:
                raise  # the database itself failed, not this row
            reason = _reason(error)
        else:
            self._db.execute("RELEASE one_image")
            return None
        self._db.execute("ROLLBACK TO one_image")
        self._db.execute("RELEASE one_image")
        return reason

    def get(self, entry_id: int) -> HistoryEntry:
        """The entry with this id, or :class:`HistoryError`."""
        rows = self._run(f"SELECT {_COLUMNS} FROM images WHERE id = ?", (_id(entry_id),))
        if not rows:
            raise HistoryError(f"No image with id {entry_id} in the history.")
        return _entry(rows[0])

    def find_path(self, path: Path) -> HistoryEntry | None:
        """The entry for an image file, if it is recorded (by its own path, or the
        path with links resolved that older versions recorded)."""
        for candidate in dict.fromkeys((os.path.abspath(path), str(path.resolve()))):
            rows = self._run(f"SELECT {_COLUMNS} FROM images WHERE path = ?", (candidate,))
            if rows:
                return _entry(rows[0])
        return None

    def count(self, query: HistoryQuery | None = None) -> int:
        """How many entries match."""
        where, parameters = _where(query or HistoryQuery())
        rows = self._run(f"SELECT count(*) FROM images {where}", parameters)
        return int(rows[0][0])

    def page(
        self, query: HistoryQuery | None = None, *, offset: int = 0, limit: int = 100
    ) -> list[HistoryEntry]:
        """Entries ``offset`` to ``offset + limit`` of the query, newest first."""
        query = query or HistoryQuery()
        where, parameters = _where(query)
        # With a text search, walking the time index and testing each row
        # against the FTS matches stops after one page; SQLite's own plan
        # would sort every match first (200 ms for a common word at 100k rows).
        source = "images INDEXED BY images_by_time" if fts_query(query.search) else "images"
        sql = (
            f"SELECT {_COLUMNS} FROM {source} {where} "
            "ORDER BY created_ts DESC, id DESC LIMIT ? OFFSET ?"
        )
        limit, offset = max(-1, min(limit, MAX_ID)), max(0, min(offset, MAX_ID))
        return [_entry(row) for row in self._run(sql, [*parameters, limit, offset])]

    def set_favorite(self, entry_id: int, favorite: bool) -> None:
        """Mark or unmark an entry as a favourite."""
        with self._using():
            changed = self._db.execute(
                "UPDATE images SET favorite = ? WHERE id = ?", (int(favorite), _id(entry_id))
            ).rowcount
        if not changed:
            raise HistoryError(f"No image with id {entry_id} in the history.")

    def delete(self, entry_id: int) -> HistoryEntry:
        """Remove an entry (not its file); returns what was removed."""
        entry = self.get(entry_id)
        self._run("DELETE FROM images WHERE id = ?", (entry_id,))
        return entry

    def models(self) -> list[str]:
        """The model names in the history, most used first."""
        rows = self._run("SELECT model_name FROM images GROUP BY model_name ORDER BY count(*) DESC")
        return [str(row[0]) for row in rows]

    def integrity_check(self) -> str:
        """SQLite's integrity check result (``"ok"`` when healthy)."""
        return str(self._run("PRAGMA integrity_check")[0][0])

    def quick_check(self) -> str:
        """SQLite's quick check (every page readable and well formed): ``"ok"`` when healthy."""
        return "; ".join(str(row[0]) for row in self._run("PRAGMA quick_check(5)"))

    def paths(self) -> list[str]:
        """Every recorded image path."""
        return [str(row[0]) for row in self._run("SELECT path FROM images")]

    @contextlib.contextmanager
    def _using(self) -> Iterator[None]:
        """Hold the connection; SQLite's errors leave as :class:`HistoryError`."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as error:
                raise self._error(error) from None

    def _run(self, sql: str, parameters: Any = ()) -> list[Any]:
        """Run one statement and return its rows.

        A search index found broken (dropped or damaged by another program) is
        rebuilt from the images table, and the statement run again.
        """
        with self._using():
            try:
                return self._db.execute(sql, parameters).fetchall()
            except sqlite3.Error as error:
                if error_kind(error) != "search-index" or self._db.in_transaction:
                    raise
                log.warning("Rebuilding the history's search index after: %s", error)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rebuild_search_index(self._db)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return self._db.execute(sql, parameters).fetchall()

    def _error(self, error: sqlite3.Error) -> HistoryError:
        return history_error(error, self.path, self.busy_timeout_s)


_FIELDS = (
    "path",
    "created",
    "created_ts",
    "prompt",
    "negative_prompt",
    "model_name",
    "model_hash",
    "seed",
    "width",
    "height",
    "mode",
    "sampler",
    "duration_s",
    "source",
    "request_json",
    "record_json",
)
_UPSERT = (
    f"INSERT INTO images ({', '.join(_FIELDS)}) VALUES ({', '.join(':' + f for f in _FIELDS)}) "
    f"ON CONFLICT(path) DO UPDATE SET "
    f"{', '.join(f'{f} = excluded.{f}' for f in _FIELDS if f != 'path')} RETURNING id"
)


def _row_values(path: Path, record: ImageRecord, source: str) -> dict[str, Any]:
    from sdstudio.engine.prompting.per_image import resolved_of

    request = record.request
    created = record.created or _file_time(path)
    # A wildcard template is searched and shown as the prompt it resolved to (what the
    # picture shows); the request (the template) stays in request_json.
    prompt, negative = resolved_of(record.extra) or (request.prompt, request.negative_prompt)
    return {
        # The path itself, links not followed: deleting the entry removes this
        # file (a link), never what a link points to.
        "path": os.path.abspath(path),
        "created": created,
        "created_ts": _timestamp(created, path),
        "prompt": prompt,
        "negative_prompt": negative,
        "model_name": _model_name(record),
        "model_hash": record.model_hash,
        "seed": seed_to_column(request.seed),
        "width": request.width,
        "height": request.height,
        "mode": request.mode.value,
        "sampler": request.sampler,
        "duration_s": record.duration_s,
        "source": source,
        "request_json": request.to_json(),
        "record_json": record.to_json(),
    }


def _model_name(record: ImageRecord) -> str:
    """The recorded model name; ``org/name`` for a Hugging Face cache snapshot, whose
    folder name (a 40-hex revision) older versions recorded."""
    from sdstudio.engine.models.lookup import hf_repo_id

    model = Path(record.request.model)
    if not record.model_name or record.model_name == model.name:
        return hf_repo_id(model) or record.model_name or model.name
    return record.model_name


def _enable_wal(db: sqlite3.Connection, timeout_s: float) -> None:
    """Switch to WAL, waiting for another process that holds the database.

    Changing the journal mode does not wait on the busy timeout by itself.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def fts_query(text: str) -> str:
    """Turn what a user types into a safe FTS5 query: every word must appear (as a prefix)."""
    words = re.findall(r"\w+", text, flags=re.UNICODE)
    return " AND ".join(f'"{word}"*' for word in words)


def _where(query: HistoryQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    parameters: list[Any] = []
    match = fts_query(query.search)
    if match:
        clauses.append("id IN (SELECT rowid FROM images_text WHERE images_text MATCH ?)")
        parameters.append(match)
    if query.favorites:
        clauses.append("favorite = 1")
    if query.model:
        clauses.append("model_name = ?")
        parameters.append(query.model)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), parameters


def _id(entry_id: int) -> int | None:
    """An id SQLite can compare: one out of its range matches nothing (no OverflowError)."""
    return entry_id if -MAX_ID <= entry_id <= MAX_ID else None


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _entry(row: tuple[Any, ...]) -> HistoryEntry:
    values = list(row)
    values[7] = seed_from_column(values[7], values[15])
    values[14] = bool(values[14])
    return HistoryEntry(*values)


def _file_time(path: Path) -> str:
    try:
        stamp = path.stat().st_mtime
    except OSError:
        return datetime.now().astimezone().isoformat(timespec="milliseconds")
    return datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="milliseconds")


def _timestamp(created: str, path: Path) -> float:
    try:
        return datetime.fromisoformat(created).timestamp()
    except ValueError:
        return datetime.fromisoformat(_file_time(path)).timestamp()
