"""ControlNet units guiding the tiny SD 1.x model: weights, start and end, several units,
image-to-image and inpainting, control modes, exact re-runs, and refusals before loading."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.control.controlnets import ControlNetCache
from sdstudio.engine.control.units import ControlUnit
from sdstudio.engine.devices import choose_device
from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.generation import Engine
from sdstudio.engine.metadata.a1111 import format_parameters
from sdstudio.engine.pipelines import PipelineManager
from sdstudio.engine.refine.hires_settings import HiresFix
from sdstudio.engine.refine.refiner_settings import Refiner
from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.testing.tiny import save_tiny_model
from sdstudio.testing.tiny_control import (
    SDXL_CONTROLNET_SHAPES,
    save_tiny_controlnet,
    save_tiny_controlnet_file,
    write_header_file,
)

SIZE = 64


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("control")
    model = save_tiny_model(root / "model")
    folder = save_tiny_controlnet(model, root / "controlnets" / "tiny_canny")
    single = save_tiny_controlnet_file(folder, root / "files" / "tiny_single.safetensors")
    original = save_tiny_controlnet_file(
        folder, root / "files" / "tiny_original.safetensors", original=True
    )
    other = save_tiny_controlnet(model, root / "controlnets" / "tiny_depth", seed=7)
    maps = root / "maps"
    maps.mkdir()
    rng = np.random.default_rng(0)
    for name in ("edges", "blobs"):
        pixels = (rng.random((48, 80, 3)) > 0.5).astype(np.uint8) * 255
        Image.fromarray(pixels).save(maps / f"{name}.png")
    Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(maps / "init.png")
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 16:48] = 255
    Image.fromarray(mask).save(maps / "mask.png")
    return {
        "model": model,
        "folder": folder,
        "single": single,
        "original": original,
        "other": other,
        "edges": maps / "edges.png",
        "blobs": maps / "blobs.png",
        "init": maps / "init.png",
        "mask": maps / "mask.png",
        "root": root,
    }


@pytest.fixture(scope="module")
def engine(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = Engine(PipelineManager(choose_device("cpu")), tmp_path_factory.mktemp("inputs"))
    engine.control.folders = lambda: [files["root"] / "controlnets"]
    engine.control.single_file_config = files["folder"]  # the tiny ControlNet's config
    yield engine
    engine.pipelines.unload()


def request(files: dict[str, Path], *units: ControlUnit, **changes: Any) -> GenerationRequest:
    values: dict[str, Any] = {
        "prompt": "a house",
        "model": str(files["model"]),
        "width": SIZE,
        "height": SIZE,
        "steps": 4,
        "seed": 11,
        "guidance_scale": 5.0,
        "control": units,
    }
    values.update(changes)
    return GenerationRequest(**values)


def unit(files: dict[str, Path], **changes: Any) -> ControlUnit:
    values: dict[str, Any] = {"model": "tiny_canny", "image": str(files["edges"])}
    values.update(changes)
    return ControlUnit(**values)


def run(engine: Engine, req: GenerationRequest) -> Any:
    return next(iter(engine.generate(req)))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


class ScaleLog:
    """The conditioning scale of every call into the loaded ControlNets."""

    def __init__(self, engine: Engine) -> None:
        self.calls: list[float] = []
        self._handles = []
        assert engine.control.active is not None
        for model in engine.control.active.models:
            self._handles.append(model.register_forward_pre_hook(self._record, with_kwargs=True))

    def _record(self, _module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        self.calls.append(float(kwargs["conditioning_scale"]))

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def test_weight_zero_is_the_unguided_image_and_weight_one_guides(
    engine: Engine, files: dict[str, Path]
) -> None:
    plain = pixels(run(engine, request(files)).image)
    zero = run(engine, request(files, unit(files, weight=0.0)))
    guided = run(engine, request(files, unit(files)))
    assert np.array_equal(pixels(zero.image), plain)
    assert np.abs(pixels(guided.image) - plain).mean() > 1.0
    assert guided.record.extra["control"] == [{"name": "tiny_canny", "hash": ""}]


def test_start_and_end_take_effect_at_their_steps(engine: Engine, files: dict[str, Path]) -> None:
    req = request(files, unit(files, weight=0.8, start=0.5, end=1.0), steps=4)
    first = list(engine.generate(req))  # loads; the pass stays active for the log
    log = ScaleLog(engine)
    try:
        again = run(engine, req)
    finally:
        log.close()
    assert log.calls == [0.0, 0.0, pytest.approx(0.8), pytest.approx(0.8)]
    assert np.array_equal(pixels(again.image), pixels(first[0].image))
    early = request(files, unit(files, weight=0.8, start=0.0, end=0.25), steps=4)
    list(engine.generate(early))
    log = ScaleLog(engine)
    try:
        run(engine, early)
    finally:
        log.close()
    assert log.calls == [pytest.approx(0.8), 0.0, 0.0, 0.0]


def test_two_units_guide_together_and_rerun_exactly_from_the_record(
    engine: Engine, files: dict[str, Path]
) -> None:
    one = pixels(run(engine, request(files, unit(files))).image)
    both = run(
        engine,
        request(
            files,
            unit(files),
            unit(files, model=str(files["other"]), image=str(files["blobs"]), weight=0.7),
        ),
    )
    assert np.abs(pixels(both.image) - one).mean() > 0.5
    stored = both.record.request.control
    assert all(Path(u.image).parent == engine.inputs_dir for u in stored)
    assert [e["name"] for e in both.record.extra["control"]] == ["tiny_canny", "tiny_depth"]
    rerun = run(engine, both.record.request)
    assert np.array_equal(pixels(rerun.image), pixels(both.image))


def test_image_to_image_and_inpainting_are_guided(engine: Engine, files: dict[str, Path]) -> None:
    for mode, extra in (
        (Mode.IMG2IMG, {"init_image": str(files["init"]), "strength": 0.7}),
        (
            Mode.INPAINT,
            {"init_image": str(files["init"]), "mask": str(files["mask"]), "mask_blur": 0},
        ),
    ):
        plain = pixels(run(engine, request(files, mode=mode, **extra)).image)
        zero = run(engine, request(files, unit(files, weight=0.0), mode=mode, **extra))
        guided = run(engine, request(files, unit(files), mode=mode, **extra))
        assert np.array_equal(pixels(zero.image), plain), mode
        assert np.abs(pixels(guided.image) - plain).mean() > 0.5, mode
        if mode is Mode.INPAINT:  # outside the mask the source is kept
            source = pixels(Image.open(files["init"]))
            assert np.array_equal(pixels(guided.image)[:16], source[:16])
            assert not np.array_equal(pixels(guided.image)[16:48], source[16:48])


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_control_modes_change_the_guidance(engine: Engine, files: dict[str, Path]) -> None:
    balanced = pixels(run(engine, request(files, unit(files))).image)
    prompt = pixels(run(engine, request(files, unit(files, mode="prompt"))).image)
    control = pixels(run(engine, request(files, unit(files, mode="control"))).image)
    assert np.abs(prompt - balanced).mean() > 0.1
    assert np.abs(control - balanced).mean() > 0.1
    # Beside a unit of another mode, a "ControlNet is more important" unit guides as it
    # does alone (diffusers' guess mode for that ControlNet only): with a weight-0
    # balanced unit beside it, the image is the one it makes alone.
    beside = request(files, unit(files, mode="control"), unit(files, weight=0.0))
    assert np.abs(pixels(run(engine, beside).image) - control).max() <= 2
    mixed = pixels(
        run(engine, request(files, unit(files, mode="control"), unit(files, mode="prompt"))).image
    )
    both_prompt = request(files, unit(files, mode="prompt"), unit(files, mode="prompt"))
    assert np.abs(mixed - pixels(run(engine, both_prompt).image)).mean() > 0.1


def test_single_files_in_both_layouts_load_as_the_folder(
    engine: Engine, files: dict[str, Path]
) -> None:
    folder = pixels(run(engine, request(files, unit(files))).image)
    for name in ("single", "original"):
        got = run(engine, request(files, unit(files, model=str(files[name]))))
        assert np.array_equal(pixels(got.image), folder), name
        extra = got.record.extra["control"][0]
        assert extra["name"] == files[name].stem and len(extra["hash"]) == 8
        # The A1111 text names the file with its short hash, as the extension does.
        written = format_parameters(got.record.request, extra=got.record.extra)
        assert f"Model: {files[name].stem} [{extra['hash']}]" in written, written


def test_the_cache_keeps_a_controlnet_until_its_file_changes(files: dict[str, Path]) -> None:
    import torch

    from sdstudio.engine.control.control_files import inspect_controlnet

    cache = ControlNetCache()
    file = inspect_controlnet(files["single"])
    first = cache.load(file, dtype=torch.float32, device="cpu", config=files["folder"])
    assert cache.load(file, dtype=torch.float32, device="cpu", config=files["folder"]) is first
    files["single"].touch()
    import os

    stat = files["single"].stat()
    os.utime(files["single"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.load(file, dtype=torch.float32, device="cpu", config=files["folder"]) is not first


def test_refusals_come_before_anything_loads(files: dict[str, Path], tmp_path: Path) -> None:
    from sdstudio.engine.models.loading import configs_root
    from sdstudio.testing.checkpoints import random_original_checkpoint
    from sdstudio.testing.tiny_flow import save_tiny_sd3

    manager = PipelineManager(choose_device("cpu"))
    engine = Engine(manager, tmp_path / "inputs")
    xl = write_header_file(tmp_path / "cn" / "xl_canny.safetensors", SDXL_CONTROLNET_SHAPES)
    engine.control.folders = lambda: [tmp_path / "cn"]
    weights = random_original_checkpoint(configs_root() / "sd1", device="meta")
    shapes = {name: tuple(tensor.shape) for name, tensor in weights.items()}
    sd1 = write_header_file(tmp_path / "sd15.safetensors", shapes)
    with pytest.raises(InvalidRequest, match=r"is for SDXL models.*SD 1\.x"):
        run(engine, request(files, unit(files, model="xl_canny"), model=str(sd1)))
    with pytest.raises(InvalidRequest, match="was not found"):
        run(engine, request(files, unit(files, model="nowhere")))
    with pytest.raises(InvalidRequest, match="the refiner"):
        run(engine, request(files, unit(files, model=str(xl)), refiner=Refiner(model="x")))
    with pytest.raises(InvalidRequest, match=r"no-such-module"):
        run(engine, request(files, unit(files, preprocessor="no-such-module")))
    with pytest.raises(ModelError, match="not a ControlNet"):
        run(engine, request(files, unit(files, model=str(sd1))))
    only_masked = {"init_image": str(files["init"]), "mask": str(files["mask"])}
    with pytest.raises(InvalidRequest, match="only masked"):
        run(
            engine,
            request(files, unit(files), mode=Mode.INPAINT, inpaint_area="masked", **only_masked),
        )
    sd3 = save_tiny_sd3(tmp_path / "sd3")
    with pytest.raises(InvalidRequest, match=r"is for SDXL models, and the model is SD 3\.x"):
        run(engine, request(files, unit(files, model=str(xl)), model=str(sd3)))
    assert manager.model is None


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_an_sdxl_controlnet_guides_an_sdxl_model(tmp_path: Path) -> None:
    from sdstudio.testing.tiny_refiner import save_tiny_sdxl

    model = save_tiny_sdxl(tmp_path / "sdxl")
    folder = save_tiny_controlnet(model, tmp_path / "cn" / "xl_canny")
    edges = tmp_path / "edges.png"
    rng = np.random.default_rng(3)
    Image.fromarray((rng.random((SIZE, SIZE, 3)) > 0.5).astype(np.uint8) * 255).save(edges)
    engine = Engine(PipelineManager(choose_device("cpu")), tmp_path / "inputs")
    engine.control.folders = lambda: [folder.parent]
    base = {"model": str(model), "width": SIZE, "height": SIZE, "steps": 3, "seed": 5}
    plain = pixels(run(engine, GenerationRequest(prompt="a cat", **base)).image)
    xl_unit = ControlUnit(model="xl_canny", image=str(edges))
    guided = run(engine, GenerationRequest(prompt="a cat", control=(xl_unit,), **base))
    assert type(engine.control.active.pipe).__name__ == "StableDiffusionXLControlNetPipeline"
    assert np.abs(pixels(guided.image) - plain).mean() > 0.5
    zero = ControlUnit(model="xl_canny", image=str(edges), weight=0.0)
    assert np.array_equal(
        pixels(run(engine, GenerationRequest(prompt="a cat", control=(zero,), **base)).image),
        plain,
    )
    engine.pipelines.unload()


def test_control_modes_scale_the_residuals_as_a1111_and_diffusers() -> None:
    import torch

    from sdstudio.engine.control.controlnets import _control_mode, set_unit_modes
    from sdstudio.engine.control.units import ControlMode

    net = torch.nn.Module()
    down = tuple(torch.ones(2) for _ in range(12))
    # One ControlNet guiding three units: prompt first, balanced, ControlNet first.
    modes = [ControlMode.PROMPT, ControlMode.BALANCED, ControlMode.CONTROL]
    set_unit_modes([net] * 3, modes, every=False, halves=True)
    scaled, mid = _control_mode(net, (), (down, torch.ones(2)))
    assert [round(float(s[1]), 6) for s in scaled] == [
        round(0.825 ** (12 - i), 6) for i in range(12)
    ]
    assert torch.equal(mid, torch.ones(2))
    assert _control_mode(net, (), (down, torch.ones(2))) is None  # balanced: untouched
    scaled, mid = _control_mode(net, (), (down, torch.ones(2)))  # guess mode, alone
    expected = torch.logspace(-1, 0, 13)
    assert all(float(s[0]) == 0.0 for s in scaled) and float(mid[0]) == 0.0
    assert torch.allclose(torch.stack([s[1] for s in scaled]), expected[:12])
    assert float(mid[1]) == 1.0
    # The next step starts again with the first unit.
    scaled, _ = _control_mode(net, (), (down, torch.ones(2)))
    assert round(float(scaled[0][0]), 6) == round(0.825**12, 6)
    set_unit_modes([net], [ControlMode.BALANCED], every=False, halves=True)
    assert _control_mode(net, (), (down, torch.ones(2))) is None


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_an_inpainting_model_is_guided_in_every_mode(
    files: dict[str, Path], tmp_path: Path
) -> None:
    model = save_tiny_model(tmp_path / "inpainting", inpainting=True)
    engine = Engine(PipelineManager(choose_device("cpu")), tmp_path / "inputs")
    engine.control.folders = lambda: [files["root"] / "controlnets"]
    plain = pixels(run(engine, request(files, model=str(model))).image)
    guided = run(engine, request(files, unit(files), model=str(model)))
    assert engine.control.active is not None and engine.control.active.task == "inpaint"
    assert np.abs(pixels(guided.image) - plain).mean() > 0.5
    engine.pipelines.unload()
    assert engine.control.active is None and len(engine.control.cache) == 0


def test_the_units_guide_the_hires_pass_too(engine: Engine, files: dict[str, Path]) -> None:
    hires = HiresFix(scale=1.5, steps=2, denoise=0.6)
    plain = run(engine, request(files, hires=hires))
    zero = run(engine, request(files, unit(files, weight=0.0), hires=hires))
    guided = run(engine, request(files, unit(files), hires=hires))
    assert guided.image.size == plain.image.size == (96, 96)
    assert np.array_equal(pixels(zero.image), pixels(plain.image))
    assert np.abs(pixels(guided.image) - pixels(plain.image)).mean() > 0.5
    control = engine.control.active
    assert control is not None and control.hires_pipe is not None
    log = ScaleLog(engine)
    try:
        again = run(engine, request(files, unit(files, weight=0.9), hires=hires))
    finally:
        log.close()
    assert log.calls == [pytest.approx(0.9)] * (4 + 2)  # both passes are guided
    rerun = run(engine, again.record.request)
    assert np.array_equal(pixels(rerun.image), pixels(again.image))
