"""The optional compiled denoiser: compiled once per model and size, recorded, re-run as
recorded, and falling back to eager (from the same random state) when compiling fails.

The fast tests compile with dynamo's ``eager`` backend (the tracing, guards and caching
are real; no C compiler runs); the slow one compiles with inductor, as users do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from sdstudio.cli import main
from sdstudio.engine import compiled
from sdstudio.engine.compiled import denoiser, is_compile_failure, is_compiled
from sdstudio.engine.devices import choose_device
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.generation import Engine
from sdstudio.engine.pipelines import PipelineManager
from sdstudio.engine.precision import rerun_device
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.settings import Settings, change_setting


def _request(model: Path, **changes: object) -> GenerationRequest:
    values: dict[str, object] = {
        "model": str(model),
        "prompt": "a boat",
        "steps": 2,
        "width": 64,
        "height": 64,
        "seed": 3,
        "sampler": "Euler a",  # draws noise every step: a retry must restore the generator
        "schedule": "Automatic",
    }
    values.update(changes)
    return GenerationRequest(**values)  # type: ignore[arg-type]


def _engine(tmp_path: Path, *, compile: bool, backend: object = "eager") -> Engine:
    manager = PipelineManager(choose_device("cpu", compile=compile), compile_cache=tmp_path / "c")
    manager.compiler.backend = backend  # type: ignore[assignment]
    return Engine(manager, tmp_path / "inputs")


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_a_compiled_denoiser_is_recorded_and_compiles_once_per_size(
    tiny_model: Path, tmp_path: Path
) -> None:
    plain = next(_engine(tmp_path, compile=False).generate(_request(tiny_model)))
    engine = _engine(tmp_path, compile=True)
    said: list[str] = []
    first = next(engine.generate(_request(tiny_model), on_status=said.append))
    again = next(engine.generate(_request(tiny_model), on_status=said.append))
    assert first.record.device == "cpu (float32, compiled)"
    assert first.image.tobytes() == again.image.tobytes() == plain.image.tobytes()
    compiling = [line for line in said if line.startswith("Compiling the denoiser for 64x64")]
    assert len(compiling) == 1  # the second image of the size reuses the kernels
    assert is_compiled(
        denoiser(engine.pipelines.pipeline(str(tiny_model), first.record.request.mode))
    )
    rerun = rerun_device(choose_device("cpu"), first.record.device)
    assert rerun.compile and rerun.precision == "float32"
    assert not rerun_device(choose_device("cpu", compile=True), "cpu (float32)").compile


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_a_compile_failure_runs_eager_from_the_same_random_state(
    tiny_model: Path, tmp_path: Path
) -> None:
    def broken(graph: object, inputs: object) -> object:
        raise RuntimeError("no C compiler here")

    plain = next(_engine(tmp_path, compile=False).generate(_request(tiny_model)))
    engine = _engine(tmp_path, compile=True, backend=broken)
    said: list[str] = []
    made = next(engine.generate(_request(tiny_model), on_status=said.append))
    assert made.image.tobytes() == plain.image.tobytes()
    assert made.record.device == "cpu (float32)"  # recorded as it ran: not compiled
    assert any("Compiling failed" in line and "no C compiler" in line for line in said)
    assert "no C compiler" in engine.pipelines.compiler.failure
    pipe = engine.pipelines.pipeline(str(tiny_model), made.record.request.mode)
    assert not is_compiled(denoiser(pipe))
    said.clear()
    next(engine.generate(_request(tiny_model, seed=4), on_status=said.append))
    assert not any(line.startswith("Compiling") for line in said)  # not tried again


def test_compiling_is_switched_in_place_and_errors_are_told_apart(
    tiny_model: Path, tmp_path: Path
) -> None:
    engine = _engine(tmp_path, compile=False)
    request = _request(tiny_model)
    pipe = engine.pipelines.pipeline(str(tiny_model), request.mode)
    engine.pipelines.use_device(choose_device("cpu", compile=True))
    assert engine.pipelines.model is not None  # not unloaded
    assert is_compiled(denoiser(pipe))
    engine.pipelines.use_device(choose_device("cpu"))
    assert not is_compiled(denoiser(pipe))
    import torch._dynamo.exc

    assert is_compile_failure(torch._dynamo.exc.InternalTorchDynamoError("x"))
    assert not is_compile_failure(RuntimeError("shapes do not match"))


def test_the_app_compiles_when_the_setting_is_on(
    qtbot, window, paths, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sdstudio.engine.metadata.record import ImageRecord
    from sdstudio.engine.settings import load_settings, save_settings

    monkeypatch.setattr(compiled, "BACKEND", "eager")
    save_settings(paths, change_setting(load_settings(paths), "compile", "on"))
    window.panel.load(_request(tiny_model))
    entries: list = []
    window.controller.image_saved.connect(lambda job, entry: entries.append(entry))
    with qtbot.waitSignal(window.controller.finished, timeout=120_000):
        assert window.generate() is not None
    assert ImageRecord.from_json(entries[-1].record_json).device == "cpu (float32, compiled)"


def test_the_compile_setting_takes_on_or_off() -> None:
    assert not Settings().compile_denoiser
    assert change_setting(Settings(), "compile", "on").compile_denoiser
    with pytest.raises(InvalidRequest, match="compile must be one of: off, on"):
        change_setting(Settings(), "compile", "yes")


@pytest.mark.slow  # inductor compiles the tiny UNet (a minute or two on two cores)
def test_cli_compile_with_inductor_records_it_and_reruns_exactly(
    monkeypatch: pytest.MonkeyPatch, capsys, tiny_model: Path, tmp_path: Path
) -> None:
    assert compiled.BACKEND == "inductor"
    monkeypatch.setenv(compiled.CACHE_ENV, "")
    monkeypatch.delenv(compiled.CACHE_ENV)  # sdstudio's cache folder is used, then dropped

    def run(*args: str) -> Path:
        assert main([*args, "--out", str(tmp_path / "out"), "--json"]) == 0
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return Path(next(e["path"] for e in events if e["event"] == "image"))

    made = run(
        "generate", "--model", str(tiny_model), "--prompt", "a boat", "--steps", "2",
        "--width", "64", "--height", "64", "--seed", "4", "--compile",
    )  # fmt: skip
    with Image.open(made) as image:
        assert json.loads(image.info["sdstudio"])["device"] == "cpu (float32, compiled)"
    again = run("rerun", str(made))  # compiled again, as recorded
    with Image.open(made) as image, Image.open(again) as redone:
        assert json.loads(redone.info["sdstudio"])["device"] == "cpu (float32, compiled)"
        assert image.tobytes() == redone.tobytes()
