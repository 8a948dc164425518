"""The history database's schema and its migrations.

The schema version lives in ``PRAGMA user_version``. Each migration runs in a
transaction together with the version bump, so a crash leaves the database at
the old version or the new one, never between. A database from a newer
sdstudio is refused, not changed. Indexes and the full-text search index hold
nothing that the images table does not: when one is missing it is rebuilt.
Seeds of 2**63 and more are kept in the signed ``seed`` column by
:func:`seed_to_column`.
"""

from __future__ import annotations

import json
import sqlite3

from sdstudio.engine.history.errors import HistoryDamaged, HistoryError
from sdstudio.engine.request import MAX_SEED, RANDOM_SEED

_SEED_WRAP = 2**64
_LARGEST_INTEGER = 2**63 - 1

_TABLE = """
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    created_ts REAL NOT NULL,
    prompt TEXT NOT NULL,
    negative_prompt TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_hash TEXT NOT NULL,
    seed INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    mode TEXT NOT NULL,
    sampler TEXT NOT NULL,
    duration_s REAL NOT NULL,
    source TEXT NOT NULL,
    favorite INTEGER NOT NULL DEFAULT 0,
    request_json TEXT NOT NULL,
    record_json TEXT NOT NULL
);
"""
_INDEXES = {
    "images_by_time": "CREATE INDEX images_by_time ON images (created_ts DESC, id DESC);",
    "images_favorites_by_time": (
        "CREATE INDEX images_favorites_by_time ON images (favorite, created_ts DESC, id DESC);"
    ),
    "images_by_model": (
        "CREATE INDEX images_by_model ON images (model_name, created_ts DESC, id DESC);"
    ),
}
_SEARCH_TABLE = """
CREATE VIRTUAL TABLE images_text USING fts5(
    prompt, negative_prompt, content='images', content_rowid='id',
    tokenize='unicode61 remove_diacritics 2'
);
"""
_SEARCH_TRIGGERS = """
CREATE TRIGGER images_text_insert AFTER INSERT ON images BEGIN
    INSERT INTO images_text (rowid, prompt, negative_prompt)
    VALUES (new.id, new.prompt, new.negative_prompt);
END;
CREATE TRIGGER images_text_delete AFTER DELETE ON images BEGIN
    INSERT INTO images_text (images_text, rowid, prompt, negative_prompt)
    VALUES ('delete', old.id, old.prompt, old.negative_prompt);
END;
CREATE TRIGGER images_text_update AFTER UPDATE OF prompt, negative_prompt ON images BEGIN
    INSERT INTO images_text (images_text, rowid, prompt, negative_prompt)
    VALUES ('delete', old.id, old.prompt, old.negative_prompt);
    INSERT INTO images_text (rowid, prompt, negative_prompt)
    VALUES (new.id, new.prompt, new.negative_prompt);
END;
"""
_SEARCH_TRIGGER_NAMES = ("images_text_insert", "images_text_delete", "images_text_update")
_SEARCH_SHADOWS = (
    "images_text_data",
    "images_text_idx",
    "images_text_docsize",
    "images_text_config",
)
_V1 = _TABLE + "\n".join(_INDEXES.values()) + _SEARCH_TABLE + _SEARCH_TRIGGERS

# Models in the Hugging Face cache were once recorded by their snapshot folder's
# name (40 hex digits): give those rows the repository id, as new rows have.
_V2 = """
UPDATE images SET model_name = replace(
    substr(
        replace(json_extract(request_json, '$.model'), '\\', '/'),
        instr(replace(json_extract(request_json, '$.model'), '\\', '/'), '/models--') + 9,
        instr(replace(json_extract(request_json, '$.model'), '\\', '/'), '/snapshots/')
        - instr(replace(json_extract(request_json, '$.model'), '\\', '/'), '/models--') - 9
    ),
    '--', '/'
)
WHERE length(model_name) = 40 AND model_name NOT GLOB '*[^0-9a-f]*'
AND replace(json_extract(request_json, '$.model'), '\\', '/')
    GLOB '*/models--?*/snapshots/' || model_name;
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2)
"""MIGRATIONS[i] takes the database from version i to version i + 1."""

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(connection: sqlite3.Connection) -> int:
    """Bring the database up to :data:`SCHEMA_VERSION`; return the version found."""
    found = int(connection.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise HistoryError(
            f"The history database was written by a newer sdstudio (schema {found}; this "
            f"version knows up to {SCHEMA_VERSION}). Update sdstudio; the database was left "
            "untouched."
        )
    for version in range(found, SCHEMA_VERSION):
        connection.execute("BEGIN IMMEDIATE")
        try:
            # Re-check under the write lock: another process may have migrated.
            current = int(connection.execute("PRAGMA user_version").fetchone()[0])
            if current == version:
                for statement in _statements(MIGRATIONS[version]):
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {version + 1}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    return found


def repair_schema(connection: sqlite3.Connection) -> list[str]:
    """Put back indexes and the search index if they are missing; return what was repaired.

    A database without its ``images`` table is :class:`HistoryDamaged`. Nothing
    is written when everything is in place.
    """
    names = {
        str(name): str(kind)
        for kind, name in connection.execute("SELECT type, name FROM sqlite_master")
    }
    if names.get("images") != "table":
        raise HistoryDamaged("The history database has lost its table of images.")
    indexes = [name for name in _INDEXES if names.get(name) != "index"]
    search_parts = ("images_text", *_SEARCH_SHADOWS, *_SEARCH_TRIGGER_NAMES)
    search_broken = any(name not in names for name in search_parts)
    if not indexes and not search_broken:
        return []
    connection.execute("BEGIN IMMEDIATE")
    try:
        for name in indexes:
            connection.execute(_INDEXES[name].replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS"))
        if search_broken:
            rebuild_search_index(connection)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    repaired = [f"the index {name}" for name in indexes]
    return repaired + (["the search index"] if search_broken else [])


def rebuild_search_index(connection: sqlite3.Connection) -> None:
    """Re-create the full-text index over prompts, and its triggers, from the images table.

    Call inside a transaction.
    """
    for name in _SEARCH_TRIGGER_NAMES:
        connection.execute(f"DROP TRIGGER IF EXISTS {name}")
    connection.execute("SAVEPOINT drop_search_index")
    try:
        connection.execute("DROP TABLE IF EXISTS images_text")
    except sqlite3.DatabaseError:
        # FTS5 cannot even open a table one of whose own tables is gone, so it
        # cannot drop it either: its schema row is removed, as SQLite documents
        # for a virtual table that no longer works, and the schema reloaded.
        connection.execute("ROLLBACK TO drop_search_index")
        version = int(connection.execute("PRAGMA schema_version").fetchone()[0])
        connection.execute("PRAGMA writable_schema = ON")
        connection.execute(
            "DELETE FROM sqlite_master WHERE type = 'table' AND name = 'images_text'"
        )
        connection.execute(f"PRAGMA schema_version = {version + 1}")
        connection.execute("PRAGMA writable_schema = OFF")
    connection.execute("RELEASE drop_search_index")
    for name in _SEARCH_SHADOWS:  # what is left of a search index dropped by hand
        connection.execute(f"DROP TABLE IF EXISTS {name}")
    for statement in _statements(_SEARCH_TABLE + _SEARCH_TRIGGERS):
        connection.execute(statement)
    connection.execute("INSERT INTO images_text (images_text) VALUES ('rebuild')")


def seed_to_column(seed: int) -> int:
    """The ``seed`` column's value for a seed: SQLite integers are signed 64-bit, so
    seeds from 2**63 to 2**64-1 are stored as their two's-complement value (negative).

    Seeds below 2**63 (every A1111 seed and almost every other) are stored as they are;
    ``ORDER BY seed < 0, seed`` sorts by the seed itself.
    """
    return seed - _SEED_WRAP if seed > _LARGEST_INTEGER else seed


def seed_from_column(value: int, request_json: str) -> int:
    """The seed from its ``seed`` column value (see :func:`seed_to_column`).

    -1 stands both for "random" (a record that has no seed) and for 2**64-1; the
    row's request tells them apart.
    """
    if value >= 0:
        return value
    if value != RANDOM_SEED:
        return value + _SEED_WRAP
    try:
        seed = json.loads(request_json).get("seed")
    except (ValueError, TypeError, AttributeError, RecursionError):
        return value
    return seed if seed == MAX_SEED else value


def _statements(script: str) -> list[str]:
    """Split a script into statements, keeping trigger bodies whole."""
    statements: list[str] = []
    buffer = ""
    for line in script.strip().splitlines():
        buffer += line + "\n"
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    return statements
