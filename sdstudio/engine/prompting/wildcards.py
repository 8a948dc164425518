"""Wildcards and variants in prompts, as A1111's Dynamic Prompts extension and
ComfyUI-Impact-Pack write them.

* ``__name__`` is replaced by one line of ``name.txt`` found in the wildcard folders;
  ``__dir/name__`` names a file in a sub-folder and ``__name*__`` picks from the
  lines of every file whose name matches. Blank lines and ``#`` comments are skipped.
* ``{a|b|c}`` is replaced by one of its options; ``{0.5::a|b}`` weighs an option
  (1 when not given); ``{2$$a|b|c}`` picks two different options joined with ", ",
  ``{1-3$$a|b|c}`` one to three, ``{2$$ and $$a|b|c}`` joins them with " and ", and
  ``{2$$__name__}`` picks two lines of a wildcard.
* What is chosen may hold wildcards and variants itself; they are resolved in turn, up
  to :data:`MAX_DEPTH` levels.

Braces without ``|`` or ``$$`` inside (NovelAI's emphasis ``{word}``) and characters
after a backslash are left as written, so a prompt without wildcards or variants is
never changed. Only ``.txt`` wildcard files are read; Dynamic Prompts' YAML and JSON
collections are not.

Choices are drawn from ``random.Random(seed)`` from left to right, each option chosen
resolved before the text after it, so a template and a seed give the same text on
every run and platform; a batch resolves image *i* with its own seed, ``seed + i``, as
Dynamic Prompts' random sampler does.
"""

from __future__ import annotations

import fnmatch
import os
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sdstudio.engine.errors import InvalidRequest

if TYPE_CHECKING:
    from sdstudio.engine.paths import AppPaths
    from sdstudio.engine.settings import Settings

MAX_DEPTH = 20
"""How deep wildcards and variants may nest (a wildcard that names itself stops here)."""
MAX_CHOICES = 10_000
"""The most choices one prompt may take (lines that name several wildcards each can
otherwise grow a prompt exponentially)."""
A1111_FOLDER = "extensions/sd-dynamic-prompts/wildcards"
"""Dynamic Prompts' wildcard folder, relative to an A1111 (or Forge) root."""
COMFYUI_FOLDERS = (
    "custom_nodes/ComfyUI-Impact-Pack/wildcards",
    "custom_nodes/ComfyUI-Impact-Pack/custom_wildcards",
)
"""ComfyUI-Impact-Pack's wildcard folders, relative to a ComfyUI root."""
FOLDER_NAME = "wildcards"
"""The sub-folder of a plain model folder that holds wildcards."""

_WILDCARD = re.compile(r"__([\w\-*?.\[\]/\\]+?)__")
_WEIGHT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)::(.*)", re.DOTALL)
_COUNT = re.compile(r"\s*(\d*)\s*(-?)\s*(\d*)\s*")
_PAIRS = {"{": "}", "[": "]", "(": ")"}


def has_wildcards(*texts: str) -> bool:
    """Whether any of ``texts`` holds a wildcard or a variant to resolve."""
    for text in texts:
        index = 0
        while index < len(text):
            character = text[index]
            if character == "\\":
                index += 2
                continue
            if character == "_" and _WILDCARD.match(text, index):
                return True
            if character == "{":
                end = _closing(text, index)
                if end is not None and _is_variant(text[index + 1 : end]):
                    return True
            index += 1
    return False


@dataclass
class Wildcards:
    """The wildcard files of some folders, searched in order (the first folder holding
    a name wins), and the resolution of templates with them."""

    folders: Sequence[Path] = ()
    _index: dict[str, Path] | None = field(default=None, init=False, repr=False)
    _lines: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)

    def names(self) -> list[str]:
        """Every wildcard name (``dir/name`` for a file in a sub-folder), sorted."""
        return sorted(self._files())

    def lines(self, name: str) -> list[str]:
        """The choices of the wildcard ``name`` (a glob gives those of every match, in the
        order of their names); raises :class:`InvalidRequest` when none is found."""
        key = _checked_name(name)
        files = self._files()
        if any(c in key for c in "*?["):
            matched = sorted(n for n in files if fnmatch.fnmatchcase(n, key))
        else:
            exact = [key] if key in files else []
            matched = exact or sorted(n for n in files if n.casefold() == key.casefold())[:1]
        if not matched:
            raise InvalidRequest(f"The wildcard __{name}__ is unknown; {self._searched()}.")
        found = [line for match in matched for line in self._read(match)]
        if not found:
            raise InvalidRequest(
                f"The wildcard __{name}__ has no lines to choose from ({files[matched[0]]})."
            )
        return found

    def resolve(self, template: str, seed: int) -> str:
        """``template`` with its wildcards and variants replaced, chosen with ``seed``."""
        return _Resolver(self, random.Random(seed)).expand(template, ())

    def _files(self) -> dict[str, Path]:
        if self._index is None:
            index: dict[str, Path] = {}
            for folder in self.folders:
                for path in _text_files(folder):
                    name = path.relative_to(folder).with_suffix("").as_posix()
                    index.setdefault(name, path)
            self._index = index
        return self._index

    def _read(self, name: str) -> list[str]:
        if name not in self._lines:
            path = self._files()[name]
            try:
                text = path.read_text("utf-8-sig", errors="replace")
            except OSError as error:
                raise InvalidRequest(
                    f"The wildcard file {path} cannot be read: {error.strerror or error}."
                ) from None
            stripped = (line.strip() for line in text.splitlines())
            self._lines[name] = [line for line in stripped if line and not line.startswith("#")]
        return self._lines[name]

    def _searched(self) -> str:
        folders = [str(folder) for folder in self.folders]
        if not folders:
            return "there are no wildcard folders"
        return "searched " + ", ".join(folders)


def resolve(template: str, seed: int, folders: Iterable[Path] = ()) -> str:
    """``template`` resolved with ``seed`` and the wildcard files of ``folders``."""
    return Wildcards(list(folders)).resolve(template, seed)


def wildcard_folders(paths: AppPaths, settings: Settings) -> list[Path]:
    """The folders where wildcards are looked for, in this order: sdstudio's own, then for
    each model folder of the settings its tool's (Dynamic Prompts' under an A1111 or
    Forge root, ComfyUI-Impact-Pack's ``wildcards`` and ``custom_wildcards`` under a
    ComfyUI root) or, for a plain folder, its ``wildcards`` sub-folder. Folders that do
    not exist are left out."""
    from sdstudio.engine.models import layouts

    found = [paths.wildcards_dir]
    for folder in settings.model_folders:
        root = Path(folder).expanduser()
        tool = layouts.detect_tool(root)
        if tool == "a1111":
            found.append(root / A1111_FOLDER)
        elif tool == "comfyui":
            found += [root / relative for relative in COMFYUI_FOLDERS]
        elif tool is None:
            found.append(root / FOLDER_NAME)
    return [folder for folder in dict.fromkeys(found) if _is_dir(folder)]


class _Resolver:
    """One resolution: the random draws and the count of choices made."""

    def __init__(self, wildcards: Wildcards, rng: random.Random) -> None:
        self.wildcards = wildcards
        self.rng = rng
        self.choices = 0

    def expand(self, text: str, chain: tuple[str, ...]) -> str:
        if len(chain) > MAX_DEPTH:
            shown = " → ".join(chain[:6]) + (" → …" if len(chain) > 6 else "")
            raise InvalidRequest(
                f"Wildcards and variants nest more than {MAX_DEPTH} levels deep ({shown}); "
                "does a wildcard name itself?"
            )
        out: list[str] = []
        index = 0
        while index < len(text):
            character = text[index]
            if character == "\\":
                out.append(text[index : index + 2])
                index += 2
                continue
            wildcard = _WILDCARD.match(text, index) if character == "_" else None
            if wildcard is not None:
                name = wildcard.group(1)
                line = self._pick(self.wildcards.lines(name))
                out.append(self.expand(line, (*chain, f"__{name}__")))
                index = wildcard.end()
                continue
            end = _closing(text, index) if character == "{" else None
            if end is not None:
                inner = text[index + 1 : end]
                if _is_variant(inner):
                    out.append(self._variant(inner, chain))
                else:
                    out.append("{" + self.expand(inner, chain) + "}")
                index = end + 1
                continue
            out.append(character)
            index += 1
        return "".join(out)

    def _variant(self, inner: str, chain: tuple[str, ...]) -> str:
        parts = _split(inner, "$$")
        if len(parts) > 3:
            raise InvalidRequest(f"The variant {{{_short(inner)}}} has more than two '$$'.")
        separator = parts[1] if len(parts) == 3 else ", "
        options = _split(parts[-1], "|")
        weights = []
        for i, option in enumerate(options):
            weighted = _WEIGHT.fullmatch(option)
            weights.append(float(weighted.group(1)) if weighted else 1.0)
            options[i] = weighted.group(2) if weighted else option
        if len(parts) == 1:
            return self.expand(self._weighted(options, weights), (*chain, "{…}"))
        low, high = _count(parts[0], inner)
        alone = _WILDCARD.fullmatch(options[0].strip()) if len(options) == 1 else None
        if alone is not None:  # {2$$__name__}: several lines of one wildcard
            options = list(self.wildcards.lines(alone.group(1)))
            weights = [1.0] * len(options)
            chain = (*chain, f"__{alone.group(1)}__")
        wanted = self.rng.randint(low, min(high, len(options))) if low < len(options) else low
        picked: list[str] = []
        while options and len(picked) < wanted:
            choice = self._weighted_index(weights)
            picked.append(self.expand(options.pop(choice), (*chain, "{…}")))
            weights.pop(choice)
        return separator.join(picked)

    def _pick(self, lines: list[str]) -> str:
        self._count_choice()
        return lines[self.rng.randrange(len(lines))]

    def _weighted(self, options: list[str], weights: list[float]) -> str:
        return options[self._weighted_index(weights)]

    def _weighted_index(self, weights: list[float]) -> int:
        self._count_choice()
        total = sum(weights)
        if total <= 0:
            raise InvalidRequest("A variant's options all weigh 0; give one a weight above 0.")
        if all(w == weights[0] for w in weights):
            return self.rng.randrange(len(weights))
        target = self.rng.random() * total
        for i, weight in enumerate(weights):
            target -= weight
            if target < 0 and weight > 0:
                return i
        return max(i for i, w in enumerate(weights) if w > 0)

    def _count_choice(self) -> None:
        self.choices += 1
        if self.choices > MAX_CHOICES:
            raise InvalidRequest(
                f"The prompt's wildcards and variants take more than {MAX_CHOICES:,} choices; "
                "its wildcard files name each other too often."
            )


def _checked_name(name: str) -> str:
    """A wildcard name as a path inside the wildcard folders; ``..``, an absolute path or
    a drive is refused, so a prompt can read no other file."""
    key = name.replace("\\", "/")
    parts = key.split("/")
    if key.startswith("/") or ":" in key or any(part in ("", ".", "..") for part in parts):
        raise InvalidRequest(
            f"The wildcard __{name}__ is not a name inside the wildcard folders "
            "(use names like __colors__ or __clothes/hats__)."
        )
    return key


def _count(spec: str, inner: str) -> tuple[int, int]:
    """The ``N``, ``N-M``, ``-M`` or ``N-`` before ``$$``: the least and most picks."""
    match = _COUNT.fullmatch(spec)
    if match is None or not (match.group(1) or match.group(3)):
        raise InvalidRequest(
            f"The variant {{{_short(inner)}}} has {spec.strip()!r} before '$$'; "
            "give a number of picks (2) or a range (1-3)."
        )
    low = int(match.group(1)) if match.group(1) else 1
    if not match.group(2):
        return low, low
    high = int(match.group(3)) if match.group(3) else MAX_CHOICES
    if high < low:
        raise InvalidRequest(f"The variant {{{_short(inner)}}} picks from {low} to {high}.")
    return low, high


def _closing(text: str, start: int) -> int | None:
    """The index of the bracket closing the one at ``start`` (nested brackets and escaped
    characters skipped), or None when it is never closed."""
    stack = [_PAIRS[text[start]]]
    index = start + 1
    while index < len(text):
        character = text[index]
        if character == "\\":
            index += 2
            continue
        if character in _PAIRS:
            stack.append(_PAIRS[character])
        elif character == stack[-1]:
            stack.pop()
            if not stack:
                return index
        index += 1
    return None


def _split(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` outside nested brackets and escapes."""
    parts: list[str] = []
    depth = 0
    start = index = 0
    while index < len(text):
        character = text[index]
        if character == "\\":
            index += 2
            continue
        if character in _PAIRS:
            depth += 1
        elif character in _PAIRS.values() and depth:
            depth -= 1
        elif depth == 0 and text.startswith(separator, index):
            parts.append(text[start:index])
            index += len(separator)
            start = index
            continue
        index += 1
    parts.append(text[start:])
    return parts


def _is_variant(inner: str) -> bool:
    return len(_split(inner, "|")) > 1 or len(_split(inner, "$$")) > 1


def _short(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:37]}…"


def _text_files(folder: Path) -> list[Path]:
    """The ``.txt`` files under ``folder``, sorted (hidden folders skipped)."""
    found: list[Path] = []
    try:
        for root, dirs, files in os.walk(folder, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [Path(root) / f for f in sorted(files) if f.lower().endswith(".txt")]
    except OSError:
        return found
    return found


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False
