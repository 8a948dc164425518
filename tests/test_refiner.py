"""The SDXL refiner: a tiny SDXL model finished by a tiny SDXL refiner (diffusers folder and
single file), the steps split at the switch, progress, cancelling, refusals before
anything loads, the prompt embeddings of a refiner, and the CLI."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from sdstudio.cli import main
from sdstudio.engine.devices import choose_device
from sdstudio.engine.errors import GenerationCancelled, InvalidRequest, ModelError
from sdstudio.engine.generation import Engine, Progress
from sdstudio.engine.models.families import (
    Family,
    checkpoint_widths,
    detect_family,
    detect_family_from_header,
    width_differences,
)
from sdstudio.engine.models.loading import configs_root, folder_widths
from sdstudio.engine.pipelines import PipelineManager
from sdstudio.engine.progress import CancelToken
from sdstudio.engine.refine.refiner_settings import Refiner
from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.testing.tiny_refiner import (
    refiner_checkpoint_shapes,
    save_tiny_refiner,
    save_tiny_refiner_file,
    save_tiny_sdxl,
    write_tiny_refiner_configs,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny SDXL model, a tiny SDXL refiner (folder and single file) and the refiner's
    config folder for the single file."""
    root = tmp_path_factory.mktemp("refiner-models")
    refiner = save_tiny_refiner(root / "tiny-refiner")
    return {
        "sdxl": save_tiny_sdxl(root / "tiny-sdxl"),
        "other_sdxl": save_tiny_sdxl(root / "other-sdxl", seed=5),
        "refiner": refiner,
        "file": save_tiny_refiner_file(refiner, root / "file" / "tiny-refiner.safetensors"),
        "config": write_tiny_refiner_configs(root / "refiner-config"),
    }


@pytest.fixture(scope="module")
def engine(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One engine for the module (loading is the slow part); single-file refiners take the
    tiny refiner's configs."""
    manager = PipelineManager(choose_device("cpu"))
    engine = Engine(manager, tmp_path_factory.mktemp("inputs"))
    engine.refiner.single_file_config = models["config"]
    yield engine
    engine.refiner.unload()
    manager.unload()


def request(models: dict[str, Path], **changes: Any) -> GenerationRequest:
    values: dict[str, Any] = {
        "model": str(models["sdxl"]),
        "prompt": "a red boat",
        "negative_prompt": "blurry",
        "sampler": "Euler",
        "schedule": "Automatic",
        "steps": 4,
        "width": 64,
        "height": 64,
        "seed": 3,
        "refiner": Refiner(str(models["refiner"]), 0.75),
    }
    return GenerationRequest(**(values | changes))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


class UNetCalls:
    """Counts the forward calls of the model's UNet and of the refiner's."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from diffusers import UNet2DConditionModel

        self.called: list[int] = []
        forward = UNet2DConditionModel.forward

        def counted(unet: Any, *args: Any, **kwargs: Any) -> Any:
            self.called.append(id(unet))
            return forward(unet, *args, **kwargs)

        monkeypatch.setattr(UNet2DConditionModel, "forward", counted)

    def take(self, engine: Engine) -> tuple[int, int]:
        """(model's calls, refiner's calls) since the last take."""
        model = engine.pipelines.model
        assert model is not None and engine.refiner.active is not None
        model_unet = engine.pipelines.pipeline(str(model.path), Mode.TXT2IMG).unet
        counts = (
            self.called.count(id(model_unet)),
            self.called.count(id(engine.refiner.active.pipe.unet)),
        )
        assert sum(counts) == len(self.called)
        self.called.clear()
        return counts


def run(engine: Engine, req: GenerationRequest, events: list[Progress] | None = None) -> Any:
    on_progress = events.append if events is not None else None
    return next(engine.generate(req, on_progress=on_progress))


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_a_refiner_changes_the_image_and_reruns_to_the_same_pixels(
    engine: Engine, models: dict[str, Path]
) -> None:
    refined = run(engine, request(models))
    assert refined.record.extra["refiner"] == {"name": "tiny-refiner", "hash": ""}
    assert refined.record.request.refiner == Refiner(str(models["refiner"]), 0.75)
    again = run(engine, refined.record.request)
    assert np.array_equal(pixels(refined.image), pixels(again.image))
    # The switch is part of the image: another switch, another image.
    earlier = run(engine, request(models, refiner=Refiner(str(models["refiner"]), 0.5)))
    assert not np.array_equal(pixels(refined.image), pixels(earlier.image))
    plain = run(engine, request(models, refiner=None))
    assert not np.array_equal(pixels(refined.image), pixels(plain.image))
    assert "refiner" not in plain.record.extra
    # A request without a refiner frees it.
    assert engine.refiner.manager is not None and engine.refiner.manager.model is None


@pytest.mark.parametrize(
    ("steps", "switch", "split"),
    [(10, 0.8, (8, 2)), (4, 0.75, (3, 1))],
)
def test_the_steps_split_exactly_at_the_switch_and_progress_counts_them_once(
    engine: Engine,
    models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    steps: int,
    switch: float,
    split: tuple[int, int],
) -> None:
    calls = UNetCalls(monkeypatch)
    events: list[Progress] = []
    run(
        engine,
        request(models, steps=steps, refiner=Refiner(str(models["refiner"]), switch)),
        events,
    )
    assert calls.take(engine) == split
    assert [e.step for e in events] == list(range(1, steps + 1))
    assert {e.total for e in events} == {steps}
    assert not any(e.hires for e in events)


@pytest.mark.parametrize(("sampler", "schedule"), [("DPM++ 2M", "Karras"), ("Heun", "Automatic")])
def test_progress_totals_hold_for_other_samplers(
    engine: Engine, models: dict[str, Path], sampler: str, schedule: str
) -> None:
    events: list[Progress] = []
    result = run(engine, request(models, sampler=sampler, schedule=schedule), events)
    assert result.image.size == (64, 64)
    total = events[-1].total
    assert [e.step for e in events] == list(range(1, total + 1))
    assert {e.total for e in events} == {total}


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_image_to_image_refines_and_low_strength_runs_on_the_refiner(
    engine: Engine, models: dict[str, Path], init_image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = {"mode": Mode.IMG2IMG, "init_image": str(init_image), "steps": 10}
    source["refiner"] = Refiner(str(models["refiner"]), 0.8)
    calls = UNetCalls(monkeypatch)
    events: list[Progress] = []
    half = run(engine, request(models, **source, strength=0.5), events)
    # Five steps at strength 0.5: three above the switch at 0.8, two below.
    assert calls.take(engine) == (3, 2)
    assert [e.step for e in events] == [1, 2, 3, 4, 5] and events[-1].total == 5
    # At strength 0.1 the one step lies below the switch: the refiner runs it.
    run(engine, request(models, **source, strength=0.1))
    assert calls.take(engine) == (0, 1)
    again = run(engine, half.record.request)
    assert np.array_equal(pixels(half.image), pixels(again.image))
    plain = run(engine, request(models, **(source | {"refiner": None}), strength=0.5))
    assert not np.array_equal(pixels(half.image), pixels(plain.image))


def test_hires_runs_the_refiner_in_the_first_pass(
    engine: Engine, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sdstudio.engine.metadata.a1111 import format_parameters
    from sdstudio.engine.refine.hires_settings import HiresFix

    calls = UNetCalls(monkeypatch)
    events: list[Progress] = []
    req = request(models, hires=HiresFix(scale=1.5, steps=2, denoise=0.5))
    result = run(engine, req, events)
    # The first pass: 3 steps on the model and 1 on the refiner; the hires pass: 2 on the model.
    assert calls.take(engine) == (3 + 2, 1)
    assert [(e.step, e.hires) for e in events] == [(i, i > 4) for i in range(1, 7)]
    assert {e.total for e in events} == {6}
    assert result.image.size == (96, 96)
    record = result.record
    parameters = format_parameters(record.request, model_name="tiny-sdxl", extra=record.extra)
    assert parameters.endswith(
        "Refiner: tiny-refiner, Refiner switch at: 0.75, Hires refiner: first pass"
    )


def test_cancel_stops_within_the_refiner(
    engine: Engine, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = UNetCalls(monkeypatch)
    for cancel_at, ran in ((4, (3, 1)), (2, (2, 0))):  # the refiner's first step; the model's
        token = CancelToken()

        def cancel(progress: Progress, at: int = cancel_at, token: CancelToken = token) -> None:
            if progress.step == at:
                token.cancel()

        with pytest.raises(GenerationCancelled):
            next(engine.generate(request(models), on_progress=cancel, cancel=token))
        assert calls.take(engine) == ran


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_a_single_file_refiner_loads_and_makes_the_folders_pixels(
    engine: Engine, models: dict[str, Path]
) -> None:
    assert detect_family(models["file"]).family is Family.SDXL_REFINER
    assert detect_family(models["refiner"]).family is Family.SDXL_REFINER
    from_folder = run(engine, request(models))
    from_file = run(engine, request(models, refiner=Refiner(str(models["file"]), 0.75)))
    assert type(engine.refiner.active.pipe).__name__ == "StableDiffusionXLImg2ImgPipeline"
    assert engine.refiner.active.pipe.text_encoder is None
    assert np.array_equal(pixels(from_folder.image), pixels(from_file.image))
    short_hash = engine.pipelines.hash_cache.short_hash(models["file"])
    assert from_file.record.extra["refiner"] == {"name": "tiny-refiner", "hash": short_hash}


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_another_sdxl_model_refines_and_the_model_itself_changes_nothing(
    engine: Engine, models: dict[str, Path]
) -> None:
    plain = run(engine, request(models, refiner=None))
    other = run(engine, request(models, refiner=Refiner(str(models["other_sdxl"]), 0.75)))
    assert type(engine.refiner.active.pipe).__name__ == "StableDiffusionXLImg2ImgPipeline"
    assert engine.refiner.active.pipe.text_encoder is not None  # SDXL's two encoders
    assert not np.array_equal(pixels(plain.image), pixels(other.image))
    itself = run(engine, request(models, refiner=Refiner(str(models["sdxl"]), 0.75)))
    assert engine.refiner.active is None
    assert np.array_equal(pixels(plain.image), pixels(itself.image))


def test_refusals_come_before_anything_loads(
    models: dict[str, Path], tiny_model: Path, tmp_path: Path, init_image: Path
) -> None:
    manager = PipelineManager(choose_device("cpu"))
    engine = Engine(manager, tmp_path / "inputs")
    sd15_refiner = Refiner(str(tiny_model), 0.8)
    with pytest.raises(InvalidRequest, match=r"tiny-sd is not an SDXL refiner or model .*SD 1"):
        next(engine.generate(request(models, refiner=sd15_refiner)))
    with pytest.raises(InvalidRequest, match=r"tiny-sd is not an SDXL model"):
        next(engine.generate(request(models, model=str(tiny_model))))
    with pytest.raises(ModelError, match=r"is an SDXL refiner.*as its refiner"):
        next(engine.generate(request(models, model=str(models["refiner"]), refiner=None)))
    with pytest.raises(ModelError, match=r"is an SDXL refiner"):
        next(engine.generate(request(models, model=str(models["file"]), refiner=None)))
    inpaint = {"mode": Mode.INPAINT, "init_image": str(init_image), "mask": str(init_image)}
    with pytest.raises(InvalidRequest, match="not with inpainting"):
        next(engine.generate(request(models, **inpaint)))
    assert manager.model is None and engine.refiner.manager is None


def test_a_refiners_prompt_embeddings_are_its_one_encoders(
    engine: Engine, models: dict[str, Path]
) -> None:
    from sdstudio.engine import prompt_embeds

    run(engine, request(models))
    pipe = engine.refiner.active.pipe
    embeds = prompt_embeds.encode_prompts(pipe, "a red boat", "ugly")
    assert embeds is not None
    with torch.no_grad():
        expected = pipe.encode_prompt(
            "a red boat", device="cpu", do_classifier_free_guidance=True, negative_prompt="ugly"
        )
    got = (
        embeds.prompt_embeds,
        embeds.negative_prompt_embeds,
        embeds.pooled_prompt_embeds,
        embeds.negative_pooled_prompt_embeds,
    )
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    assert embeds.prompt_embeds.shape == (1, 77, 48)  # the second encoder's width alone
    weighted = prompt_embeds.prompt_arguments(pipe, "a (red:1.4) boat", "", 1)
    assert not torch.equal(weighted["prompt_embeds"], embeds.prompt_embeds)
    # The refiner does not zero an empty negative prompt (its config says so).
    empty = prompt_embeds.encode_prompts(pipe, "a red boat", "")
    assert empty is not None and empty.negative_prompt_embeds.any()
    # A weighted prompt generates through the refiner.
    assert run(engine, request(models, prompt="a (red:1.4) boat")).image.size == (64, 64)


def test_the_shipped_refiner_configs_have_sd_xl_refiner_10s_layout() -> None:
    """The shipped configs give the tensors of Stability AI's sd_xl_refiner_1.0: a UNet 384
    channels wide attending to 1280-wide text with four transformer blocks a level, five
    256-wide numbers of conditioning (2560 with the pooled text), OpenCLIP bigG as its
    only text encoder; 6.08 GB in half precision."""
    folder = configs_root() / "sdxl-refiner"
    shapes = refiner_checkpoint_shapes(folder)
    assert detect_family_from_header(shapes).family is Family.SDXL_REFINER
    assert detect_family(folder).family is Family.SDXL_REFINER
    assert width_differences(checkpoint_widths(shapes), folder_widths(folder), "refiner") == []
    unet = "model.diffusion_model."
    assert shapes[unet + "input_blocks.0.0.weight"] == (384, 4, 3, 3)
    assert shapes[unet + "label_emb.0.0.weight"] == (1536, 2560)
    assert shapes[unet + "input_blocks.4.1.transformer_blocks.3.attn2.to_k.weight"] == (768, 1280)
    assert shapes[unet + "middle_block.1.transformer_blocks.3.attn1.to_q.weight"] == (1536, 1536)
    assert shapes["conditioner.embedders.0.model.text_projection"] == (1280, 1280)
    half_precision = 2 * sum(math.prod(shape) for shape in shapes.values())
    assert abs(half_precision - 6.08e9) < 0.01e9


# --- CLI ---------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict], str]:
    code = main(list(args))
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    return code, events, captured.err


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_cli_generates_with_a_refiner_and_reruns_it(
    capsys: pytest.CaptureFixture[str], models: dict[str, Path], tmp_path: Path
) -> None:
    from sdstudio.engine.metadata import read_image_settings
    from sdstudio.engine.metadata.a1111 import split_parameters

    common = ["--prompt", "a red boat", "--steps", "4", "--width", "64", "--height", "64"]
    common += ["--seed", "7", "--sampler", "Euler", "--schedule", "Automatic", "--json"]
    code, events, err = cli(
        capsys, "generate", "--model", str(models["sdxl"]), *common,
        "--refiner", str(models["refiner"]), "--refiner-switch", "0.75",
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, err
    steps = [e for e in events if e["event"] == "step"]
    assert [(e["step"], e["total"]) for e in steps] == [(i, 4) for i in range(1, 5)]
    path = next(e["path"] for e in events if e["event"] == "image")
    with Image.open(path) as image:
        settings = split_parameters(image.text["parameters"]).settings
        first = pixels(image)
    assert settings["Refiner"] == "tiny-refiner" and settings["Refiner switch at"] == "0.75"
    assert read_image_settings(path).request.refiner == Refiner(str(models["refiner"]), 0.75)

    code, events, err = cli(capsys, "rerun", path, "--out", str(tmp_path / "again"), "--json")
    assert code == 0, err
    again = next(e["path"] for e in events if e["event"] == "image")
    with Image.open(again) as image:
        assert np.array_equal(first, pixels(image))
    code, events, err = cli(
        capsys, "rerun", path, "--refiner", "none", "--out", str(tmp_path / "n"), "--json"
    )
    assert code == 0, err
    plain = next(e["path"] for e in events if e["event"] == "image")
    with Image.open(plain) as image:
        assert "Refiner" not in image.text["parameters"]
        assert not np.array_equal(first, pixels(image))


def test_cli_refiner_mistakes_are_one_clear_line(
    capsys: pytest.CaptureFixture[str], models: dict[str, Path], tmp_path: Path
) -> None:
    base = ["generate", "--model", str(models["sdxl"]), "--prompt", "a", "--steps", "2"]
    code, _events, err = cli(capsys, *base, "--refiner-switch", "0.5")
    assert code == 1 and "--refiner-switch needs --refiner MODEL" in err
    code, _events, err = cli(capsys, *base, "--refiner", "no-such-refiner")
    assert code == 1 and "--refiner: No model named 'no-such-refiner'" in err
    code, _events, err = cli(
        capsys, *base, "--refiner", str(models["refiner"]), "--refiner-switch", "1"
    )
    assert code == 1 and "between 0 and 1" in err
    assert "Traceback" not in err


def test_cli_rerun_of_another_tools_image_finds_its_refiner_only_in_the_model_folders(
    capsys: pytest.CaptureFixture[str], models: dict[str, Path], tmp_path: Path
) -> None:
    from PIL.PngImagePlugin import PngInfo

    text = (
        "a red boat\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 7, Size: 64x64, "
        f"Model: tiny-sdxl, Refiner: {models['refiner']}, Refiner switch at: 0.75"
    )
    info = PngInfo()
    info.add_text("parameters", text)
    image = tmp_path / "a1111.png"
    Image.new("RGB", (64, 64)).save(image, pnginfo=info)
    code, _events, err = cli(capsys, "rerun", str(image), "--model", str(models["sdxl"]))
    assert code == 1 and "The refiner of the image was not found" in err
    assert "outside sdstudio's model folders" in err and "--refiner PATH" in err
