"""Generating from prompts with wildcards: each image of a batch resolves them with its
own seed, records the template and the prompt it was made with, and re-runs to the
same pixels from its record, from its A1111 text and from its resolved prompt alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.cli import main
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.generation import Engine, Progress
from sdstudio.engine.metadata import PARAMETERS_KEY, read_image_settings
from sdstudio.engine.metadata.a1111 import read_parameters
from sdstudio.engine.outputs import OutputWriter
from sdstudio.engine.prompting.wildcards import resolve
from sdstudio.engine.request import GenerationRequest

TEMPLATE = "a __animal__ {at dawn|at night}"
NEGATIVE = "{blurry|ugly}"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "wildcards"
    folder.mkdir()
    (folder / "animal.txt").write_text("red cat\nblue dog\ngreen bird\n", "utf-8")
    return folder


@pytest.fixture
def wild_engine(manager, tmp_path: Path, folder: Path) -> Engine:
    return Engine(manager, tmp_path / "inputs", wildcard_dirs=lambda: [folder])


def first_seed_with_two_prompts(folder: Path) -> int:
    """A seed whose image and the next one resolve the template differently."""
    return next(
        s
        for s in range(100)
        if resolve(TEMPLATE, s, [folder]) != resolve(TEMPLATE, s + 1, [folder])
    )


def request_for(model: Path, **changes: object) -> GenerationRequest:
    values: dict[str, object] = {"steps": 2, "width": 64, "height": 64}
    values.update(changes)
    return GenerationRequest(model=str(model), **values)  # type: ignore[arg-type]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def test_batch_images_get_their_own_prompts_and_rerun_alike(
    wild_engine: Engine,
    tiny_model: Path,
    folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed = first_seed_with_two_prompts(folder)
    request = request_for(
        tiny_model, prompt=TEMPLATE, negative_prompt=NEGATIVE, seed=seed, batch_size=2
    )
    events: list[Progress] = []
    results = list(wild_engine.generate(request, on_progress=events.append))
    assert [(e.image_index, e.batch_size) for e in events] == [(0, 2)] * 2 + [(1, 2)] * 2
    prompts = [resolve(TEMPLATE, s, [folder]) for s in (seed, seed + 1)]
    negatives = [resolve(NEGATIVE, s) for s in (seed, seed + 1)]
    for result, prompt, negative, image_seed in zip(
        results, prompts, negatives, (seed, seed + 1), strict=True
    ):
        record = result.record
        assert record.request.prompt == TEMPLATE and record.request.negative_prompt == NEGATIVE
        assert (record.request.seed, record.request.batch_size) == (image_seed, 1)
        assert record.extra["wildcards"] == {"prompt": prompt, "negative_prompt": negative}
    assert not np.array_equal(pixels(results[0].image), pixels(results[1].image))

    # The resolved prompt alone, and the record's request, give the same pixels.
    second = results[1]
    plain = request_for(tiny_model, prompt=prompts[1], negative_prompt=negatives[1], seed=seed + 1)
    [alone] = wild_engine.generate(plain)
    assert np.array_equal(pixels(alone.image), pixels(second.image))
    assert "wildcards" not in alone.record.extra

    # Written and read back: the record gives the template, the A1111 text the prompt.
    path = OutputWriter(tmp_path / "out").write(second)
    settings = read_image_settings(path)
    assert settings.request == second.record.request
    with Image.open(path) as image:
        text = image.info[PARAMETERS_KEY]
    assert text.startswith(f"{prompts[1]}\nNegative prompt: {negatives[1]}\n")
    assert "Template: " in text and "Negative Template: " in text
    parsed = read_parameters(text, model=str(tiny_model))
    assert parsed.request.prompt == prompts[1] and parsed.extras["Template"] == TEMPLATE
    assert main(["info", str(path)]) == 0
    shown = capsys.readouterr().out
    assert f"Prompt: {TEMPLATE}\nResolved prompt: {prompts[1]}\n" in shown
    for again in (settings.request, parsed.request):
        [rerun] = wild_engine.generate(again.replace(model=str(tiny_model)))
        assert np.array_equal(pixels(rerun.image), pixels(second.image))


def test_prompt_without_wildcards_is_untouched(
    wild_engine: Engine, engine: Engine, tiny_model: Path, tmp_path: Path
) -> None:
    request = request_for(tiny_model, prompt="a red boat {masterpiece}", seed=3)
    [with_folders] = wild_engine.generate(request)
    [plain] = engine.generate(request)
    assert np.array_equal(pixels(with_folders.image), pixels(plain.image))
    assert with_folders.record.request == request.replace(batch_size=1)
    assert "wildcards" not in with_folders.record.extra
    path = OutputWriter(tmp_path / "out").write(with_folders)
    with Image.open(path) as image:
        assert "Template" not in image.info[PARAMETERS_KEY]


def test_unknown_wildcard_is_refused_before_loading(engine: Engine, tiny_model: Path) -> None:
    request = request_for(tiny_model, prompt="a {red|blue} __nowhere__", seed=1)
    with pytest.raises(InvalidRequest, match="__nowhere__ is unknown; there are no wildcard"):
        list(engine.generate(request))


def test_wildcards_in_a_hires_prompt_are_refused(engine: Engine, tiny_model: Path) -> None:
    from sdstudio.engine.refine.hires_settings import HiresFix

    hires = HiresFix(prompt="{sharp|soft} details")
    request = request_for(tiny_model, prompt="a __animal__", seed=1, hires=hires)
    with pytest.raises(InvalidRequest, match="the hires prompt is used as written"):
        list(engine.generate(request))
