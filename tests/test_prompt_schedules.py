"""Prompt editing and alternation schedules, as A1111's
``get_learned_conditioning_prompt_schedules`` makes them."""

from __future__ import annotations

import pytest

from sdstudio.engine.prompting.schedules import (
    has_scheduling,
    prompt_schedule,
    schedule_steps,
    text_at,
)


def alternating(steps: int, *texts: str) -> list[tuple[int, str]]:
    return [(step, texts[(step - 1) % len(texts)]) for step in range(1, steps + 1)]


CASES = [
    # A1111's own examples (10 steps).
    ("test", 10, [(10, "test")]),
    ("a [b:3]", 10, [(3, "a "), (10, "a b")]),
    ("a [b: 3]", 10, [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", 10, [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", 10, [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", 10, [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", 10, [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [unbalanced", 10, [(10, "a [unbalanced")]),
    ("a [b:.5] c", 10, [(5, "a  c"), (10, "a b c")]),
    ("((a][:b:c [d:3]", 10, [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("[a|(b:1.1)]", 10, alternating(10, "a", "(b:1.1)")),
    ("[fe|]male", 10, alternating(10, "female", "male")),
    ("[fe|||]male", 10, alternating(10, "female", "male", "male", "male")),
    # Fractions and steps.
    ("a [b:c:0.5] d", 20, [(10, "a b d"), (20, "a c d")]),
    ("[b:c:10]", 20, [(10, "b"), (20, "c")]),
    ("x [b::0.25]", 20, [(5, "x b"), (20, "x ")]),
    ("[:c:3]", 20, [(3, ""), (20, "c")]),
    ("[a:[b:c:5]:10]", 20, [(5, "a"), (10, "a"), (20, "c")]),
    ("[a:[b:c:15]:10]", 20, [(10, "a"), (15, "b"), (20, "c")]),
    ("[a:b:0.33]", 10, [(3, "a"), (10, "b")]),  # int() truncates
    ("[a:b:1.0]", 10, [(10, "a")]),  # a decimal point makes 1.0 the whole pass
    ("[a:b:1]", 10, [(1, "a"), (10, "b")]),
    ("[a:b:25]", 10, [(10, "a")]),  # past the end: the whole pass
    ("[a:b:0]", 10, [(10, "b")]),  # step 0 adds no switch, and step >= 1 reads "b"
    ("[a:b:-3]", 10, [(10, "b")]),
    ("[a:b:0.5]", 1, [(1, "b")]),  # int(0.5) is 0
    ("[a|b]", 1, [(1, "a")]),
    ("[a:b: 4 ]", 10, [(4, "a"), (10, "b")]),
    ("[a:b:1e1]", 20, [(10, "a"), (20, "b")]),  # no decimal point: a step
    # Emphasis, BREAK and embeddings are text to the schedule.
    (
        "[(red:1.3):blue:2] BREAK [x|y]",
        3,
        [(1, "(red:1.3) BREAK x"), (2, "(red:1.3) BREAK y"), (3, "blue BREAK x")],
    ),
    ("[(a:b:3)]", 10, [(10, "[(a:b:3)]")]),
    # Escapes stay text (with their backslash, for the emphasis parser).
    ("\\[a:b:3\\]", 10, [(10, "\\[a:b:3\\]")]),
    ("\\[a [b:c:3]", 10, [(3, "\\[a b"), (10, "\\[a c")]),
    # A "|" outside brackets is outside the grammar: the prompt stays as it is.
    ("a | [b:c:3]", 10, [(10, "a | [b:c:3]")]),
    # Brackets that close nothing are text.
    ("[a:b:c:3]", 10, [(10, "[a:b:c:3]")]),
    ("[a:b:x]", 10, [(10, "[a:b:x]")]),
    # LoRA tags apply to the whole run: they leave the schedule.
    ("<lora:style:0.8> [a:b:2]", 4, [(2, " a"), (4, " b")]),
]


@pytest.mark.parametrize(("prompt", "steps", "expected"), CASES)
def test_schedules_match_a1111(prompt: str, steps: int, expected: list[tuple[int, str]]) -> None:
    assert prompt_schedule(prompt, steps) == expected


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        # A1111's hires examples (10 first-pass steps, 10 hires steps).
        ("a [b:.5] c", [(10, "a b c")]),
        ("a [b:1.5] c", [(5, "a  c"), (10, "a b c")]),
        # Steps count on from the first pass: 13 is hires step 3.
        ("[a:b:13]", [(3, "a"), (10, "b")]),
        ("[a:b:5]", [(10, "b")]),
        ("[a|b]", alternating(10, "a", "b")),
    ],
)
def test_hires_passes_count_on_from_the_first_pass(
    prompt: str, expected: list[tuple[int, str]]
) -> None:
    assert prompt_schedule(prompt, 10, 10) == expected


def test_model_calls_read_the_schedule_as_a1111s_sampler() -> None:
    """Calls count from 0 and take the first entry ending at or after them."""
    schedule = prompt_schedule("a [b:c:0.5] d", 20)
    texts = [text_at(schedule, call) for call in range(20)]
    assert texts == ["a b d"] * 11 + ["a c d"] * 9
    alternation = prompt_schedule("[x|y]", 4)
    assert [text_at(alternation, call) for call in range(4)] == ["x", "x", "y", "x"]


def test_second_order_samplers_count_two_calls_a_step() -> None:
    assert schedule_steps(20, "Heun") == 40
    assert schedule_steps(20, "DPM++ SDE") == 40
    assert schedule_steps(20, "Euler a") == 20
    assert schedule_steps(20, "DPM++ 2M") == 20


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a plain prompt", False),
        ("(emphasis:1.2) [less] BREAK more", False),
        ("\\[a:b:3\\]", False),
        ("<lora:x:0.5> a", False),
        ("a [b:c:3]", True),
        ("a [b|c]", True),
        ("[b::0.5]", True),
        ("a | [b:c:3]", False),
    ],
)
def test_has_scheduling(prompt: str, expected: bool) -> None:
    assert has_scheduling(prompt) is expected


def test_pathological_prompts_stay_text_quickly() -> None:
    deep = "[" * 5000 + "a:b:3" + "]" * 5000
    assert prompt_schedule(deep, 10) == [(10, deep)]
    assert prompt_schedule("[a:" * 3000, 10) == [(10, "[a:" * 3000)]
