"""SD upscale on the tiny model: the source upscaled, repainted tile by tile at the
request's size, progress over every tile, cancel, an exact re-run from the record, and
an upscale-only job through the engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.errors import GenerationCancelled
from sdstudio.engine.generation import CancelToken, Engine, Progress
from sdstudio.engine.metadata import read_image_settings
from sdstudio.engine.outputs import OutputWriter
from sdstudio.engine.refine.sd_upscale import tile_grid
from sdstudio.engine.refine.upscale_settings import Upscale
from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.testing.tiny_upscalers import write_tiny_upscaler


def sd_upscale(model: Path, source: Path, **changes: object) -> GenerationRequest:
    fields: dict[str, object] = {
        "model": str(model),
        "prompt": "a stone bridge",
        "mode": Mode.IMG2IMG,
        "init_image": str(source),
        "sampler": "Euler",
        "schedule": "Automatic",
        "steps": 4,
        "strength": 0.5,
        "seed": 3,
        "width": 64,
        "height": 64,
        "upscale": Upscale("Lanczos", 2.0, overlap=16),
    }
    return GenerationRequest(**{**fields, **changes})  # type: ignore[arg-type]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_the_upscaled_source_is_repainted_in_tiles_and_reruns(
    engine: Engine, tiny_model: Path, init_image: Path, tmp_path: Path
) -> None:
    events: list[Progress] = []
    statuses: list[str] = []
    request = sd_upscale(tiny_model, init_image)  # 80x72 -> 160x144 in 64x64 tiles
    [result] = engine.generate(request, on_progress=events.append, on_status=statuses.append)
    assert result.image.size == (160, 144)
    grid = tile_grid(160, 144, 64, 64, 16)
    assert grid.count == 9
    assert len(events) == grid.count * 2  # 4 steps at strength 0.5, for each tile
    assert [e.step for e in events] == list(range(1, 19)) and events[-1].total == 18
    assert any("9 tiles of 64x64" in s for s in statuses)
    # Repainted: not the plain Lanczos upscale of the source.
    with Image.open(init_image) as source:
        plain = source.convert("RGB").resize((160, 144), Image.Resampling.LANCZOS)
    assert np.abs(pixels(result.image) - pixels(plain)).mean() > 1
    # The record keeps the whole source (not fitted to a tile) and re-runs exactly.
    recorded = result.record.request
    with Image.open(recorded.init_image or "") as kept:
        assert kept.size == (80, 72)
    path = OutputWriter(tmp_path / "out").write(result)
    again = read_image_settings(path).request
    assert again == recorded
    [rerun] = engine.generate(again)
    assert np.array_equal(pixels(rerun.image), pixels(result.image))


def test_sd_upscale_with_an_upscaler_file_and_cancel(
    engine: Engine, tiny_model: Path, init_image: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "upscalers"
    write_tiny_upscaler(folder / "2x-tiny.safetensors", "compact", 2)
    engine.upscaler_dirs = lambda: [folder]
    request = sd_upscale(tiny_model, init_image, upscale=Upscale("2x-tiny", 2.0, overlap=16))
    token = CancelToken()
    seen: list[Progress] = []

    def stop_after_a_tile(progress: Progress) -> None:
        seen.append(progress)
        if len(seen) == 3:
            token.cancel()

    with pytest.raises(GenerationCancelled):
        list(engine.generate(request, on_progress=stop_after_a_tile, cancel=token))
    assert len(seen) == 3  # stopped in the second tile
    [result] = engine.generate(request)
    assert result.image.size == (160, 144)


def test_an_upscale_job_runs_without_a_model(engine: Engine, init_image: Path) -> None:
    request = GenerationRequest(
        model="",
        prompt="",
        mode=Mode.UPSCALE,
        init_image=str(init_image),
        width=1,
        height=1,  # the engine records the result's real size
        upscale=Upscale("Lanczos", 1.5),
    )
    [result] = engine.generate(request)
    assert result.image.size == (120, 108)
    record = result.record
    assert (record.request.width, record.request.height) == (120, 108)
    assert record.model_name == "Lanczos"
    assert record.extra["source"]["name"] == "init.png"
    assert (record.extra["source"]["width"], record.extra["source"]["height"]) == (80, 72)
