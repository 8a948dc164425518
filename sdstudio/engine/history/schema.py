"""The history database's schema and its migrations.

The schema version lives in ``PRAGMA user_version``. Each migration runs in a
transaction together with the version bump, so a crash leaves the database at
the old version or the new one, never between. A database from a newer
sdstudio is refused, not changed.
"""

from __future__ import annotations

import sqlite3

from sdstudio.engine.errors import SdStudioError

_V1 = """
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
CREATE INDEX images_by_time ON images (created_ts DESC, id DESC);
CREATE INDEX images_favorites_by_time ON images (favorite, created_ts DESC, id DESC);
CREATE INDEX images_by_model ON images (model_name, created_ts DESC, id DESC);
CREATE VIRTUAL TABLE images_text USING fts5(
    prompt, negative_prompt, content='images', content_rowid='id',
    tokenize='unicode61 remove_diacritics 2'
);
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


class HistoryError(SdStudioError):
    """The history database cannot be used."""


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
