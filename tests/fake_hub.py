"""A fake Hugging Face Hub on 127.0.0.1 for download tests, with its fixtures.

Its fixtures (``hub``, ``cache``, ``repo_files``) are in ``conftest.py``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPO = "org/tiny-turbo"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CODE_FILES = {
    "scheduler/evil.py": b"import os; os.system('touch /tmp/pwned')",
    "tokenizer/setup.sh": b"#!/bin/sh\ntouch /tmp/pwned",
    "feature_extractor/hook.pkl": b"\x80\x04pickle",
    "unet/custom_unet.py": b"import os",
}
"""Files in component folders that a download must never fetch."""


class FakeHub:
    """Serves one repo the way the Hub's model-info and resolve endpoints do."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[tuple[str, str, str | None]] = []
        self.drop_once: set[str] = set()
        self.gated = False
        self.lock = threading.Lock()
        self.sha = COMMIT
        self.etags: dict[str, tuple[str, str]] = {}
        """File name → (header, value) sent instead of the file's own digest."""

    def info(self) -> dict[str, Any]:
        siblings = [{"rfilename": n, "size": len(d)} for n, d in sorted(self.files.items())]
        return {"id": REPO, "modelId": REPO, "sha": self.sha, "siblings": siblings}

    def etag(self, name: str) -> tuple[str, str]:
        """As the Hub: LFS files by the SHA-256 of their bytes, the others by git's SHA-1."""
        if name in self.etags:
            return self.etags[name]
        data = self.files[name]
        if name.endswith((".safetensors", ".bin")):
            return "X-Linked-Etag", hashlib.sha256(data).hexdigest()
        return "ETag", hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: Any) -> None:
            pass

        def _error(self, status: int, code: str) -> None:
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _route(self, head: bool) -> None:
            with hub.lock:
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
            path = self.path.split("?")[0]
            if not path.startswith(f"/api/models/{REPO}/") and not path.startswith(f"/{REPO}/"):
                return self._error(404, "RepoNotFound")
            if hub.gated:
                return self._error(403, "GatedRepo")
            if path.startswith("/api/models/"):
                body = json.dumps(hub.info()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return None
            revision, _, name = path.split("/resolve/", 1)[1].partition("/")
            if revision not in ("main", hub.sha):
                return self._error(404, "RevisionNotFound")
            if name not in hub.files:
                return self._error(404, "EntryNotFound")
            return self._serve_file(name, head)

        def _serve_file(self, name: str, head: bool) -> None:
            data = hub.files[name]
            start = 0
            wanted = self.headers.get("Range")
            if wanted and not head:
                start = int(wanted.split("=")[1].split("-")[0])
            self.send_response(206 if start else 200)
            header, etag = hub.etag(name)
            self.send_header(header, f'"{etag}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if head:
                return
            if name in hub.drop_once and not start:
                hub.drop_once.discard(name)
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data[start:])

        def do_HEAD(self) -> None:
            self._route(head=True)

        def do_GET(self) -> None:
            self._route(head=False)

    return Handler


class QuietServer(ThreadingHTTPServer):
    """A server that does not print the resets of connections a test stops on purpose."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


def resolves(hub: Any) -> list[tuple[str, str, str | None]]:
    return [r for r in hub.requests if "/resolve/" in r[1] and r[0] == "GET"]
