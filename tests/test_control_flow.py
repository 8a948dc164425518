"""ControlNets of the transformer families (Flux.1, SD 3.x): their files recognised (folder,
diffusers-named single file, Stability AI's SD 3.5 layout), their family checked against
the model, weight 0 giving the unguided image and weight 1 guiding, exact re-runs, the
Flux Union control type, and the tasks their pipelines cannot run refused."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.control.control_files import inspect_controlnet, safetensors_family
from sdstudio.engine.control.units import ControlMode, ControlUnit
from sdstudio.engine.devices import choose_device
from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.generation import Engine
from sdstudio.engine.models import layouts
from sdstudio.engine.pipelines import PipelineManager
from sdstudio.engine.refine.hires_settings import HiresFix
from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.testing.tiny_flow import save_tiny_flux, save_tiny_sd3
from sdstudio.testing.tiny_flow_control import (
    save_flow_controlnet_file,
    save_tiny_flux_controlnet,
    save_tiny_sd3_controlnet,
)

SIZE = 64


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flow_control")
    control = root / "control"
    flux = save_tiny_flux(root / "flux")
    sd3 = save_tiny_sd3(root / "sd3")
    flux_net = save_tiny_flux_controlnet(flux, control / "tiny_flux_canny")
    union = save_tiny_flux_controlnet(flux, control / "tiny_flux_union", union=True)
    sd3_net = save_tiny_sd3_controlnet(sd3, root / "folders" / "tiny_sd3_canny")
    large = save_tiny_sd3_controlnet(sd3, root / "folders" / "tiny_sd35_large", original=True)
    rng = np.random.default_rng(0)
    maps = root / "maps"
    maps.mkdir()
    for name in ("edges", "init"):
        pixels = (rng.random((SIZE, SIZE, 3)) > 0.5).astype(np.uint8) * 255
        Image.fromarray(pixels).save(maps / f"{name}.png")
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 16:48] = 255
    Image.fromarray(mask).save(maps / "mask.png")
    return {
        "flux": flux,
        "sd3": sd3,
        "control": control,
        "flux_net": flux_net,
        "union": union,
        "flux_file": save_flow_controlnet_file(flux_net, control / "tiny_flux_file.safetensors"),
        "union_file": save_flow_controlnet_file(union, control / "tiny_union_file.safetensors"),
        "sd3_net": save_flow_controlnet_file(sd3_net, control / "tiny_sd3_file.safetensors"),
        "sd3_folder": sd3_net,
        "sd35_large": save_flow_controlnet_file(
            large, control / "sd3.5_large_controlnet_tiny.safetensors", original=True
        ),
        **{name: maps / f"{name}.png" for name in ("edges", "init", "mask")},
    }


@pytest.fixture(scope="module")
def engine(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = Engine(PipelineManager(choose_device("cpu")), tmp_path_factory.mktemp("inputs"))
    engine.control.folders = lambda: [files["control"]]
    yield engine
    engine.pipelines.unload()


def request(files: dict[str, Path], model: str, *units: ControlUnit, **changes: Any) -> Any:
    values: dict[str, Any] = {
        "prompt": "a house",
        "model": str(files[model]),
        "width": SIZE,
        "height": SIZE,
        "steps": 3,
        "seed": 11,
        "guidance_scale": 1.0,
        "control": units,
    }
    values.update(changes)
    return GenerationRequest(**values)


def unit(files: dict[str, Path], model: str = "tiny_flux_canny", **changes: Any) -> ControlUnit:
    values: dict[str, Any] = {"model": model, "image": str(files["edges"])}
    values.update(changes)
    return ControlUnit(**values)


def run(engine: Engine, req: GenerationRequest) -> Any:
    return next(iter(engine.generate(req)))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def differs(a: Image.Image, b: Image.Image, by: float = 0.5) -> bool:
    return float(np.abs(pixels(a) - pixels(b)).mean()) > by


def test_flow_controlnets_are_recognised_from_folders_and_files(files: dict[str, Path]) -> None:
    cases = {
        "flux_net": ("flux1", "controlnet", True),
        "union": ("flux1", "union", True),
        "flux_file": ("flux1", "controlnet", False),
        "union_file": ("flux1", "union", False),
        "sd3_net": ("sd3", "controlnet", False),
        "sd3_folder": ("sd3", "controlnet", True),
        "sd35_large": ("sd3", "controlnet", False),
    }
    for name, (family, kind, folder) in cases.items():
        found = inspect_controlnet(files[name])
        assert (found.family, found.kind, found.folder) == (family, kind, folder), name
    header, _ = layouts.read_safetensors_layout(files["union_file"])
    assert safetensors_family(header) == ("flux1", "Flux.1 Union")


def test_an_xlabs_flux_controlnet_is_refused_by_name(tmp_path: Path) -> None:
    from sdstudio.testing.tiny_control import write_header_file

    path = write_header_file(
        tmp_path / "flux-canny-controlnet-v3.safetensors",
        {
            "controlnet_blocks.0.weight": (8, 8),
            "double_blocks.0.img_attn.qkv.weight": (24, 8),
            "input_hint_block.0.weight": (16, 3, 3, 3),
        },
    )
    with pytest.raises(ModelError, match=r"XLabs.*double_blocks"):
        inspect_controlnet(path)


def test_flux_weight_zero_is_the_plain_image_and_reruns_exactly(
    engine: Engine, files: dict[str, Path]
) -> None:
    plain = run(engine, request(files, "flux"))
    zero = run(engine, request(files, "flux", unit(files, weight=0.0)))
    assert np.array_equal(pixels(zero.image), pixels(plain.image))
    guided = run(engine, request(files, "flux", unit(files)))
    assert differs(guided.image, plain.image)
    assert guided.record.extra["control"] == [{"name": "tiny_flux_canny", "hash": ""}]
    again = run(engine, guided.record.request)
    assert np.array_equal(pixels(again.image), pixels(guided.image))
    # The same ControlNet as one file (its config read from its shapes) guides the same.
    single = run(engine, request(files, "flux", unit(files, model="tiny_flux_file")))
    assert np.array_equal(pixels(single.image), pixels(guided.image))
    (entry,) = single.record.extra["control"]
    assert entry["name"] == "tiny_flux_file" and len(entry["hash"]) == 8


def test_flux_union_mode_start_end_and_two_units(engine: Engine, files: dict[str, Path]) -> None:
    def union(control_type: str, **changes: Any) -> Any:
        return unit(files, model="tiny_union_file", control_type=control_type, **changes)

    canny = run(engine, request(files, "flux", union("canny")))
    depth = run(engine, request(files, "flux", union("depth")))
    assert differs(canny.image, depth.image, by=0.005)  # one mode token among the prompt's
    folder = run(
        engine, request(files, "flux", unit(files, model="tiny_flux_union", control_type="canny"))
    )
    assert np.array_equal(pixels(folder.image), pixels(canny.image))
    late = run(engine, request(files, "flux", union("canny", start=0.5)))
    assert differs(late.image, canny.image)
    both = run(engine, request(files, "flux", union("canny"), unit(files, weight=0.7)))
    assert differs(both.image, canny.image)
    with pytest.raises(InvalidRequest, match="valid: canny, tile, depth"):
        run(engine, request(files, "flux", union("segmentation")))


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_flux_dev_takes_its_distilled_guidance_and_real_cfg_with_a_controlnet(
    engine: Engine, files: dict[str, Path], tmp_path: Path
) -> None:
    dev = save_tiny_flux(tmp_path / "dev", guidance_embeds=True)
    folder = save_tiny_flux_controlnet(dev, tmp_path / "folders" / "dev_union", union=True)
    files = {**files, "dev": dev}
    cfg = {"guidance_scale": 3.0, "distilled_guidance": 3.5, "negative_prompt": "blurry"}
    plain = run(engine, request(files, "dev", **cfg))
    depth = unit(files, model=str(folder), control_type="depth")
    zero = run(engine, request(files, "dev", replace(depth, weight=0.0), **cfg))
    assert np.array_equal(pixels(zero.image), pixels(plain.image))
    guided = run(engine, request(files, "dev", depth, **cfg))
    assert differs(guided.image, plain.image)
    assert guided.record.extra["distilled_guidance"] is True


def test_flux_guides_image_to_image_and_inpainting(engine: Engine, files: dict[str, Path]) -> None:
    init = {"init_image": str(files["init"]), "strength": 0.7}
    img2img = request(files, "flux", unit(files), mode=Mode.IMG2IMG, **init)
    plain = run(engine, request(files, "flux", mode=Mode.IMG2IMG, **init))
    assert differs(run(engine, img2img).image, plain.image)
    inpaint = request(
        files, "flux", unit(files), mode=Mode.INPAINT, mask=str(files["mask"]), **init
    )
    assert run(engine, inpaint).image.size == (SIZE, SIZE)
    with pytest.raises(InvalidRequest, match="without real CFG"):
        run(engine, img2img.replace(guidance_scale=3.0))
    hires = HiresFix(scale=1.5, steps=2, denoise=0.6, upscaler="Lanczos")
    upscaled = run(engine, request(files, "flux", unit(files), hires=hires))
    assert upscaled.image.size == (96, 96)
    assert engine.control.active is not None and engine.control.active.hires_pipe is not None
    with pytest.raises(InvalidRequest, match="choose an image upscaler"):
        engine.control.check(request(files, "flux", unit(files), hires=HiresFix(scale=1.5)))
    with pytest.raises(InvalidRequest, match="cannot guide the hires pass"):
        engine.control.check(request(files, "sd3", unit(files, model="tiny_sd3_file"), hires=hires))


def test_sd3_controlnets_guide_text_to_image(engine: Engine, files: dict[str, Path]) -> None:
    plain = run(engine, request(files, "sd3", guidance_scale=2.0))
    zero = run(
        engine,
        request(files, "sd3", unit(files, model="tiny_sd3_file", weight=0.0), guidance_scale=2.0),
    )
    assert np.array_equal(pixels(zero.image), pixels(plain.image))
    guided = run(
        engine, request(files, "sd3", unit(files, model="tiny_sd3_file"), guidance_scale=2.0)
    )
    assert differs(guided.image, plain.image)
    assert np.array_equal(pixels(run(engine, guided.record.request).image), pixels(guided.image))
    large = unit(files, model="sd3.5_large_controlnet_tiny")
    stability = run(engine, request(files, "sd3", large, guidance_scale=2.0))
    assert differs(stability.image, plain.image)


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_a_qwen_image_controlnet_guides_text_to_image(
    engine: Engine, files: dict[str, Path], tmp_path: Path
) -> None:
    from sdstudio.testing.tiny_flow import save_tiny_qwen_image
    from sdstudio.testing.tiny_flow_control import save_tiny_qwen_image_controlnet

    model = save_tiny_qwen_image(tmp_path / "qwen")
    folder = save_tiny_qwen_image_controlnet(model, tmp_path / "folders" / "qwen_canny")
    path = save_flow_controlnet_file(folder, files["control"] / "tiny_qwen_canny.safetensors")
    assert (inspect_controlnet(path).family, inspect_controlnet(folder).family) == (
        "qwen-image",
        "qwen-image",
    )
    files = {**files, "qwen": model}
    plain = run(engine, request(files, "qwen"))
    zero = run(engine, request(files, "qwen", unit(files, model="tiny_qwen_canny", weight=0.0)))
    assert np.array_equal(pixels(zero.image), pixels(plain.image))
    guided = run(engine, request(files, "qwen", unit(files, model=str(folder))))
    assert differs(guided.image, plain.image)
    single = run(engine, request(files, "qwen", unit(files, model="tiny_qwen_canny")))
    assert np.array_equal(pixels(single.image), pixels(guided.image))
    path.unlink()


def test_a_zimage_controlnet_guides_text_to_image(
    engine: Engine, files: dict[str, Path], tmp_path: Path
) -> None:
    from sdstudio.testing.tiny_flow import save_tiny_zimage
    from sdstudio.testing.tiny_flow_control import save_tiny_zimage_controlnet

    model = save_tiny_zimage(tmp_path / "zimage")
    folder = save_tiny_zimage_controlnet(model, tmp_path / "folders" / "zimage_union")
    assert inspect_controlnet(folder).family == "zimage"
    files = {**files, "zimage": model}
    plain = run(engine, request(files, "zimage"))
    zero = run(engine, request(files, "zimage", unit(files, model=str(folder), weight=0.0)))
    assert np.array_equal(pixels(zero.image), pixels(plain.image))
    guided = run(engine, request(files, "zimage", unit(files, model=str(folder))))
    assert differs(guided.image, plain.image)
    with pytest.raises(InvalidRequest, match="takes no start or end"):
        engine.control.check(request(files, "zimage", unit(files, model=str(folder), end=0.5)))
    two = (unit(files, model=str(folder)), unit(files, model=str(folder)))
    with pytest.raises(InvalidRequest, match="one at a time"):
        engine.control.check(request(files, "zimage", *two))
    single = save_flow_controlnet_file(folder, tmp_path / "zimage_union.safetensors")
    assert inspect_controlnet(single).family == "zimage"
    with pytest.raises(ModelError, match="as diffusers folders"):
        run(engine, request(files, "zimage", unit(files, model=str(single))))


def test_what_flow_controlnets_cannot_run_is_refused(
    engine: Engine, files: dict[str, Path]
) -> None:
    sd3 = unit(files, model="tiny_sd3_file")
    with pytest.raises(
        InvalidRequest, match=re.escape("is for SD 3.x models, and the model is Flux.1")
    ):
        engine.control.check(request(files, "flux", sd3))
    with pytest.raises(
        InvalidRequest, match=re.escape("is for Flux.1 models, and the model is SD 3.x")
    ):
        engine.control.check(request(files, "sd3", unit(files)))
    init = {"init_image": str(files["init"]), "strength": 0.7}
    with pytest.raises(
        InvalidRequest, match=re.escape("SD 3.x ControlNets guide text to image only")
    ):
        engine.control.check(request(files, "sd3", sd3, mode=Mode.IMG2IMG, **init))
    with pytest.raises(InvalidRequest, match="Balanced control mode only"):
        engine.control.check(request(files, "flux", unit(files, mode=ControlMode.CONTROL)))
    with pytest.raises(InvalidRequest, match="chooses the control of a Union"):
        engine.control.check(request(files, "flux", unit(files, control_type="depth")))
