"""Metadata printed to a terminal cannot drive it: escape sequences, control characters and
bidirectional overrides in an image's settings are shown escaped by ``info``, ``history list``
and ``history show``, in notices and in errors; ``--json`` keeps every value exact."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.cli import main
from sdstudio.cli.report import Reporter, json_text, terminal_text
from sdstudio.engine.history import HistoryStore
from sdstudio.engine.metadata import ImageRecord, read_image_settings
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.request import GenerationRequest

OSC52 = "\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07"  # writes the clipboard
CLEAR = "\x1b[2J\x1b[H"
C1_CSI = "\x9b31m"  # CSI as one C1 character
C1_OSC = "\x9d0;title\x9c"
HOSTILE = f"a cat{OSC52}{CLEAR}\rforged line{C1_CSI}{C1_OSC} \u202egnp.exe\u202c \u2066x\u2069"
UNSAFE = ["\x1b", "\x07", "\r", "\x9b", "\x9c", "\x9d", "\u202e", "\u202c", "\u2066", "\u2069"]


def assert_safe(text: str) -> None:
    assert not [c for c in UNSAFE if c in text], repr(text)
    assert not any(0x80 <= ord(c) <= 0x9F for c in text), repr(text)


def a1111_image(path: Path, prompt: str, model: str = "m") -> Path:
    info = PngInfo()
    # iTXt (not Latin-1) keeps every character as written.
    info.add_itxt("parameters", f"{prompt}\nSteps: 2, Seed: 5, Size: 64x64, Model: {model}")
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    return path


def test_terminal_text_escapes_what_drives_a_terminal() -> None:
    shown = terminal_text(f"{HOSTILE}\n\ttabbed\ud800")
    assert_safe(shown)
    assert "\\x1b]52;c;" in shown and "\\x9b31m" in shown and "\\u202e" in shown
    assert "\\r" not in shown and "\\x0d" in shown
    assert shown.endswith("\n\ttabbed\\ud800")  # newline and tab kept
    assert terminal_text("plain text, ünïcode, 日本語 ✓") == "plain text, ünïcode, 日本語 ✓"


def test_json_escapes_controls_and_decodes_to_the_same_value() -> None:
    value = {"prompt": HOSTILE, "bad": "\ud800", "keep": "日本語"}
    text = json_text(value, indent=2)
    assert_safe(text)
    assert json.loads(text) == value
    assert "日本語" in text


def test_info_prints_escaped_text_and_exact_json(capsys, tmp_path: Path) -> None:
    path = a1111_image(tmp_path / "hostile.png", HOSTILE, model=f"model{CLEAR}")
    assert main(["info", str(path)]) == 0
    captured = capsys.readouterr()
    assert_safe(captured.out + captured.err)
    assert "Prompt: a cat" in captured.out and "forged line" in captured.out
    assert main(["info", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert_safe(out)
    settings = read_image_settings(path)
    data = json.loads(out)
    assert data["request"] == settings.request.to_dict()
    assert data["parameters"] == settings.parameters


def test_errors_and_notices_that_quote_metadata_are_escaped(capsys, tmp_path: Path) -> None:
    path = a1111_image(tmp_path / "hostile.png", "a cat", model=f"evil{C1_CSI}{OSC52}")
    assert main(["rerun", str(path)]) == 1
    captured = capsys.readouterr()
    assert "error:" in captured.err and "evil" in captured.err
    assert_safe(captured.out + captured.err)
    err = io.StringIO()
    Reporter(False, io.StringIO(), err).event("notice", f"note: {HOSTILE}", message=HOSTILE)
    assert_safe(err.getvalue())
    out = io.StringIO()
    Reporter(True, out, io.StringIO()).event("notice", f"note: {HOSTILE}", message=HOSTILE)
    assert_safe(out.getvalue())
    assert json.loads(out.getvalue())["message"] == HOSTILE


@pytest.fixture
def hostile_entry(tmp_path: Path) -> int:
    """A history entry whose prompt, negative prompt and model name hold escape sequences."""
    path = tmp_path / "made.png"
    Image.new("RGB", (64, 64)).save(path)
    request = GenerationRequest(
        model="/models/m", prompt=HOSTILE, negative_prompt=CLEAR, width=64, height=64, seed=5
    )
    record = ImageRecord(request=request, model_name=f"m{C1_OSC}", created="2024-05-01T10:00:00")
    with HistoryStore(AppPaths.default().history_db) as store:
        return store.add(path, record)


def test_history_list_and_show_print_escaped_text(capsys, hostile_entry: int) -> None:
    for command in (["history", "list"], ["history", "show", str(hostile_entry)]):
        assert main(command) == 0
        captured = capsys.readouterr()
        assert_safe(captured.out + captured.err)
        assert "a cat" in captured.out
    assert main(["history", "show", str(hostile_entry), "--json"]) == 0
    out = capsys.readouterr().out
    assert_safe(out)
    data = json.loads(out)
    assert data["prompt"] == HOSTILE and data["request"]["negative_prompt"] == CLEAR
    assert main(["history", "list", "--json"]) == 0
    out = capsys.readouterr().out
    assert_safe(out)
    assert json.loads(out)["entries"][0]["model"] == f"m{C1_OSC}"
