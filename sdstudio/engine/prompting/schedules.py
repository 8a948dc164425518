"""AUTOMATIC1111's prompt editing ``[from:to:when]`` and alternation ``[a|b]``.

:func:`prompt_schedule` turns a prompt into the list of ``(end_at_step, text)`` that
A1111's ``prompt_parser.get_learned_conditioning_prompt_schedules`` gives, with the
same grammar and the same arithmetic (its "new" scheduling, the default since 1.7):

- ``[from:to:when]`` reads *from* up to step *when*, then *to*; ``[to:when]`` adds
  *to* after *when*; ``[from::when]`` drops *from* after it. Either side may be
  empty, may hold emphasis ``(x:1.2)``, and may nest further brackets.
- *when* written with a decimal point is a fraction of the steps
  (``int(when * steps)``), any other number a step (``int(when)``); a number of
  steps over the pass is the whole pass, and a step under 1 adds no switch.
  ``[a:b:1.0]`` is therefore *a* throughout, and ``[a:b:1]`` switches after step 1.
- In a hires pass (``hires_steps`` given) a step counts on from the first pass's
  steps (``[a:b:25]`` after 20 first-pass steps switches after hires step 5) and a
  fraction from 1.0 (``1.5``: half of the hires steps); ordinary fractions below 1
  and steps within the first pass give *to* throughout the hires pass.
- ``[a|b|c]`` takes *a* at step 1, *b* at 2, *c* at 3, *a* at 4… (empty options
  allowed: ``[fe|]male``), which adds an entry for every step.
- ``\\[`` and the other escapes stay text (the emphasis parser reads them later).
- Bracket characters that form no construct are kept as text, as A1111's grammar
  lets stray ``[ ] ( ) :`` stand at the top level; a ``|`` outside brackets, or a
  construct that cannot close, leaves the whole prompt as it is (A1111 catches its
  parser's error the same way).

How the sampler reads the schedule is A1111's ``reconstruct_cond_batch``: the
denoiser's calls are counted from 0 within a pass, and call *k* uses the first entry
whose ``end_at_step`` is at least *k* (:func:`text_at`). The schedule's steps are
the sampler's model calls: twice the steps for the second-order samplers
(:data:`SECOND_ORDER_SAMPLERS`, A1111's ``total_steps``).

Extra-network tags (``<lora:…>``) are taken out before scheduling, as A1111 takes
them out before it builds the conditioning: they apply to the whole image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sdstudio.engine.prompts import extract_extra_networks

SECOND_ORDER_SAMPLERS = frozenset({"Heun", "DPM2", "DPM2 a", "DPM++ 2S a", "DPM++ SDE"})
"""Samplers A1111 marks ``second_order``: its schedules count two model calls a step."""

_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+", re.S)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?\d+[eE][+-]?\d+")
_SPACE = re.compile(r"\s+")
_STRAY = "[]():"
_MAX_DEPTH = 100
"""Brackets nested deeper than this leave the prompt as it is (no person writes them)."""


@dataclass(slots=True)
class _Scheduled:
    before: list[_Node] | None
    after: list[_Node]
    number: str
    when: int = 0


@dataclass(slots=True)
class _Alternate:
    options: list[list[_Node]] = field(default_factory=list)


_Node = str | _Scheduled | _Alternate
"""Text, a ``[from:to:when]`` or a ``[a|b]``; emphasis brackets stay text."""


class _Failed(Exception):
    """The prompt is not in the grammar: A1111 keeps it as it is."""


def has_scheduling(prompt: str) -> bool:
    """Whether ``prompt`` holds prompt editing or alternation (cheap for plain prompts)."""
    if "[" not in prompt:
        return False
    try:
        nodes = _Parser(_strip_networks(prompt)).parse()
    except _Failed:
        return False
    return any(isinstance(node, _Scheduled | _Alternate) for node in _walk(nodes))


def prompt_schedule(
    prompt: str, steps: int, hires_steps: int | None = None
) -> list[tuple[int, str]]:
    """``(end_at_step, text)`` pairs for a pass of ``steps`` model calls (with
    ``hires_steps``: a hires pass of that many, after a first pass of ``steps``).

    The last entry ends at the pass's steps. A prompt without editing or alternation
    gives ``[(steps, prompt)]`` (extra-network tags removed).
    """
    text = _strip_networks(prompt)
    base, offset, fraction_offset = steps, 0, 0.0
    if hires_steps is not None:
        base, offset, fraction_offset = hires_steps, steps, 1.0
    try:
        nodes = _Parser(text).parse()
    except _Failed:
        return [(base, text)]
    ends = {base}
    for node in _walk(nodes):
        if isinstance(node, _Scheduled):
            value = float(node.number)
            # A1111 tells a fraction from a step by the decimal point alone.
            value = (value - fraction_offset) * base if "." in node.number else value - offset
            node.when = base if value >= base else int(value)
            if node.when >= 1:
                ends.add(node.when)
        elif isinstance(node, _Alternate):
            ends.update(range(1, base + 1))
    return [(end, _text(nodes, end)) for end in sorted(ends)]


def text_at(schedule: list[tuple[int, str]], call: int) -> str:
    """The text the sampler's model call ``call`` (counted from 0 in the pass) reads."""
    for end, text in schedule:
        if call <= end:
            return text
    return schedule[0][1]  # past the schedule: A1111 falls back to the first entry


def schedule_steps(steps: int, sampler: str) -> int:
    """The model calls A1111 counts for ``steps`` steps of ``sampler``."""
    base = sampler.split(" (", 1)[0]
    return steps * 2 if base in SECOND_ORDER_SAMPLERS else steps


def _strip_networks(prompt: str) -> str:
    return extract_extra_networks(prompt)[0]


def _walk(nodes: list[_Node]) -> list[_Node]:
    found: list[_Node] = []
    for node in nodes:
        found.append(node)
        if isinstance(node, _Scheduled):
            found += _walk(node.before or []) + _walk(node.after)
        elif isinstance(node, _Alternate):
            for option in node.options:
                found += _walk(option)
    return found


def _text(nodes: list[_Node], step: int) -> str:
    parts: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, _Scheduled):
            parts.append(_text(node.before or [], step) if step <= node.when else "")
            if step > node.when:
                parts.append(_text(node.after, step))
        else:
            parts.append(_text(node.options[(step - 1) % len(node.options)], step))
    return "".join(parts)


class _Parser:
    """A recursive-descent reading of A1111's grammar::

        start: (prompt | /[][():]/+)*
        prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
        emphasized: "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"
        scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
        alternate: "[" prompt ("|" [prompt])+ "]"

    Inside brackets a construct either closes or fails; at the top level a bracket
    that opens nothing is text.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._depth = 0
        self._brackets: dict[int, tuple[list[_Node], int] | None] = {}

    def parse(self) -> list[_Node]:
        nodes: list[_Node] = []
        position = 0
        while position < len(self.text):
            found, position = self._prompt(position)
            nodes += found
            if position < len(self.text):
                if self.text[position] not in _STRAY:
                    raise _Failed  # a "|" outside brackets
                nodes.append(self.text[position])
                position += 1
        return nodes

    def _prompt(self, position: int) -> tuple[list[_Node], int]:
        """Read ``prompt`` from ``position``: as many items as parse."""
        nodes: list[_Node] = []
        text = self.text
        while position < len(text):
            match = _PLAIN.match(text, position)
            if match:
                nodes.append(match.group(0))
                position = match.end()
                continue
            if text[position] in "([":
                if position not in self._brackets:
                    self._brackets[position] = self._bracket(position)
                parsed = self._brackets[position]
                if parsed is not None:
                    nodes += parsed[0]
                    position = parsed[1]
                    continue
            break
        return nodes, position

    def _bracket(self, start: int) -> tuple[list[_Node], int] | None:
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                raise _Failed
            return self._construct(start)
        finally:
            self._depth -= 1

    def _construct(self, start: int) -> tuple[list[_Node], int] | None:
        text = self.text
        first, position = self._prompt(start + 1)
        if position >= len(text):
            return None
        if text[start] == "(":
            if text[position] == ")":
                return ["(", *first, ")"], position + 1
            if text[position] == ":":
                second, end = self._prompt(position + 1)
                if end < len(text) and text[end] == ")":
                    return ["(", *first, ":", *second, ")"], end + 1
            return None
        mark = text[position]
        if mark == "]":
            return ["[", *first, "]"], position + 1
        if mark == "|":
            options = [first]
            while position < len(text) and text[position] == "|":
                option, position = self._prompt(position + 1)
                options.append(option)
            if position < len(text) and text[position] == "]":
                return [_Alternate(options)], position + 1
            return None
        if mark == ":":
            scheduled = self._when(position)
            if scheduled is not None:  # [to:when]
                return [_Scheduled(None, first, scheduled[0])], scheduled[1]
            second, position = self._prompt(position + 1)
            if position < len(text) and text[position] == ":":
                scheduled = self._when(position)
                if scheduled is not None:  # [from:to:when]
                    return [_Scheduled(first, second, scheduled[0])], scheduled[1]
        return None

    def _when(self, colon: int) -> tuple[str, int] | None:
        """``":" [WHITESPACE] NUMBER [WHITESPACE] "]"`` from the colon at ``colon``."""
        position = colon + 1
        space = _SPACE.match(self.text, position)
        if space:
            position = space.end()
        number = _NUMBER.match(self.text, position)
        if not number:
            return None
        position = number.end()
        space = _SPACE.match(self.text, position)
        if space:
            position = space.end()
        if position < len(self.text) and self.text[position] == "]":
            return number.group(0), position + 1
        return None
