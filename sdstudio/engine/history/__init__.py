"""The history of generated images: a SQLite store kept in step with the outputs folder."""

from sdstudio.engine.history.schema import SCHEMA_VERSION, HistoryError
from sdstudio.engine.history.store import HistoryEntry, HistoryQuery, HistoryStore

__all__ = ["SCHEMA_VERSION", "HistoryEntry", "HistoryError", "HistoryQuery", "HistoryStore"]
