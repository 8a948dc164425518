"""AUTOMATIC1111's prompt syntax: emphasis, ``BREAK`` and extra-network tags.

:func:`parse_prompt_attention` is a faithful port of A1111's
``modules/prompt_parser.parse_prompt_attention``:

- ``(text)`` multiplies the attention to *text* by 1.1, ``[text]`` divides it by 1.1;
- ``(text:1.3)`` multiplies it by 1.3; nested brackets multiply;
- ``\\(`` ``\\)`` ``\\[`` ``\\]`` and ``\\\\`` are literal characters;
- a closing bracket with no opening one is plain text, and brackets still open
  at the end apply to everything after them;
- ``BREAK`` (a whole word, in capitals) ends the current 75-token chunk; it
  comes back as the run ``("BREAK", -1.0)``.

One deviation: A1111 raises on a weight such as ``(a:1.2.3)`` that its
pattern matches but ``float`` cannot read; here that text is kept as
written instead.

:func:`extract_extra_networks` removes ``<lora:name:w>``, ``<hypernet:name:w>``
and any other ``<kind:...>`` tag from the text, as A1111 does before the
prompt reaches the text encoder, and returns them for the code that applies
LoRAs. Prompt editing (``[a:b:0.5]``) and alternation (``[a|b]``) are read
before this module, by :mod:`sdstudio.engine.prompting.schedules`, which turns such
a prompt into plain prompts per step; each of those comes here as usual, and
:mod:`sdstudio.engine.prompting.scheduled_embeds` switches their embeddings between
steps.

:func:`check_prompt_length` holds a prompt to :data:`MAX_PROMPT_CHARACTERS`
and :data:`MAX_PROMPT_CHUNKS`. Neither A1111 nor ComfyUI sets a limit, but
every chunk of 75 tokens is encoded on its own and widens the cross-attention
context by 77 tokens, so an unbounded prompt costs unbounded time and memory.
The longest prompts people write run to several hundred tokens (a handful of
chunks); 32 chunks (2,400 tokens) leaves ample room for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sdstudio.engine.errors import InvalidRequest

BREAK = "BREAK"
BREAK_WEIGHT = -1.0
ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
CHUNK_TOKENS = 75
MAX_PROMPT_CHARACTERS = 20_000
"""The longest prompt (or negative prompt) accepted, in characters."""
MAX_PROMPT_CHUNKS = 32
"""The most 75-token chunks a prompt (or negative prompt) may make."""
_CHUNK_LIMIT = f"{MAX_PROMPT_CHUNKS} chunks ({MAX_PROMPT_CHUNKS * CHUNK_TOKENS:,} tokens)"

_ATTENTION = re.compile(
    r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""",
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
_LORA_KINDS = ("lora", "lyco")


@dataclass(frozen=True, slots=True)
class ExtraNetwork:
    """A ``<kind:name:weight>`` tag found in a prompt."""

    kind: str
    """``lora``, ``lyco``, ``hypernet`` or another network type."""
    name: str
    weight: float
    """The first number after the name (the text-encoder weight for LoRAs); 1.0 when absent."""


@dataclass(frozen=True, slots=True)
class ParsedPrompt:
    """A prompt split into weighted runs, with its extra-network tags removed."""

    runs: list[tuple[str, float]]
    """(text, weight) runs as :func:`parse_prompt_attention` returns them."""
    networks: list[ExtraNetwork]

    @property
    def loras(self) -> list[tuple[str, float]]:
        """The (name, weight) of each ``<lora:...>`` (or ``<lyco:...>``) tag."""
        return [(n.name, n.weight) for n in self.networks if n.kind in _LORA_KINDS]

    @property
    def hypernets(self) -> list[tuple[str, float]]:
        """The (name, weight) of each ``<hypernet:...>`` tag."""
        return [(n.name, n.weight) for n in self.networks if n.kind == "hypernet"]

    @property
    def text(self) -> str:
        """The text the encoder reads, without emphasis markup (BREAKs kept as words)."""
        return "".join(f" {BREAK} " if is_break(run) else run[0] for run in self.runs)

    @property
    def is_plain(self) -> bool:
        """Whether every run has weight 1 and there is no ``BREAK``."""
        return all(weight == 1.0 for _, weight in self.runs)


def parse_prompt(text: str) -> ParsedPrompt:
    """Remove the extra-network tags, then parse the emphasis syntax."""
    cleaned, networks = extract_extra_networks(text)
    return ParsedPrompt(parse_prompt_attention(cleaned), networks)


def check_prompt_length(text: str, what: str = "prompt") -> None:
    """Raise :class:`InvalidRequest` naming the limit when ``text`` is too long to encode.

    Characters are counted first (at once, before any parsing); then ``BREAK``s,
    each of which ends a chunk. The exact number of chunks needs the model's
    tokenizer: :func:`check_chunk_count` is called where the prompt is tokenized.
    """
    if len(text) > MAX_PROMPT_CHARACTERS:
        raise InvalidRequest(
            f"The {what} is too long: {len(text):,} characters, and the limit is "
            f"{MAX_PROMPT_CHARACTERS:,}."
        )
    runs = parse_prompt(text).runs
    breaks = [i for i, run in enumerate(runs) if is_break(run)]
    if not breaks:
        return
    # Each BREAK ends a chunk; words after the last one make one more.
    tail = "".join(run[0] for run in runs[breaks[-1] + 1 :])
    chunks = len(breaks) + any(character.isalnum() for character in tail)
    if chunks > MAX_PROMPT_CHUNKS:
        raise InvalidRequest(
            f"The {what} is too long: its BREAKs split it into {chunks:,} chunks (of up to "
            f"{CHUNK_TOKENS} tokens each), and the limit is {_CHUNK_LIMIT}."
        )


def check_chunk_count(chunks: int, what: str = "prompt") -> None:
    """Raise :class:`InvalidRequest` when a prompt makes more than :data:`MAX_PROMPT_CHUNKS`
    chunks of 75 tokens."""
    if chunks > MAX_PROMPT_CHUNKS:
        raise InvalidRequest(
            f"The {what} is too long: it makes {chunks:,} chunks (of up to {CHUNK_TOKENS} "
            f"tokens each), and the limit is {_CHUNK_LIMIT}."
        )


def is_break(run: tuple[str, float]) -> bool:
    """Whether a run returned by :func:`parse_prompt_attention` is a ``BREAK``."""
    return run[0] == BREAK and run[1] == BREAK_WEIGHT


def extract_extra_networks(text: str) -> tuple[str, list[ExtraNetwork]]:
    """Remove every ``<kind:args>`` tag; return the text left and the tags found.

    Like A1111, the tag is replaced by nothing (the spaces around it stay).
    """
    found: list[ExtraNetwork] = []

    def take(match: re.Match[str]) -> str:
        items = match.group(2).split(":")
        weight = 1.0
        if len(items) > 1:
            try:
                weight = float(items[1])
            except ValueError:
                weight = 1.0
        found.append(ExtraNetwork(match.group(1), items[0], weight))
        return ""

    return _EXTRA_NETWORK.sub(take, text), found


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) runs, exactly as A1111 does.

    >>> parse_prompt_attention('an (important) word')
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    >>> parse_prompt_attention('(unbalanced')
    [('unbalanced', 1.1)]
    """
    res: list[list[str | float]] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start: int, multiplier: float) -> None:
        for run in res[start:]:
            run[1] = float(run[1]) * multiplier

    def add_text(part: str) -> None:
        for i, piece in enumerate(_BREAK.split(part)):
            if i > 0:
                res.append([BREAK, BREAK_WEIGHT])
            res.append([piece, 1.0])

    for match in _ATTENTION.finditer(text):
        token = match.group(0)
        weight = match.group(1)
        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token == "(":
            round_brackets.append(len(res))
        elif token == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            try:
                value = float(weight)
            except ValueError:
                add_text(token)
            else:
                multiply_range(round_brackets.pop(), value)
        elif token == ")" and round_brackets:
            multiply_range(round_brackets.pop(), ROUND_MULTIPLIER)
        elif token == "]" and square_brackets:
            multiply_range(square_brackets.pop(), SQUARE_MULTIPLIER)
        else:
            add_text(token)

    for position in round_brackets:
        multiply_range(position, ROUND_MULTIPLIER)
    for position in square_brackets:
        multiply_range(position, SQUARE_MULTIPLIER)

    if not res:
        res = [["", 1.0]]

    # Merge neighbouring runs of the same weight.
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] = str(res[i][0]) + str(res[i + 1][0])
            res.pop(i + 1)
        else:
            i += 1
    return [(str(run[0]), float(run[1])) for run in res]


def toggle_lora_tag(prompt: str, name: str, weight: float = 1.0, kind: str = "lora") -> str:
    """Add ``<lora:name:weight>`` at the end of ``prompt``, or remove the tags naming it.

    The toggle of a click on a LoRA card in AUTOMATIC1111 (which also appends
    after a space); names match in any case, as files are found. ``kind="hypernet"``
    toggles a hypernetwork's ``<hypernet:name:weight>`` the same way.
    """
    kinds = _LORA_KINDS if kind in _LORA_KINDS else (kind,)

    def names_it(match: re.Match[str]) -> bool:
        found, arguments = match.group(1), match.group(2)
        return found in kinds and arguments.split(":")[0].lower() == name.lower()

    if any(names_it(match) for match in _EXTRA_NETWORK.finditer(prompt)):
        return _tidy(_EXTRA_NETWORK.sub(lambda m: "" if names_it(m) else m.group(0), prompt))
    return _append(prompt, f"<{kind}:{name}:{weight:g}>")


def toggle_word(prompt: str, word: str) -> str:
    """Add ``word`` (an embedding's name) at the end of ``prompt``, or remove it where it is."""
    pattern = re.compile(rf"(?<![\w-]){re.escape(word)}(?![\w-])", re.IGNORECASE)
    if pattern.search(prompt):
        return _tidy(pattern.sub("", prompt))
    return _append(prompt, word)


def _append(prompt: str, text: str) -> str:
    kept = prompt.rstrip()
    return f"{kept} {text}" if kept else text


def _tidy(text: str) -> str:
    """Remove the doubled commas and spaces that taking a part out leaves."""
    text = re.sub(r"[ \t]*,(?:[ \t]*,)+", ",", text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r"[ \t]+,", ",", text)
    return text.strip().strip(",").strip()
