"""Depth Anything preprocessors (V1 and V2) from the annotator files users have, the
refusal of the other modules that need weights, A1111's Pixel Perfect, and the annotator
download offered by the model manager."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_hub import REPO, resolves
from PIL import Image

from sdstudio.engine.control.annotators import Annotators, annotator_folders
from sdstudio.engine.control.depth_estimation import (
    convert_original,
    find_depth_model,
    infer_config,
    load_depth_model,
    network_size,
)
from sdstudio.engine.control.preprocessor_modules import module_name
from sdstudio.engine.control.preprocessors import (
    check_preprocessor,
    control_map,
    preprocess,
)
from sdstudio.engine.control.units import ControlUnit
from sdstudio.engine.errors import ModelError
from sdstudio.engine.models.catalog import scan_folder
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.settings import Settings
from sdstudio.testing import tiny_depth

A1111_DIR = "extensions/sd-webui-controlnet/annotator/downloads"
COMFY_DIR = "custom_nodes/comfyui_controlnet_aux/ckpts"


def unit(preprocessor: str, **changes: Any) -> ControlUnit:
    return ControlUnit(model="cn", image="x.png", preprocessor=preprocessor, **changes)


def photo(size: tuple[int, int] = (128, 96)) -> Image.Image:
    """A gradient with a bright square: something for a depth network to look at."""
    width, height = size
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    pixels = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2).astype(np.uint8)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = 250
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A1111 and ComfyUI roots with original checkpoints, and transformers folders, all
    made from the same tiny models (seed 0)."""
    root = tmp_path_factory.mktemp("tools")
    a1111 = root / "a1111"
    (a1111 / "models" / "Stable-diffusion").mkdir(parents=True)
    tiny_depth.save_original(a1111 / A1111_DIR / "depth_anything/depth_anything_vitl14.pth", 1)
    comfy = root / "comfy"
    (comfy / "models" / "checkpoints").mkdir(parents=True)
    v2 = comfy / COMFY_DIR / "depth-anything/Depth-Anything-V2-Large/depth_anything_v2_vitl.pth"
    tiny_depth.save_original(v2, 2)
    hf = root / "hf"
    tiny_depth.save_hf_folder(hf / "Depth-Anything-V2-Tiny-hf", 2)
    tiny_depth.save_hf_folder(hf / "depth-anything-tiny-hf", 1)
    return {"a1111": a1111, "comfy": comfy, "hf": hf}


@pytest.fixture
def small_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The network sees a short side of 56 instead of 518: the same steps, a fraction of
    the time (:func:`network_size` is checked at 518 on its own)."""
    from sdstudio.engine.control import depth_estimation

    monkeypatch.setattr(depth_estimation, "NET_SIZE", 56)


def tools_annotators(weights: dict[str, Path]) -> Annotators:
    paths = AppPaths.under(weights["a1111"].parent / "home")
    settings = Settings(model_folders=(str(weights["a1111"]), str(weights["comfy"])))
    return Annotators(lambda: annotator_folders(paths, settings))


# --- Depth maps ------------------------------------------------------------------------


def test_original_checkpoints_in_a1111_and_comfyui_folders_make_depth_maps(
    weights: dict[str, Path], small_network: None
) -> None:
    annotators = tools_annotators(weights)
    folders = annotators.folders()
    assert folders == [weights["a1111"] / A1111_DIR, weights["comfy"] / COMFY_DIR]
    for name, file in (
        ("depth_anything", "depth_anything_vitl14.pth"),
        ("DepthAnythingV2Preprocessor", "depth_anything_v2_vitl.pth"),
    ):
        assert find_depth_model(module_name(name), annotators).name == file
        made = control_map(photo(), unit(name, resolution=64), (96, 80), annotators=annotators)
        assert made.size == (96, 80) and made.mode == "RGB"
        pixels = np.asarray(made)
        assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
        assert pixels.std() > 5  # a map, not a flat picture
        worked = preprocess(photo(), unit(name, resolution=64), annotators=annotators)
        assert worked.shape == (64, 85, 3) and worked.dtype == np.uint8  # at the resolution


def test_both_layouts_give_the_same_map_stretched_over_0_to_255(
    weights: dict[str, Path], small_network: None
) -> None:
    """The transformers folder and the converted original checkpoint of the same weights
    make the same map, at the processor resolution, stretched from black to white."""
    from_tools = tools_annotators(weights)
    from_folders = Annotators([weights["hf"]])
    for name in ("depth_anything", "depth_anything_v2"):
        found = find_depth_model(name, from_folders)
        assert found.name == "config.json" and ("V2" in str(found)) == name.endswith("v2")
        maps = [
            preprocess(photo((96, 96)), unit(name, resolution=64), annotators=annotators)
            for annotators in (from_tools, from_folders)
        ]
        assert maps[0].shape == (64, 64, 3)  # a multiple of 64: no padding stretched too
        assert maps[0].min() == 0 and maps[0].max() == 255
        assert np.array_equal(maps[0], maps[1])


def test_conversion_maps_every_key_and_reads_the_config_from_shapes() -> None:
    import torch
    from transformers import DepthAnythingForDepthEstimation

    for version, layers in ((1, [1, 2, 3, 4]), (2, [3, 6, 9, 12])):
        model = tiny_depth.tiny_depth_model(version)
        state = tiny_depth.original_state_dict(model)
        config = infer_config(state, version)
        assert config.backbone_config.out_indices == layers
        assert config.backbone_config.hidden_size == tiny_depth.HIDDEN
        assert config.neck_hidden_sizes == [4, 8, 16, 16] and config.fusion_hidden_size == 8
        wanted = set(DepthAnythingForDepthEstimation(config).state_dict())
        converted = convert_original(state, wanted)
        assert set(converted) == wanted
        for key, value in model.state_dict().items():
            assert torch.equal(converted[key], value), key
        with pytest.raises(ModelError, match="not a Depth Anything checkpoint"):
            convert_original(
                {**state, "pretrained.extra.weight": state["pretrained.norm.weight"]}, wanted
            )
        missing = dict(state)
        missing.pop("depth_head.scratch.output_conv1.weight")
        with pytest.raises(ModelError, match="1 weights missing"):
            convert_original(missing, wanted)
    with pytest.raises(ModelError, match="not a Depth Anything checkpoint"):
        infer_config({"model.weight": torch.zeros(1)}, 2, "other.pth")


@pytest.mark.parametrize(
    ("hidden", "layers", "heads", "v1", "v2"),
    [
        (384, 12, 6, [9, 10, 11, 12], [3, 6, 9, 12]),
        (768, 12, 12, [9, 10, 11, 12], [3, 6, 9, 12]),
        (1024, 24, 16, [21, 22, 23, 24], [5, 12, 18, 24]),
    ],
)
def test_the_real_sizes_are_read_from_shapes(
    hidden: int, layers: int, heads: int, v1: list[int], v2: list[int]
) -> None:
    """vits, vitb and vitl, built without memory (meta tensors) with transformers' own
    configurations of the published models."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    neck = {384: [48, 96, 192, 384], 768: [96, 192, 384, 768], 1024: [256, 512, 1024, 1024]}
    fusion = {384: 64, 768: 128, 1024: 256}[hidden]
    backbone = Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=518,
        patch_size=14,
        out_indices=v2,
        apply_layernorm=True,
        reshape_hidden_states=False,
    )
    published = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=hidden,
        fusion_hidden_size=fusion,
        neck_hidden_sizes=neck[hidden],
    )
    with torch.device("meta"):
        model = DepthAnythingForDepthEstimation(published)
    state = tiny_depth.original_state_dict(model)
    for version, read in ((1, v1), (2, v2)):
        config = infer_config(state, version)
        found = config.backbone_config
        assert (found.hidden_size, found.num_hidden_layers) == (hidden, layers)
        assert (found.num_attention_heads, found.mlp_ratio, found.image_size) == (heads, 4, 518)
        assert found.out_indices == read
        assert config.neck_hidden_sizes == neck[hidden] and config.fusion_hidden_size == fusion
        assert config.head_hidden_size == 32
    assert set(convert_original(state, set(model.state_dict()))) == set(model.state_dict())


def test_the_network_sees_a_short_side_of_518_in_multiples_of_14() -> None:
    assert network_size(512, 512) == (518, 518)
    assert network_size(512, 768) == (518, 784)  # 777 / 14 = 55.5, half to even: 56 * 14
    assert network_size(1024, 512) == (1036, 518)
    assert network_size(64, 85) == (518, 686)


def test_a_missing_annotator_says_what_to_get_and_where_it_looked(tmp_path: Path) -> None:
    empty = tmp_path / "annotators"
    empty.mkdir()
    with pytest.raises(ModelError) as refused:
        check_preprocessor(unit("depth_anything_v2"), Annotators([empty]))
    message = str(refused.value)
    assert "depth_anything_v2_vitl.safetensors" in message and str(empty) in message
    assert A1111_DIR in message and "depth-anything/Depth-Anything-V2-Small-hf" in message
    check_preprocessor(unit("depth_anything_v2"))  # without folders: only the name is checked
    with pytest.raises(ModelError, match=r"depth_anything_vitl14\.pth.*no annotator folder"):
        control_map(photo(), unit("depth_anything"), (64, 64))


def test_a_v1_file_is_not_taken_for_v2(tmp_path: Path) -> None:
    tiny_depth.save_original(tmp_path / "depth_anything" / "depth_anything_vits14.pth", 1)
    tiny_depth.save_hf_folder(tmp_path / "v1-hf", 1)
    annotators = Annotators([tmp_path])
    assert find_depth_model("depth_anything", annotators).name == "depth_anything_vits14.pth"
    with pytest.raises(ModelError, match="Looked in"):
        find_depth_model("depth_anything_v2", annotators)


def test_an_unreadable_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "depth_anything_v2" / "depth_anything_v2_vitl.safetensors"
    bad.parent.mkdir()
    bad.write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="cannot be read"):
        preprocess(
            photo(), unit("depth_anything_v2", resolution=64), annotators=Annotators([tmp_path])
        )
    with pytest.raises(ModelError):
        load_depth_model(bad, "depth_anything_v2")


# --- Modules that need weights sdstudio does not run ---------------------------------


@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("openpose_full", "openpose/body_pose_model.pth"),
        ("DWPreprocessor", "openpose/dw-ll_ucoco_384.onnx"),
        ("openpose_hand", "openpose/hand_pose_model.pth"),
        ("lineart_anime_denoise", "manga_line/erika.pth"),
        ("lineart_anime", "lineart_anime/netG.pth"),
        ("softedge_teed", "TEED/7_model.pth"),
        ("softedge_pidinet", "pidinet/table5_pidinet.pth"),
        ("mlsd", "mlsd/mlsd_large_512_fp32.pth"),
        ("normal_bae", "normal_bae/scannet.pt"),
        ("depth_midas", "midas/dpt_hybrid-midas-501f0c75.pt"),
        ("depth_zoe", "zoedepth/ZoeD_M12_N.pt"),
        ("depth_leres", "leres/res101.pth"),
        ("seg_ofade20k", "oneformer/250_16_swin_l_oneformer_ade20k_160k.pth"),
        ("seg_ufade20k", "uniformer/upernet_global_small.pth"),
    ],
)
def test_other_weight_modules_name_the_file_they_need(name: str, file: str) -> None:
    with pytest.raises(ModelError) as refused:
        check_preprocessor(unit(name))
    message = str(refused.value)
    assert name in message and file in message and "does not run it yet" in message
    assert A1111_DIR in message and COMFY_DIR in message and "unknown" not in message


# --- Pixel Perfect -------------------------------------------------------------------


# --- The download ----------------------------------------------------------------------


@pytest.fixture
def repo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The tiny V2 transformers folder as a Hub repo, with files a download leaves out."""
    folder = tiny_depth.save_hf_folder(tmp_path_factory.mktemp("repo") / "hf", 2)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    files["preprocessor_config.json"] = json.dumps({"do_resize": True}).encode()
    files["pytorch_model.bin"] = b"pickle" * 10
    files["onnx/model.onnx"] = b"onnx" * 10
    files["README.md"] = b"# tiny depth"
    files["handler.py"] = b"import os"
    return files


def test_the_annotator_download_lands_where_the_preprocessor_finds_it(
    hub: Any, tmp_path: Path, small_network: None
) -> None:
    from sdstudio.engine.models.download import ANNOTATOR_DOWNLOADS, download_annotator

    assert "depth-anything/Depth-Anything-V2-Small-hf" in ANNOTATOR_DOWNLOADS
    paths = AppPaths.under(tmp_path / "home")
    folder = paths.models_dir / "annotators"
    seen: list[tuple[int, int]] = []
    snapshot = download_annotator(
        REPO, folder, endpoint=hub.endpoint, progress=lambda d, t: seen.append((d, t))
    )
    fetched = sorted(p.name for p in snapshot.iterdir())
    assert fetched == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert [r[1].rsplit("/", 1)[1] for r in resolves(hub)][-1] == "config.json"  # last
    assert seen[-1][0] == seen[-1][1] > 0
    annotators = Annotators(lambda: annotator_folders(paths, Settings()))
    assert find_depth_model("depth_anything_v2", annotators) == snapshot / "config.json"
    assert scan_folder(paths.models_dir).entries == []  # not listed among the models
    made = control_map(
        photo(), unit("depth_anything_v2", resolution=64), (64, 64), annotators=annotators
    )
    assert made.size == (64, 64)


def test_a_repo_without_safetensors_is_refused() -> None:
    from sdstudio.engine.models.download import choose_transformers_files

    with pytest.raises(ModelError, match="no safetensors"):
        choose_transformers_files({"config.json": 1, "pytorch_model.bin": 5})
    with pytest.raises(ModelError, match="not a transformers model"):
        choose_transformers_files({"model.safetensors": 5})


# --- The preprocess command and the unit dialog ----------------------------------------


def test_cli_preprocess_makes_a_depth_map_from_the_apps_annotators(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    sdstudio_home: Path,
    weights: dict[str, Path],
    small_network: None,
) -> None:
    import shutil

    from sdstudio.cli import main

    source = tmp_path / "photo.png"
    photo().save(source)
    out = tmp_path / "depth.png"
    args = ["preprocess", str(source), "--preprocessor", "depth_anything_v2", "--out", str(out)]
    assert main([*args, "--resolution", "64"]) == 1  # no annotator yet
    assert "depth_anything_v2_vitl.safetensors" in capsys.readouterr().err
    annotators = AppPaths.default().models_dir / "annotators"
    shutil.copytree(weights["hf"] / "Depth-Anything-V2-Tiny-hf", annotators / "tiny-hf")
    assert main([*args, "--resolution", "64"]) == 0
    with Image.open(out) as made:
        assert made.size == (85, 64)
    sized = [*args, "--width", "60", "--height", "40", "--pixel-perfect"]
    assert main(sized) == 0
    with Image.open(out) as made:
        assert made.size == (60, 40)
    assert main([*args, "--pixel-perfect"]) != 0
    assert "--pixel-perfect needs --width" in capsys.readouterr().err


def test_the_dialog_has_pixel_perfect_and_the_depth_preprocessors(
    qtbot: Any, tmp_path: Path
) -> None:
    from sdstudio.ui.control_dialog import ControlUnitDialog

    image = tmp_path / "photo.png"
    photo().save(image)
    dialog = ControlUnitDialog([("cn", "/cn/cn.safetensors")], size=(48, 32))
    qtbot.addWidget(dialog)
    names = [dialog.preprocessor.itemText(i) for i in range(dialog.preprocessor.count())]
    assert "depth_anything" in names and "depth_anything_v2" in names
    dialog.image.setText(str(image))
    dialog.pixel_perfect.setChecked(True)
    assert dialog.unit().pixel_perfect and not dialog.resolution.isEnabled()
    dialog.preprocessor.setCurrentText("depth_anything_v2")  # no annotator in this home
    assert not dialog.show_map()
    assert "depth_anything_v2_vitl.safetensors" in dialog.preview.text()
    edited = ControlUnitDialog([], unit=dialog.unit())
    qtbot.addWidget(edited)
    assert edited.pixel_perfect.isChecked()


# --- A generation guided by a depth map ------------------------------------------------


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_a_generation_runs_a_depth_unit_and_refuses_a_missing_annotator_before_loading(
    tmp_path: Path, weights: dict[str, Path], small_network: None
) -> None:
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.generation import Engine
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.engine.request import GenerationRequest
    from sdstudio.testing.tiny import save_tiny_model
    from sdstudio.testing.tiny_control import save_tiny_controlnet

    model = save_tiny_model(tmp_path / "model")
    save_tiny_controlnet(model, tmp_path / "controlnets" / "tiny_depth")
    source = tmp_path / "photo.png"
    photo().save(source)
    folders: list[Path] = [tmp_path / "empty"]
    engine = Engine(
        PipelineManager(choose_device("cpu")),
        tmp_path / "inputs",
        control_dirs=lambda: [tmp_path / "controlnets"],
        annotator_dirs=lambda: folders,
    )
    engine.control.single_file_config = tmp_path / "controlnets" / "tiny_depth"
    depth = ControlUnit(
        model="tiny_depth", image=str(source), preprocessor="depth_anything_v2", pixel_perfect=True
    )
    request = GenerationRequest(
        prompt="a house", model=str(model), width=64, height=64, steps=2, seed=3, control=(depth,)
    )
    try:
        with pytest.raises(ModelError, match=r"depth_anything_v2_vitl\.safetensors"):
            next(iter(engine.generate(request)))
        assert engine.pipelines.model is None  # refused before the model loaded
        folders[:] = [weights["hf"]]
        made = next(iter(engine.generate(request)))
        assert made.image.size == (64, 64)
        assert made.record.request.control[0].pixel_perfect
        assert engine.control.active is not None
        (read,) = [np.asarray(m) for m in engine.control.active.maps.values()]
        assert read.shape == (64, 64, 3) and (read[..., 0] == read[..., 2]).all()
        assert read.std() > 5  # the depth map guided it, not the photo
    finally:
        engine.pipelines.unload()


def test_the_model_manager_offers_the_depth_download_into_the_annotators_folder(
    qtbot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sdstudio.engine.models import download
    from sdstudio.engine.settings import load_settings
    from sdstudio.ui.model_manager import ModelManager

    called: list[tuple[str, Path]] = []

    def fetch(repo_id: str, folder: Path, **_options: Any) -> Path:
        called.append((repo_id, folder))
        return folder / "snapshot"

    monkeypatch.setattr(download, "download_annotator", fetch)
    paths = AppPaths.default()
    manager = ModelManager(paths, load_settings(paths))
    qtbot.addWidget(manager)
    with qtbot.waitSignal(manager.listed, timeout=30_000):
        pass
    repo = "depth-anything/Depth-Anything-V2-Small-hf"
    manager.repo.setCurrentIndex(manager.repo.findData(repo))
    with qtbot.waitSignal(manager.download_finished, timeout=30_000):
        manager.start_download()
    assert called == [(repo, paths.models_dir / "annotators")]
    assert "annotators" in manager.status.text()
    assert load_settings(paths).downloaded_models == (repo,)  # "Delete download" may remove it
    manager.shutdown()


def test_annotators_run_on_the_models_gpu_unless_it_is_offloaded() -> None:
    from types import SimpleNamespace

    from sdstudio.engine.control.guidance import annotator_device
    from sdstudio.engine.memory import MemoryPlan

    pipelines: Any = SimpleNamespace(
        device=SimpleNamespace(device="cuda"), memory_plan=MemoryPlan()
    )
    assert annotator_device(pipelines) == "cuda"
    pipelines.memory_plan = MemoryPlan(offload="model")
    assert annotator_device(pipelines) == "cpu"
