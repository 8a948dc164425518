"""How the CLI reports: text for people, or one JSON object per line for scripts.

Text reaches a terminal, so everything printed as text passes
:func:`terminal_text`: metadata read from an image (a prompt, a model name, a
path) could otherwise hold escape sequences that clear the screen, write the
clipboard (OSC 52), rewrite a line with a carriage return or reorder what is
shown (bidirectional overrides). JSON keeps every value exact: :func:`json_text`
only writes the characters JSON leaves raw as ``\\uXXXX`` escapes.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, TextIO

# C0 controls but tab and line feed, DEL, C1 controls, the bidirectional
# embeddings, overrides and isolates, and lone surrogates (no encoding takes them).
_TERMINAL_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
# What json.dumps(ensure_ascii=False) leaves raw, C0 being escaped already.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def terminal_text(text: str) -> str:
    """``text`` safe to print to a terminal: control characters but newline and tab,
    bidirectional overrides and lone surrogates written as visible escapes
    (``\\x1b``, ``\\u202e``)."""
    return _TERMINAL_UNSAFE.sub(_visible_escape, text)


def json_text(value: Any, indent: int | None = None) -> str:
    """``value`` as JSON, readable text kept as it is and every control character,
    bidirectional override and lone surrogate escaped: decoding gives ``value`` back."""
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    return _JSON_UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def _visible_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


class Reporter:
    """Prints progress and results as text or as JSON lines."""

    def __init__(self, as_json: bool, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.as_json = as_json
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def event(self, kind: str, text: str | None = None, **fields: Any) -> None:
        """Report an event: JSON on stdout, or ``text`` (if any) on stderr."""
        if self.as_json:
            print(json_text({"event": kind, **fields}), file=self.out)
            self.out.flush()
        elif text is not None:
            print(terminal_text(text), file=self.err, flush=True)

    def result(self, text: str) -> None:
        """A line of the command's result (text mode only)."""
        if not self.as_json:
            print(terminal_text(text), file=self.out, flush=True)

    def data(self, value: Any) -> None:
        """A command's whole result as one JSON document (JSON mode only)."""
        if self.as_json:
            print(json_text(value, indent=2), file=self.out, flush=True)

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
            print(f"error: {terminal_text(message)}", file=self.err, flush=True)
