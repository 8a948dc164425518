"""T2I-Adapters and Union ControlNets as control units: their files recognised (config read
from the shapes), their weight, start and end, the Union control type, what they mix
with, and exact re-runs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.control.control_files import inspect_controlnet, safetensors_family
from sdstudio.engine.control.t2i_adapters import adapter_config, to_diffusers_keys
from sdstudio.engine.control.units import ControlUnit
from sdstudio.engine.devices import choose_device
from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.generation import Engine
from sdstudio.engine.pipelines import PipelineManager
from sdstudio.engine.refine.hires_settings import HiresFix
from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.testing.tiny import save_tiny_model
from sdstudio.testing.tiny_adapters import (
    save_tiny_adapter,
    save_tiny_adapter_file,
    save_tiny_union,
    to_original_adapter_layout,
)
from sdstudio.testing.tiny_control import (
    SDXL_CONTROLNET_SHAPES,
    UNION_SHAPES,
    save_tiny_controlnet,
    write_header_file,
)

SIZE = 64


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    model = save_tiny_model(root / "model")
    folder = save_tiny_adapter(model, root / "control" / "tiny_adapter")
    original = save_tiny_adapter_file(folder, root / "files" / "t2iadapter_tiny_sd14v1.pth")
    flat = save_tiny_adapter_file(folder, root / "files" / "tiny_adapter.safetensors")
    other = save_tiny_adapter(model, root / "control" / "tiny_adapter_b", seed=5)
    controlnet = save_tiny_controlnet(model, root / "control" / "tiny_canny")
    rng = np.random.default_rng(0)
    maps = root / "maps"
    maps.mkdir()
    for name in ("edges", "blobs", "init"):
        pixels = (rng.random((SIZE, SIZE, 3)) > 0.5).astype(np.uint8) * 255
        Image.fromarray(pixels).save(maps / f"{name}.png")
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 16:48] = 255
    Image.fromarray(mask).save(maps / "mask.png")
    return {
        "root": root,
        "model": model,
        "folder": folder,
        "original": original,
        "flat": flat,
        "other": other,
        "controlnet": controlnet,
        **{name: maps / f"{name}.png" for name in ("edges", "blobs", "init", "mask")},
    }


@pytest.fixture(scope="module")
def engine(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = Engine(PipelineManager(choose_device("cpu")), tmp_path_factory.mktemp("inputs"))
    engine.control.folders = lambda: [files["root"] / "control"]
    engine.control.single_file_config = files["controlnet"]
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
    values: dict[str, Any] = {"model": "tiny_adapter", "image": str(files["edges"])}
    values.update(changes)
    return ControlUnit(**values)


def run(engine: Engine, req: GenerationRequest) -> Any:
    return next(iter(engine.generate(req)))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def differs(a: Image.Image, b: np.ndarray, by: float = 0.5) -> bool:
    return float(np.abs(pixels(a) - b).mean()) > by


class ResidualLog:
    """Whether each UNet call received adapter features."""

    def __init__(self, engine: Engine) -> None:
        self.calls: list[bool] = []
        assert engine.control.active is not None
        self._unet = engine.control.active.pipe.unet
        forward = self._unet.forward

        def record(*args: Any, **kwargs: Any) -> Any:  # after the pre-hooks
            self.calls.append(kwargs.get("down_intrablock_additional_residuals") is not None)
            return forward(*args, **kwargs)

        self._unet.forward = record

    def close(self) -> None:
        del self._unet.forward


def test_adapter_files_are_recognised_with_their_config(
    files: dict[str, Path], tmp_path: Path
) -> None:
    import torch
    from diffusers import T2IAdapter
    from safetensors.torch import save_file

    from sdstudio.engine.control.t2i_adapters import load_adapter

    folder = inspect_controlnet(files["folder"])
    assert (folder.kind, folder.family, folder.folder) == ("t2i_adapter", "unknown", True)
    for name in ("original", "flat"):
        found = inspect_controlnet(files[name])
        assert (found.kind, found.folder) == ("t2i_adapter", False), name
    shapes = {k: tuple(v.shape) for k, v in torch.load(files["original"]).items()}
    assert adapter_config(shapes) == {
        "adapter_type": "full_adapter_xl",
        "in_channels": 3,
        "channels": [32, 64],
        "num_res_blocks": 2,
        "downscale_factor": 16,
    }
    # TencentARC's SD 1.4 adapters: 4 levels of 2 blocks, unshuffle by 8; sketch reads gray.
    full = T2IAdapter(in_channels=1, channels=[320, 640, 1280, 1280], num_res_blocks=2)
    layout = to_original_adapter_layout(
        {f"adapter.{k}": v for k, v in full.adapter.state_dict().items()}, dict(full.config)
    )
    assert "body.7.block2.weight" in layout and "body.2.in_conv.weight" in layout
    config = adapter_config({k: tuple(v.shape) for k, v in layout.items()})
    assert (config["adapter_type"], config["in_channels"], config["downscale_factor"]) == (
        "full_adapter",
        1,
        8,
    )
    assert config["channels"] == [320, 640, 1280, 1280] and config["num_res_blocks"] == 2
    header = {k: {"shape": list(v.shape)} for k, v in layout.items()}
    assert safetensors_family(header) == ("sd1", "SD 1.x T2I-Adapter")
    # The light (colour) adapter maps onto diffusers' light adapter.
    light = T2IAdapter(
        channels=[32, 64, 64], num_res_blocks=2, adapter_type="light_adapter", in_channels=3
    )
    state = {f"adapter.{k}": v for k, v in light.adapter.state_dict().items()}
    original = to_original_adapter_layout(state, dict(light.config))
    config = adapter_config({k: tuple(v.shape) for k, v in original.items()})
    assert config["adapter_type"] == "light_adapter" and config["channels"] == [32, 64, 64]
    assert to_diffusers_keys(original, config).keys() == state.keys()
    light_file = tmp_path / "t2iadapter_color_sd14v1.safetensors"
    save_file({k: v.contiguous() for k, v in original.items()}, str(light_file))
    loaded = load_adapter(light_file, folder=False, dtype=torch.float32)
    probe = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(loaded(probe), light(probe), strict=True):
            assert torch.equal(ours, theirs)


def test_the_catalog_lists_adapters_and_unions_as_controlnets(
    files: dict[str, Path], tmp_path: Path
) -> None:
    from sdstudio.engine.models.catalog import scan_folder

    webui = tmp_path / "webui"
    (webui / "models" / "Stable-diffusion").mkdir(parents=True)
    control = webui / "models" / "ControlNet"
    shutil.copytree(files["folder"], control / "tiny_adapter")
    shutil.copy(files["flat"], control / "tiny_adapter_file.safetensors")
    union = dict(UNION_SHAPES, **SDXL_CONTROLNET_SHAPES)
    write_header_file(control / "union_promax.safetensors", union)
    found = {e.name: (e.kind, e.family_label) for e in scan_folder(webui).entries}
    assert found == {
        "tiny_adapter": ("controlnet", "Unknown T2I-Adapter"),
        "tiny_adapter_file": ("controlnet", "Unknown T2I-Adapter"),
        "union_promax": ("controlnet", "SDXL Union"),
    }


def test_union_control_types_are_read_under_each_tools_names() -> None:
    from sdstudio.engine.control.union import control_mode

    for names, index in (
        (("openpose", "OpenPose", "dw_openpose_full"), 0),
        (("Depth", "depth_midas"), 1),
        (("Soft Edge", "hed/pidi/scribble/ted", "softedge_pidinet"), 2),
        (("Hard Edge", "canny/lineart/anime_lineart/mlsd", "lineart_realistic"), 3),
        (("Normal Map", "normal_bae"), 4),
        (("Segmentation", "seg_ofade20k"), 5),
        (("Tile/Blur", "tile_resample"), 6),
        (("Inpaint", "repaint", "inpaint_only"), 7),
    ):
        for name in names:
            assert control_mode(name, 8, "u") == index, name
    with pytest.raises(InvalidRequest, match="reads 6 control types"):
        control_mode("Inpaint", 6, "u")


def test_adapters_of_layouts_that_cannot_run_are_refused(tmp_path: Path) -> None:
    skip = {"conv_in.weight": (320, 192, 3, 3), "body.0.block1.weight": (320, 320, 3, 3)}
    skip["body.0.skep.weight"] = (320, 320, 3, 3)
    path = write_header_file(tmp_path / "odd.safetensors", skip)
    with pytest.raises(ModelError, match="layout that cannot run"):
        inspect_controlnet(path)
    wide = {"conv_in.weight": (320, 100, 3, 3), "body.0.block1.weight": (320, 320, 3, 3)}
    with pytest.raises(ModelError, match="no pixel unshuffle"):
        inspect_controlnet(write_header_file(tmp_path / "wide.safetensors", wide))
    sd15_union = dict(UNION_SHAPES)
    sd15_union["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"] = (320, 768)
    with pytest.raises(
        ModelError, match=r"SD 1\.x Union ControlNet; Union ControlNets run with SDXL"
    ):
        inspect_controlnet(write_header_file(tmp_path / "union15.safetensors", sd15_union))
    style = {"style_embedding": (1, 8, 1024), "ln_post.weight": (1024,)}
    with pytest.raises(ModelError, match="style adapter"):
        inspect_controlnet(write_header_file(tmp_path / "style.safetensors", style))


def test_adapter_weight_zero_is_the_plain_image_and_weight_one_guides(
    engine: Engine, files: dict[str, Path]
) -> None:
    plain = pixels(run(engine, request(files)).image)
    zero = run(engine, request(files, unit(files, weight=0.0)))
    guided = run(engine, request(files, unit(files)))
    assert np.array_equal(pixels(zero.image), plain)
    assert differs(guided.image, plain)
    assert guided.record.extra["control"] == [{"name": "tiny_adapter", "hash": ""}]
    for name in ("original", "flat"):  # the single files load as the folder
        got = run(engine, request(files, unit(files, model=str(files[name]))))
        assert np.array_equal(pixels(got.image), pixels(guided.image)), name
        extra = got.record.extra["control"][0]
        assert extra["name"] == files[name].stem and len(extra["hash"]) == 8


def test_adapter_start_and_end_are_respected(engine: Engine, files: dict[str, Path]) -> None:
    run(engine, request(files, unit(files)))  # loads the model
    for start, end, expected in (
        (0.0, 0.5, [True, True, False, False]),
        (0.5, 1.0, [False, False, True, True]),
        (0.25, 0.75, [False, True, True, False]),
    ):
        log = ResidualLog(engine)
        try:
            run(engine, request(files, unit(files, start=start, end=end), guidance_scale=1.0))
        finally:
            log.close()
        assert log.calls == expected, (start, end)
    full = pixels(run(engine, request(files, unit(files))).image)
    plain = pixels(run(engine, request(files)).image)
    half = pixels(run(engine, request(files, unit(files, end=0.5))).image)
    assert not np.array_equal(half, full) and not np.array_equal(half, plain)


def test_adapters_mix_with_each_other_and_with_controlnets_and_rerun_exactly(
    engine: Engine, files: dict[str, Path]
) -> None:
    one = pixels(run(engine, request(files, unit(files))).image)
    second = unit(files, model="tiny_adapter_b", image=str(files["blobs"]), weight=0.7)
    both = run(engine, request(files, unit(files), second))
    assert differs(both.image, one)
    net = unit(files, model="tiny_canny", image=str(files["blobs"]))
    mixed = run(engine, request(files, unit(files), net))
    assert type(engine.control.active.pipe.pipe).__name__ == "StableDiffusionControlNetPipeline"
    alone = pixels(run(engine, request(files, net)).image)
    assert differs(mixed.image, one) and differs(mixed.image, alone)
    assert [e["name"] for e in mixed.record.extra["control"]] == ["tiny_adapter", "tiny_canny"]
    rerun = run(engine, mixed.record.request)
    assert np.array_equal(pixels(rerun.image), pixels(mixed.image))


def test_adapters_guide_image_to_image_inpainting_and_hires(
    engine: Engine, files: dict[str, Path]
) -> None:
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
        assert differs(guided.image, plain), mode
    hires = HiresFix(scale=1.5, steps=2, denoise=0.6)
    log = ResidualLog(engine)
    try:
        guided = run(engine, request(files, unit(files), hires=hires, steps=2))
    finally:
        log.close()
    assert guided.image.size == (96, 96)
    assert log.calls == [True] * (2 + 2)  # both passes are guided


def test_adapter_settings_that_cannot_run_are_refused(
    engine: Engine, files: dict[str, Path]
) -> None:
    with pytest.raises(InvalidRequest, match="Balanced control mode only"):
        run(engine, request(files, unit(files, mode="prompt")))
    with pytest.raises(InvalidRequest, match="inpaint preprocessors"):
        run(engine, request(files, unit(files, preprocessor="inpaint_only")))
    with pytest.raises(InvalidRequest, match="multiples of 16"):
        run(engine, request(files, unit(files), width=72))
    with pytest.raises(InvalidRequest, match="Clear the control type"):
        run(engine, request(files, unit(files, control_type="canny")))
    assert run(engine, request(files, unit(files, control_type="Unknown"))).image


@pytest.fixture(scope="module")
def union(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from sdstudio.testing.tiny_refiner import save_tiny_sdxl

    root = tmp_path_factory.mktemp("union")
    model = save_tiny_sdxl(root / "sdxl")
    folder = save_tiny_union(model, root / "control" / "tiny_union")
    save_tiny_adapter(model, root / "control" / "xl_adapter")
    rng = np.random.default_rng(4)
    edges = root / "edges.png"
    Image.fromarray((rng.random((SIZE, SIZE, 3)) > 0.5).astype(np.uint8) * 255).save(edges)
    engine = Engine(PipelineManager(choose_device("cpu")), root / "inputs")
    engine.control.folders = lambda: [root / "control"]
    base = {"model": str(model), "width": SIZE, "height": SIZE, "steps": 3, "seed": 5}
    yield {"engine": engine, "folder": folder, "edges": edges, "base": base, "root": root}
    engine.pipelines.unload()


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_a_union_controlnet_reads_its_control_type(union: dict[str, Any]) -> None:
    engine, base = union["engine"], union["base"]
    found = inspect_controlnet(union["folder"])
    assert (found.kind, found.folder) == ("union", True)

    def guided(control_type: str, weight: float = 1.0) -> Any:
        item = ControlUnit(
            model="tiny_union", image=str(union["edges"]), control_type=control_type, weight=weight
        )
        return run(engine, GenerationRequest(prompt="a cat", control=(item,), **base))

    plain = pixels(run(engine, GenerationRequest(prompt="a cat", **base)).image)
    canny = guided("canny")
    assert type(engine.control.active.pipe).__name__ == "StableDiffusionXLControlNetUnionPipeline"
    assert differs(canny.image, plain)
    assert np.array_equal(pixels(guided("canny", weight=0.0).image), plain)
    depth = guided("depth")
    assert differs(depth.image, pixels(canny.image), 0.1)
    # A1111's and Forge's names choose the same control.
    same = guided("Hard Edge")  # A1111's name
    assert np.array_equal(pixels(same.image), pixels(canny.image))
    assert canny.record.extra["control"] == [{"name": "tiny_union", "hash": ""}]
    rerun = run(engine, canny.record.request)
    assert np.array_equal(pixels(rerun.image), pixels(canny.image))
    two = (
        ControlUnit(model="tiny_union", image=str(union["edges"]), control_type="canny"),
        ControlUnit(model="tiny_union", image=str(union["edges"]), control_type="depth"),
    )
    both = run(engine, GenerationRequest(prompt="a cat", control=two, **base))
    assert differs(both.image, pixels(canny.image)) and differs(both.image, pixels(depth.image))
    # One file with diffusers' key names loads as the folder.
    flat = union["root"] / "files" / "tiny_union.safetensors"
    flat.parent.mkdir()
    shutil.copy(union["folder"] / "diffusion_pytorch_model.safetensors", flat)
    assert inspect_controlnet(flat).kind == "union"
    engine.control.single_file_config = union["folder"]
    item = ControlUnit(model=str(flat), image=str(union["edges"]), control_type="canny")
    single = run(engine, GenerationRequest(prompt="a cat", control=(item,), **base))
    assert np.array_equal(pixels(single.image), pixels(canny.image))
    assert single.record.extra["control"][0]["name"] == "tiny_union"
    with pytest.raises(InvalidRequest, match=r"needs a control type.*openpose, depth"):
        guided("")
    with pytest.raises(InvalidRequest, match="'sparkles' is unknown"):
        guided("sparkles")
    with pytest.raises(InvalidRequest, match="reads 6 control types"):
        guided("tile")


def test_union_combinations_that_cannot_run_are_refused(
    union: dict[str, Any], files: dict[str, Path]
) -> None:
    engine, base = union["engine"], union["base"]
    save_tiny_controlnet(Path(base["model"]), union["root"] / "control" / "xl_canny")
    image = str(union["edges"])
    item = ControlUnit(model="tiny_union", image=image, control_type="canny")
    plain_net = ControlUnit(model="xl_canny", image=image)
    with pytest.raises(InvalidRequest, match="Union ControlNets cannot run together"):
        run(engine, GenerationRequest(prompt="a", control=(item, plain_net), **base))
    guessing = ControlUnit(model="tiny_union", image=image, control_type="canny", mode="control")
    with pytest.raises(InvalidRequest, match='more important" cannot run with a Union'):
        run(engine, GenerationRequest(prompt="a", control=(guessing,), **base))
    sd1 = {**base, "model": str(files["model"])}
    with pytest.raises(InvalidRequest, match="tiny_union is for SDXL models"):
        run(engine, GenerationRequest(prompt="a", control=(item,), **sd1))
    # A T2I-Adapter guides beside a Union ControlNet.
    adapter = ControlUnit(model="xl_adapter", image=image)
    alone = run(engine, GenerationRequest(prompt="a", control=(item,), **base))
    mixed = run(engine, GenerationRequest(prompt="a", control=(item, adapter), **base))
    assert differs(mixed.image, pixels(alone.image))


def test_the_features_are_added_as_diffusers_adapter_pipeline_adds_them(
    files: dict[str, Path],
) -> None:
    import torch
    from diffusers import StableDiffusionAdapterPipeline, StableDiffusionPipeline, T2IAdapter

    from sdstudio.engine.control.t2i_adapters import AdapterGuided, AdapterUnit

    base = StableDiffusionPipeline.from_pretrained(
        files["model"], local_files_only=True, safety_checker=None
    )
    base.set_progress_bar_config(disable=True)
    adapter = T2IAdapter.from_pretrained(files["folder"], local_files_only=True)
    image = Image.open(files["edges"]).convert("RGB")
    common = {"prompt": "a house", "num_inference_steps": 3, "height": SIZE, "width": SIZE}
    common["output_type"] = "np"
    theirs = StableDiffusionAdapterPipeline.from_pipe(base, adapter=adapter)
    theirs.set_progress_bar_config(disable=True)
    expected = theirs(
        image=image,
        adapter_conditioning_scale=0.7,
        generator=torch.Generator().manual_seed(3),
        **common,
    ).images
    ours = AdapterGuided(base)(
        t2i_adapters=[AdapterUnit(adapter, image, 0.7, 0.0, 1.0)],
        generator=torch.Generator().manual_seed(3),
        **common,
    ).images
    plain = base(generator=torch.Generator().manual_seed(3), **common).images
    assert np.abs(ours - expected).max() < 1e-4
    assert np.abs(plain - expected).max() > 0.01
