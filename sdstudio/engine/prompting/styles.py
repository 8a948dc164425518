"""Prompt styles in AUTOMATIC1111's ``styles.csv`` format.

A style is a name with a prompt text and a negative prompt text. The file is CSV with
a header row (``name,prompt,negative_prompt``; A1111's first format had ``text`` for
``prompt``, and the negative column may be missing), UTF-8 with or without a byte
order mark, the usual CSV quoting, and rows whose name starts with ``#`` left out
(A1111 1.7+ uses them as headings).

Applying a style (A1111's ``merge_prompts``): a style text holding ``{prompt}`` has the
placeholder replaced by the user's prompt; any other is appended after ``", "`` (an
empty side is left out). Styles are applied in the order chosen, the negative prompt
alike. sdstudio applies them when a request is built: the request's prompts hold the
result and ``request.styles`` the names, a record that is never applied again.
:func:`extract_styles` is A1111's reverse ("find the styles in a prompt"), used when
pasting settings whose prompt holds a style's text.

Where styles come from: sdstudio's own file (``AppPaths.styles_file``), which the app
and ``sdstudio-cli styles`` edit, then, read-only, the ``styles.csv`` at the root of each
A1111 or Forge install among the model folders; an own style hides an A1111 style of
the same name. ``import_styles`` copies a file's styles into the own file.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.request import GenerationRequest

PLACEHOLDER = "{prompt}"
A1111_FILE = "styles.csv"
FIELDS = ("name", "prompt", "negative_prompt")
MAX_FILE_BYTES = 16 * 1024 * 1024
"""A styles file larger than this is refused (real ones are a few kilobytes)."""
_SPACES = re.compile("  +")


@dataclass(frozen=True, slots=True)
class Style:
    """One style: its name and the text it adds to the prompt and the negative prompt."""

    name: str
    prompt: str = ""
    negative_prompt: str = ""
    source: str = ""
    """The file it was read from (empty: not read from a file)."""


def merge_prompt(style_text: str, prompt: str) -> str:
    """A1111's ``merge_prompts``: the placeholder replaced, or the texts joined by ", "."""
    if PLACEHOLDER in style_text:
        return style_text.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def apply_styles(prompt: str, negative: str, styles: Sequence[Style]) -> tuple[str, str]:
    """The prompt and negative prompt with ``styles`` applied in order."""
    for style in styles:
        prompt = merge_prompt(style.prompt, prompt)
        negative = merge_prompt(style.negative_prompt, negative)
    return prompt, negative


def _extract_text(style_text: str, prompt: str) -> tuple[bool, str]:
    """A1111's ``extract_style_text_from_prompt``: whether the prompt ends with (or is
    wrapped by, around ``{prompt}``) the style text, and the prompt without it (runs of
    spaces counted as one)."""
    stripped = _SPACES.sub(" ", prompt.strip())
    text = _SPACES.sub(" ", style_text.strip())
    if PLACEHOLDER in text:
        left, right = text.split(PLACEHOLDER, 1)
        if stripped.startswith(left) and stripped.endswith(right):
            return True, stripped[len(left) : len(stripped) - len(right)]
    elif stripped.endswith(text):
        rest = stripped[: len(stripped) - len(text)]
        return True, rest[:-2] if rest.endswith(", ") else rest
    return False, prompt


def extract_styles(
    prompt: str, negative: str, styles: Iterable[Style]
) -> tuple[tuple[str, ...], str, str]:
    """A1111's ``extract_styles_from_prompt``: the styles whose text both prompts end
    with, taken off one at a time (last applied first), and the prompts left.

    The names come back in the order they were applied.
    """
    left = [style for style in styles if style.prompt or style.negative_prompt]
    found: list[str] = []
    while True:
        for style in left:
            matched, new_prompt = _extract_text(style.prompt, prompt)
            if not matched:
                continue
            matched, new_negative = _extract_text(style.negative_prompt, negative)
            if matched:
                prompt, negative = new_prompt, new_negative
                found.append(style.name)
                left.remove(style)
                break
        else:
            return tuple(reversed(found)), prompt, negative


def parse_styles(text: str, source: str = "") -> list[Style]:
    """The styles of a ``styles.csv`` text, in file order (a later row of the same name
    replaces an earlier one, as in A1111). Raises :class:`InvalidRequest` for a text
    with no ``name`` column."""
    text = text.removeprefix("\ufeff")
    reader = csv.DictReader(io.StringIO(text, newline=""), skipinitialspace=True)
    fields = [name.strip() for name in reader.fieldnames or ()]
    where = f" ({source})" if source else ""
    if "name" not in fields or not ({"prompt", "text"} & set(fields)):
        raise InvalidRequest(
            f"This styles file{where} has no name and prompt columns: its first row "
            "must be a header such as name,prompt,negative_prompt."
        )
    reader.fieldnames = fields
    found: dict[str, Style] = {}
    try:
        for row in reader:
            name = (row.get("name") or "").strip()
            if not name or name.startswith("#"):
                continue
            prompt = row.get("prompt") if "prompt" in fields else row.get("text")
            found[name] = Style(name, prompt or "", row.get("negative_prompt") or "", source)
    except csv.Error as error:
        raise InvalidRequest(f"This styles file{where} is not valid CSV: {error}.") from None
    return list(found.values())


def read_styles(path: Path) -> list[Style]:
    """The styles of a file; none for a file that does not exist. Raises
    :class:`InvalidRequest` for a file that cannot be read or is not a styles file."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InvalidRequest(f"The styles file {path} is too large to be a styles file.")
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as error:
        raise InvalidRequest(f"The styles file {path} cannot be read: {error}.") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidRequest(f"The styles file {path} is not UTF-8 text.") from None
    return parse_styles(text, str(path))


def format_styles(styles: Iterable[Style]) -> str:
    """A ``styles.csv`` text of ``styles`` (A1111's columns; quoted where needed)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(FIELDS)
    for style in styles:
        writer.writerow((style.name, style.prompt, style.negative_prompt))
    return out.getvalue()


def write_styles(path: Path, styles: Iterable[Style]) -> None:
    """Write the own styles file whole (through a temporary file, so a failed write
    leaves the old one), with A1111's byte order mark so that A1111 reads it too."""
    styles = list(styles)
    check_names(styles)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(format_styles(styles), encoding="utf-8-sig", newline="")
        os.replace(temporary, path)
    except OSError as error:
        raise InvalidRequest(f"The styles file {path} cannot be written: {error}.") from None


def check_names(styles: Sequence[Style]) -> None:
    """Refuse styles without a name, with a name used twice, or starting with ``#``."""
    seen: set[str] = set()
    for style in styles:
        name = style.name.strip()
        if not name:
            raise InvalidRequest("Every style needs a name.")
        if name.startswith("#"):
            raise InvalidRequest(f"A style name cannot start with '#' ({name!r}).")
        if name in seen:
            raise InvalidRequest(f"Two styles are named {name!r}: names must differ.")
        seen.add(name)


def a1111_style_files(folders: Iterable[str | Path]) -> list[Path]:
    """The ``styles.csv`` of each A1111 or Forge install among ``folders`` (the model
    folders of the settings) that has one."""
    from sdstudio.engine.models import layouts

    found = []
    for folder in folders:
        root = Path(folder).expanduser()
        if layouts.detect_tool(root) == "a1111" and (root / A1111_FILE).is_file():
            found.append(root / A1111_FILE)
    return found


def all_styles(own: Path, others: Iterable[Path] = ()) -> list[Style]:
    """The own file's styles, then those of the other files whose names are not taken."""
    styles = read_styles(own)
    taken = {style.name for style in styles}
    for path in others:
        for style in read_styles(path):
            if style.name not in taken:
                styles.append(style)
                taken.add(style.name)
    return styles


def find_styles(names: Sequence[str], styles: Sequence[Style]) -> list[Style]:
    """The styles named, in the order named; an unknown name is refused, naming those
    there are."""
    by_name = {style.name: style for style in styles}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        known = ", ".join(sorted(by_name)) or "none (add some with 'sdstudio-cli styles')"
        raise InvalidRequest(f"Unknown style {unknown[0]!r}; styles: {known}.")
    return [by_name[name] for name in names]


def import_styles(source: Path, own: Path) -> tuple[int, int]:
    """Copy the styles of ``source`` (an A1111 ``styles.csv``) into the own file: new
    names are added, names already there take the imported text. Returns the counts of
    added and replaced styles."""
    if not source.is_file():
        raise InvalidRequest(f"No styles file at {source}.")
    imported = read_styles(source)
    mine = {style.name: style for style in read_styles(own)}
    added = sum(1 for style in imported if style.name not in mine)
    replaced = sum(
        1 for style in imported if style.name in mine and _texts(style) != _texts(mine[style.name])
    )
    for style in imported:
        mine[style.name] = _own(style)
    write_styles(own, mine.values())
    return added, replaced


def _own(style: Style) -> Style:
    return Style(style.name, style.prompt, style.negative_prompt)


def _texts(style: Style) -> tuple[str, str]:
    return style.prompt, style.negative_prompt


def styled_request(request: GenerationRequest, styles: Sequence[Style]) -> GenerationRequest:
    """``request`` with ``styles`` applied to its prompts and their names added to
    ``request.styles`` (the prompts then hold the text; the names are only a record)."""
    if not styles:
        return request
    prompt, negative = apply_styles(request.prompt, request.negative_prompt, styles)
    names = (*request.styles, *(style.name for style in styles))
    return request.replace(prompt=prompt, negative_prompt=negative, styles=names)
