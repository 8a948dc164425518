"""Tiny-VAE previews during a generation, and the draft decode of the final image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.generation import Engine, Progress
from sdstudio.engine.metadata.a1111 import format_parameters, parse_parameters
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.tiny_vae import TinyPreview
from sdstudio.testing.tiny_vae_approx import build_tiny_vae, write_original


def request_for(model: Path, **changes: Any) -> GenerationRequest:
    values = {"prompt": "a red boat", "steps": 3, "width": 64, "height": 64, "seed": 5}
    values.update(changes)
    return GenerationRequest(model=str(model), **values)


@pytest.fixture(scope="module")
def approx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "vae_approx"
    write_original(build_tiny_vae("taesd", seed=9), folder, "taesd")
    return folder


@pytest.fixture
def tiny_engine(engine: Engine, approx: Path) -> Engine:
    engine.tiny_vaes.folders = lambda: [approx.parent]
    engine.tiny_vaes.budget = None  # every step (the budget is tested on its own)
    return engine


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_previews_come_from_the_tiny_vae_and_never_change_the_image(
    tiny_engine: Engine, tiny_model: Path
) -> None:
    made: list[TinyPreview] = []
    choose = tiny_engine.tiny_vaes.preview

    def hook(*args: Any) -> Any:
        preview = choose(*args)
        made.append(preview)
        return preview

    tiny_engine.tiny_vaes.preview = hook  # type: ignore[method-assign]
    events: list[Progress] = []
    [tiny] = tiny_engine.generate(request_for(tiny_model), on_progress=events.append)
    assert isinstance(made[0], TinyPreview) and made[0].decoded == 3
    assert [e.preview.size for e in events] == [(64, 64)] * 3  # the linear one is 8 x 8
    tiny_engine.tiny_vaes.mode = "linear"
    linear_events: list[Progress] = []
    [linear] = tiny_engine.generate(request_for(tiny_model), on_progress=linear_events.append)
    assert [e.preview.size for e in linear_events] == [(8, 8)] * 3
    [none] = tiny_engine.generate(request_for(tiny_model))
    assert np.array_equal(np.asarray(tiny.image), np.asarray(linear.image))
    assert np.array_equal(np.asarray(tiny.image), np.asarray(none.image))
    assert "draft_decode" not in tiny.record.extra


def test_the_budget_skips_previews_that_would_cost_too_much(
    tiny_engine: Engine, tiny_model: Path
) -> None:
    tiny_engine.tiny_vaes.budget = 1e-9
    events: list[Progress] = []
    list(tiny_engine.generate(request_for(tiny_model, steps=4), on_progress=events.append))
    assert events[0].preview is not None and events[0].preview.size == (64, 64)
    assert [e.preview for e in events[1:]] == [None] * 3  # the last preview stays shown


def test_draft_decode_changes_the_image_is_recorded_and_reruns_exactly(
    tiny_engine: Engine, tiny_model: Path
) -> None:
    [full] = tiny_engine.generate(request_for(tiny_model))
    [draft] = tiny_engine.generate(request_for(tiny_model, draft_decode=True))
    assert not np.array_equal(np.asarray(full.image), np.asarray(draft.image))
    record = draft.record
    assert record.request.draft_decode and record.extra["draft_decode"] == "TAESD"
    text = format_parameters(record.request, model_name=record.model_name, extra=record.extra)
    assert "Draft decode: TAESD" in text
    assert "Draft decode" not in format_parameters(full.record.request, extra=full.record.extra)
    read = parse_parameters(text, model=str(tiny_model))
    assert read.draft_decode
    assert GenerationRequest.from_json(record.request.to_json()).draft_decode
    [again] = tiny_engine.generate(read.replace(model=str(tiny_model)))
    assert np.array_equal(np.asarray(again.image), np.asarray(draft.image))
    [after] = tiny_engine.generate(request_for(tiny_model))  # the full VAE is back
    assert np.array_equal(np.asarray(after.image), np.asarray(full.image))


def test_draft_decode_without_a_tiny_vae_is_refused(engine: Engine, tiny_model: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"No tiny VAE for SD 1\.x was found"):
        list(engine.generate(request_for(tiny_model, draft_decode=True)))
    with pytest.raises(InvalidRequest, match="draft_decode must be true or false"):
        request_for(tiny_model, draft_decode="yes")


def test_cli_draft_decode_is_written_and_rerun_exactly(
    capsys: pytest.CaptureFixture[str], tiny_model: Path, tmp_path: Path, sdstudio_home: Path
) -> None:
    import json

    from PIL import Image

    from sdstudio.cli import main
    from sdstudio.engine.paths import AppPaths

    models = AppPaths.under(sdstudio_home).models_dir
    write_original(build_tiny_vae("taesd", seed=9), models / "vae_approx", "taesd")

    def run(*args: str) -> list[dict[str, Any]]:
        assert main(list(args)) == 0
        lines = capsys.readouterr().out.splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    common = ["--prompt", "a red boat", "--steps", "2", "--width", "64", "--height", "64"]
    events = run("generate", "--model", str(tiny_model), *common, "--seed", "3",
                 "--draft-decode", "--out", str(tmp_path / "out"), "--json")  # fmt: skip
    [path] = [e["path"] for e in events if e["event"] == "image"]
    with Image.open(path) as image:
        assert "Draft decode: TAESD" in image.text["parameters"]
        drafted = np.asarray(image.convert("RGB"))
    events = run("rerun", path, "--out", str(tmp_path / "again"), "--json")
    [again] = [e["path"] for e in events if e["event"] == "image"]
    with Image.open(again) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), drafted)
