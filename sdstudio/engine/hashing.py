"""Model file hashes as AUTOMATIC1111 writes them, cached by size and time."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from pathlib import Path

from sdstudio.engine.fileio import write_atomically

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """The SHA-256 of a whole file, in hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


class HashCache:
    """SHA-256 of model files, remembered across runs while size and mtime hold.

    Hashing a multi-gigabyte checkpoint takes seconds; users switch models
    often. ``short_hash`` gives A1111's ``Model hash`` (10 hex digits).
    """

    def __init__(self, cache_file: Path | None) -> None:
        self._file = cache_file
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, object]] = {}
        if cache_file is not None and cache_file.exists():
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(cache_file.read_text("utf-8"))
                if isinstance(data, dict):
                    self._entries = {k: v for k, v in data.items() if isinstance(v, dict)}

    def cached_sha256(self, path: Path) -> str | None:
        """The file's SHA-256 when the cache holds it for the file as it is now, else ``None``
        (the file is not read)."""
        path = path.resolve()
        stat = path.stat()
        with self._lock:
            entry = self._entries.get(str(path))
            if (
                entry
                and entry.get("size") == stat.st_size
                and entry.get("mtime") == stat.st_mtime_ns
            ):
                return str(entry["sha256"])
        return None

    def sha256(self, path: Path) -> str:
        """The file's SHA-256, from the cache when the file is unchanged."""
        path = path.resolve()
        cached = self.cached_sha256(path)
        if cached is not None:
            return cached
        stat = path.stat()
        key = str(path)
        digest = file_sha256(path)
        with self._lock:
            self._entries[key] = {"size": stat.st_size, "mtime": stat.st_mtime_ns, "sha256": digest}
            self._save()
        return digest

    def short_hash(self, path: Path) -> str:
        """A1111's model hash: the first 10 hex digits of the SHA-256."""
        return self.sha256(path)[:10]

    def _save(self) -> None:
        if self._file is None:
            return
        from sdstudio.engine.errors import StorageError

        with contextlib.suppress(StorageError):
            write_atomically(self._file, json.dumps(self._entries, indent=1).encode("utf-8"))
