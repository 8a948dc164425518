"""The history of generated images: a SQLite store kept in step with the outputs folder."""

from sdstudio.engine.history.errors import HistoryDamaged, HistoryError, HistoryUnavailable
from sdstudio.engine.history.schema import SCHEMA_VERSION
from sdstudio.engine.history.store import HistoryEntry, HistoryQuery, HistoryStore

__all__ = [
    "SCHEMA_VERSION",
    "HistoryDamaged",
    "HistoryEntry",
    "HistoryError",
    "HistoryQuery",
    "HistoryStore",
    "HistoryUnavailable",
]
