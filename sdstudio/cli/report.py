"""How the CLI reports: text for people, or one JSON object per line for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO


class Reporter:
    """Prints progress and results as text or as JSON lines."""

    def __init__(self, as_json: bool, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.as_json = as_json
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def event(self, kind: str, text: str | None = None, **fields: Any) -> None:
        """Report an event: JSON on stdout, or ``text`` (if any) on stderr."""
        if self.as_json:
            print(json.dumps({"event": kind, **fields}, ensure_ascii=False), file=self.out)
            self.out.flush()
        elif text is not None:
            print(text, file=self.err, flush=True)

    def result(self, text: str) -> None:
        """A line of the command's result (text mode only)."""
        if not self.as_json:
            print(text, file=self.out, flush=True)

    def data(self, value: Any) -> None:
        """A command's whole result as one JSON document (JSON mode only)."""
        if self.as_json:
            print(json.dumps(value, ensure_ascii=False, indent=2), file=self.out, flush=True)

    def done(self, text: str, **fields: Any) -> None:
        """The end of a command: ``text`` for people, a ``done`` event for scripts."""
        if self.as_json:
            self.event("done", **fields)
        else:
            self.result(text)

    def error(self, message: str) -> None:
        """Report a failure."""
        if self.as_json:
            self.event("error", message=message)
        else:
            print(f"error: {message}", file=self.err, flush=True)
