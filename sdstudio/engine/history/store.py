"""The history store: one SQLite row per image, searchable and paged.

WAL mode lets the app read while the CLI writes; a busy timeout makes two
writers wait for each other instead of failing. Queries page newest first and
stay fast at 100,000 rows (indexes on time, favourites and model; an FTS5
index over prompt and negative prompt).
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sdstudio.engine.history.schema import HistoryError, migrate
from sdstudio.engine.metadata.record import ImageRecord
from sdstudio.engine.request import GenerationRequest

BUSY_TIMEOUT_S = 15.0
_COLUMNS = (
    "id, path, created, prompt, negative_prompt, model_name, model_hash, seed, width, height, "
    "mode, sampler, duration_s, source, favorite, request_json, record_json"
)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One image in the history."""

    id: int
    path: str
    created: str
    prompt: str
    negative_prompt: str
    model_name: str
    model_hash: str
    seed: int
    width: int
    height: int
    mode: str
    sampler: str
    duration_s: float
    source: str
    favorite: bool
    request_json: str
    record_json: str

    @property
    def request(self) -> GenerationRequest:
        """The request that re-creates this image."""
        return GenerationRequest.from_json(self.request_json)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary, with the full request."""
        return {
            "id": self.id,
            "path": self.path,
            "created": self.created,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "model": self.model_name,
            "model_hash": self.model_hash,
            "seed": self.seed,
            "width": self.width,
            "height": self.height,
            "mode": self.mode,
            "sampler": self.sampler,
            "duration_s": self.duration_s,
            "source": self.source,
            "favorite": self.favorite,
            "request": self.request.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """Which entries to list: all by default, newest first."""

    search: str = ""
    favorites: bool = False
    model: str = ""


class HistoryStore:
    """The history database. Safe to share between threads of one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as error:
            raise HistoryError(f"Cannot open the history database {path}: {error}.") from None
        self._lock = threading.RLock()
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            _enable_wal(self._db)
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            migrate(self._db)
        except BaseException:
            self._db.close()
            raise

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
        with self._lock:
            row = self._db.execute(_UPSERT, _row_values(path, record, source)).fetchone()
        return int(row[0])

    def add_many(self, items: Iterable[tuple[Path, ImageRecord, str]]) -> int:
        """Record many images in one transaction (for rebuilds); returns how many."""
        rows = [_row_values(path, record, source) for path, record, source in items]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for values in rows:
                    self._db.execute(_UPSERT, values)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def get(self, entry_id: int) -> HistoryEntry:
        """The entry with this id, or :class:`HistoryError`."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM images WHERE id = ?", (entry_id,)
            ).fetchone()
        if row is None:
            raise HistoryError(f"No image with id {entry_id} in the history.")
        return _entry(row)

    def find_path(self, path: Path) -> HistoryEntry | None:
        """The entry for an image file, if it is recorded."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM images WHERE path = ?", (str(path.resolve()),)
            ).fetchone()
        return _entry(row) if row else None

    def count(self, query: HistoryQuery | None = None) -> int:
        """How many entries match."""
        where, parameters = _where(query or HistoryQuery())
        with self._lock:
            row = self._db.execute(f"SELECT count(*) FROM images {where}", parameters).fetchone()
        return int(row[0])

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
        with self._lock:
            rows = self._db.execute(sql, [*parameters, limit, offset]).fetchall()
        return [_entry(row) for row in rows]

    def set_favorite(self, entry_id: int, favorite: bool) -> None:
        """Mark or unmark an entry as a favourite."""
        with self._lock:
            changed = self._db.execute(
                "UPDATE images SET favorite = ? WHERE id = ?", (int(favorite), entry_id)
            ).rowcount
        if not changed:
            raise HistoryError(f"No image with id {entry_id} in the history.")

    def delete(self, entry_id: int) -> HistoryEntry:
        """Remove an entry (not its file); returns what was removed."""
        entry = self.get(entry_id)
        with self._lock:
            self._db.execute("DELETE FROM images WHERE id = ?", (entry_id,))
        return entry

    def models(self) -> list[str]:
        """The model names in the history, most used first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT model_name FROM images GROUP BY model_name ORDER BY count(*) DESC"
            ).fetchall()
        return [str(row[0]) for row in rows]

    def integrity_check(self) -> str:
        """SQLite's integrity check result (``"ok"`` when healthy)."""
        with self._lock:
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def paths(self) -> list[str]:
        """Every recorded image path."""
        with self._lock:
            return [str(row[0]) for row in self._db.execute("SELECT path FROM images")]


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
    request = record.request
    created = record.created or _file_time(path)
    return {
        "path": str(path.resolve()),
        "created": created,
        "created_ts": _timestamp(created, path),
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "model_name": _model_name(record),
        "model_hash": record.model_hash,
        "seed": request.seed,
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


def _enable_wal(db: sqlite3.Connection) -> None:
    """Switch to WAL, waiting for another process that holds the database.

    Changing the journal mode does not wait on the busy timeout by itself.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
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


def _entry(row: tuple[Any, ...]) -> HistoryEntry:
    values = list(row)
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
