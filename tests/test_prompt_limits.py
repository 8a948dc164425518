"""Prompt length limits: characters and 75-token chunks, refused at once with the limit
named wherever a prompt enters (CLI, re-runs of images, the engine, the app), while the
settings of such an image stay readable; prompts of several hundred tokens still work."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.cli import main
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import read_image_settings
from sdstudio.engine.metadata.record import ImageRecord
from sdstudio.engine.prompt_embeds import tokenize_chunks
from sdstudio.engine.prompts import MAX_PROMPT_CHUNKS, check_prompt_length
from sdstudio.engine.request import GenerationRequest

HUGE = "BREAK " * 20000
CHARACTERS = "120,000 characters, and the limit is 20,000"
CHUNKS = re.escape("and the limit is 32 chunks (2,400 tokens).")


def words(count: int) -> str:
    """``count`` one-token words for the tiny tokenizer."""
    return " ".join(["q"] * count)


def request_for(model: Path, prompt: str, **changes: object) -> GenerationRequest:
    values: dict = {"steps": 1, "width": 64, "height": 64, "seed": 3, **changes}
    return GenerationRequest(model=str(model), prompt=prompt, **values)


def image_with_record(path: Path, request: GenerationRequest) -> Path:
    info = PngInfo()
    info.add_text("sdstudio", ImageRecord(request=request, model_name="tiny-sd").to_json())
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    return path


def test_limits_are_named_and_checked_without_parsing_a_huge_prompt() -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidRequest, match=f"The prompt is too long: {CHARACTERS}"):
        check_prompt_length(HUGE)
    with pytest.raises(InvalidRequest, match=f"into 33 chunks .*{CHUNKS}"):
        check_prompt_length("a BREAK " * 32 + "b")
    assert time.perf_counter() - started < 1
    check_prompt_length("a BREAK " * 31 + "b")  # exactly 32 chunks
    check_prompt_length(words(300))
    # Such a request is built (to be read and shown) but does not run.
    request = GenerationRequest(model="m", prompt="a cat", negative_prompt=HUGE)
    with pytest.raises(InvalidRequest, match=f"The negative prompt is too long: {CHARACTERS}"):
        request.check_prompts()


def test_chunks_are_counted_exactly_where_the_prompt_is_tokenized(tiny_model: Path) -> None:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_model / "tokenizer")
    assert len(tokenize_chunks(tokenizer, words(300))) == 4
    assert len(tokenize_chunks(tokenizer, words(75 * MAX_PROMPT_CHUNKS))) == MAX_PROMPT_CHUNKS
    with pytest.raises(InvalidRequest, match=f"it makes 33 chunks .*{CHUNKS}"):
        tokenize_chunks(tokenizer, words(75 * MAX_PROMPT_CHUNKS + 1))


def test_the_engine_refuses_before_loading_anything(
    engine, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("a pipeline was loaded")

    monkeypatch.setattr(engine.pipelines, "pipeline", no_loading)
    started = time.perf_counter()
    with pytest.raises(InvalidRequest, match=CHARACTERS):
        next(engine.generate(request_for(tiny_model, HUGE)))
    assert time.perf_counter() - started < 1


def test_a_prompt_over_the_chunk_limit_is_refused_before_denoising(
    engine, tiny_model: Path
) -> None:
    steps: list[object] = []
    with pytest.raises(InvalidRequest, match=f"it makes 40 chunks .*{CHUNKS}"):
        next(engine.generate(request_for(tiny_model, "q, " * 1500), on_progress=steps.append))
    assert steps == []


def test_a_300_token_prompt_generates(capsys, tiny_model: Path, tmp_path: Path) -> None:
    size = ["--steps", "1", "--width", "64", "--height", "64", "--out", str(tmp_path), "--json"]
    code = main(["generate", "--model", str(tiny_model), "--prompt", words(300), *size])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0, events
    [image] = [e["path"] for e in events if e["event"] == "image"]
    assert read_image_settings(image).request.prompt == words(300)


def test_cli_refuses_a_huge_prompt_at_once(capsys, tiny_model: Path, tmp_path: Path) -> None:
    started = time.perf_counter()
    size = ["--width", "64", "--height", "64", "--out", str(tmp_path / "out")]
    code = main(["generate", "--model", str(tiny_model), "--prompt", HUGE, "--steps", "1", *size])
    assert code == 1
    assert f"error: The prompt is too long: {CHARACTERS}." in capsys.readouterr().err
    assert time.perf_counter() - started < 5
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("source", ["sdstudio", "a1111"])
def test_an_image_with_a_huge_prompt_reads_but_does_not_rerun(
    capsys, tiny_model: Path, tmp_path: Path, source: str
) -> None:
    path = tmp_path / "huge.png"
    if source == "sdstudio":
        image_with_record(path, request_for(tiny_model, HUGE))
    else:
        info = PngInfo()
        info.add_text("parameters", f"{HUGE}\nSteps: 1, Seed: 3, Size: 64x64, Model: tiny-sd")
        Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    assert main(["info", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == source and data["request"]["prompt"].strip() == HUGE.strip()
    started = time.perf_counter()
    code = main(["rerun", str(path), "--model", str(tiny_model), "--out", str(tmp_path / "o")])
    assert code == 1
    assert "characters, and the limit is 20,000." in capsys.readouterr().err
    assert time.perf_counter() - started < 5
    assert not (tmp_path / "o").exists()


def test_the_app_loads_a_huge_prompt_with_a_notice_and_refuses_to_generate(
    window, tiny_model: Path
) -> None:
    window.pending_settings = request_for(tiny_model, HUGE)
    window.load_pending_settings()
    assert window.panel.prompt.toPlainText() == HUGE
    assert CHARACTERS in window.statusBar().currentMessage()
    assert window.generate() is None
    assert CHARACTERS in window.last_error
    assert window.controller.running is None and not window.controller.waiting
