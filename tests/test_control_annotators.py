"""The annotators sdstudio runs beside Depth Anything: HED (soft edges, safe and
scribble), line art (realistic and coarse) and OpenPose's body model, from the files
users have in A1111's and ComfyUI's folders (tiny random weights in the published
layout here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.control import hed, lineart, openpose
from sdstudio.engine.control.annotator_files import find_annotator_file, load_network
from sdstudio.engine.control.annotators import Annotators, annotator_folders
from sdstudio.engine.control.openpose_draw import (
    COLORS,
    FIELDS,
    LIMBS,
    draw_bodies,
    find_bodies,
)
from sdstudio.engine.control.preprocessor_modules import AVAILABLE, module_name
from sdstudio.engine.control.preprocessors import (
    check_preprocessor,
    control_map,
    preprocess,
)
from sdstudio.engine.control.units import ControlUnit
from sdstudio.engine.errors import ModelError
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.settings import Settings
from sdstudio.testing import tiny_annotators

A1111_DIR = "extensions/sd-webui-controlnet/annotator/downloads"
COMFY_DIR = "custom_nodes/comfyui_controlnet_aux/ckpts"
HUB = "lllyasviel/Annotators"


def unit(preprocessor: str, **changes: Any) -> ControlUnit:
    return ControlUnit(model="cn", image="x.png", preprocessor=preprocessor, **changes)


def photo(size: tuple[int, int] = (128, 96)) -> Image.Image:
    """Gradients with a bright square: edges for the networks to find."""
    width, height = size
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    pixels = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2).astype(np.uint8)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = 250
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An A1111 root with HED and line art, a ComfyUI root with coarse line art and the
    body model, each file where its tool keeps it."""
    root = tmp_path_factory.mktemp("tools")
    a1111 = root / "a1111"
    (a1111 / "models" / "Stable-diffusion").mkdir(parents=True)
    tiny_annotators.save_hed(a1111 / A1111_DIR / "hed" / "ControlNetHED.pth")
    tiny_annotators.save_lineart(a1111 / A1111_DIR / "lineart" / "sk_model.pth")
    comfy = root / "comfy"
    (comfy / "models" / "checkpoints").mkdir(parents=True)
    tiny_annotators.save_lineart(comfy / COMFY_DIR / HUB / "sk_model2.pth", seed=1)
    tiny_annotators.save_openpose(comfy / COMFY_DIR / HUB / "body_pose_model.pth")
    return {"a1111": a1111, "comfy": comfy}


def tools_annotators(tools: dict[str, Path]) -> Annotators:
    paths = AppPaths.under(tools["a1111"].parent / "home")
    settings = Settings(model_folders=(str(tools["a1111"]), str(tools["comfy"])))
    return Annotators(lambda: annotator_folders(paths, settings))


# --- The maps ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "file", "where"),
    [
        ("softedge_hed", "ControlNetHED.pth", f"a1111/{A1111_DIR}/hed"),
        ("HEDPreprocessor", "ControlNetHED.pth", f"a1111/{A1111_DIR}/hed"),
        ("lineart", "sk_model.pth", f"a1111/{A1111_DIR}/lineart"),
        ("LineArtPreprocessor", "sk_model.pth", f"a1111/{A1111_DIR}/lineart"),
        ("lineart_coarse", "sk_model2.pth", f"comfy/{COMFY_DIR}/{HUB}"),
        ("openpose", "body_pose_model.pth", f"comfy/{COMFY_DIR}/{HUB}"),
    ],
)
def test_each_file_is_found_where_its_tool_keeps_it_and_makes_a_map(
    tools: dict[str, Path], name: str, file: str, where: str
) -> None:
    annotators = tools_annotators(tools)
    module = module_name(name)
    assert module in AVAILABLE
    found = find_annotator_file(module, annotators)
    assert found == tools["a1111"].parent / where / file
    check_preprocessor(unit(name), annotators)
    made = control_map(photo(), unit(name, resolution=64), (96, 80), annotators=annotators)
    assert made.size == (96, 80) and made.mode == "RGB"
    worked = preprocess(photo(), unit(name, resolution=64), annotators=annotators)
    assert worked.shape == (64, 85, 3) and worked.dtype == np.uint8  # at the resolution
    if module != "openpose":
        assert (worked[..., 0] == worked[..., 1]).all() and (worked[..., 1] == worked[..., 2]).all()
        assert worked.std() > 3  # a map, not a flat picture


def test_hed_edges_are_the_sigmoid_of_the_averaged_projections() -> None:
    """With zero weights each block's edge map is its projection's bias: 0 to 4, mean 2,
    sigmoid(2) = 0.881, 224 once scaled; the safe map of it is 255."""
    import torch

    network = hed.hed_network(tiny_annotators.HED_WIDTHS)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.zero_()
        for index in range(5):
            getattr(network, f"block{index + 1}").projection.bias.fill_(float(index))
    pixels = np.asarray(photo((64, 64)))
    edges = hed.hed_edges(network, pixels)
    assert edges.shape == (64, 64) and np.allclose(edges, 1 / (1 + np.exp(-2.0)))
    assert (hed.to_uint8(edges) == 224).all()
    assert (hed.to_uint8(hed.safe_step(edges)) == 255).all()


def test_hed_safe_quantises_to_three_levels(tools: dict[str, Path]) -> None:
    values = np.array([0.0, 0.2, 0.33, 0.34, 0.5, 0.66, 0.67, 0.9, 1.0])
    stepped = hed.safe_step(values)
    assert stepped.tolist() == [0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 1.0, 1.0, 1.5]
    assert hed.to_uint8(stepped).tolist() == [0, 0, 0, 127, 127, 127, 255, 255, 255]
    annotators = tools_annotators(tools)
    soft = preprocess(photo(), unit("softedge_hed", resolution=64), annotators=annotators)
    safe = preprocess(photo(), unit("hed_safe", resolution=64), annotators=annotators)
    assert set(np.unique(safe)) <= {0, 127, 255} and len(np.unique(soft)) > 3
    expected = hed.to_uint8(hed.safe_step(soft[..., 0] / 255.0))
    assert (np.abs(safe[..., 0].astype(int) - expected) <= 127).all()
    scribble = preprocess(photo(), unit("scribble_hed", resolution=64), annotators=annotators)
    assert set(np.unique(scribble)) <= {0, 255}


def test_hed_scribble_keeps_thin_strong_lines() -> None:
    edges = np.zeros((64, 64), np.uint8)
    edges[:, 26:36] = 250  # one strong vertical line
    edges[10, :] = 60  # a faint one
    drawn = hed.scribble(edges)
    assert drawn[32, 32] == 255 and drawn[32, 5] == 0 and drawn[10, 5] == 0


def test_line_art_is_inverted_white_lines_on_black(tools: dict[str, Path]) -> None:
    """A generator whose output layer gives sigmoid(0) = 0.5 everywhere draws 127 grey:
    the map is 255 - 127."""
    import torch

    network = lineart.lineart_network(tiny_annotators.LINEART_WIDTH)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.zero_()
    drawn = lineart.drawn_lines(network, np.asarray(photo((64, 64))))
    assert drawn.shape == (64, 64) and (drawn == 127).all()
    annotators = tools_annotators(tools)
    real = tiny_annotators.tiny_lineart()
    pixels = np.asarray(photo((64, 64)))
    made = preprocess(
        photo((64, 64)), unit("lineart_realistic", resolution=64), annotators=annotators
    )
    assert np.array_equal(made[..., 0], 255 - lineart.drawn_lines(real, pixels))


# --- OpenPose's post-processing ------------------------------------------------------

SKELETON = [
    (64, 20), (64, 36), (44, 36), (30, 56), (20, 76), (84, 36), (98, 56), (108, 76),
    (52, 76), (50, 98), (48, 120), (76, 76), (78, 98), (80, 120), (58, 14), (70, 14),
    (52, 18), (76, 18),
]  # fmt: skip
"""A standing person's 18 keypoints (x, y) in a 128x128 image."""


def network_outputs(skeleton: list[tuple[int, int]], size: int = 128) -> tuple[Any, Any]:
    """Heat maps with a bump at each keypoint and fields pointing along each limb within
    2 pixels of it, as a trained network gives them."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    heat = np.zeros((size, size, 19), np.float32)
    for part, (x, y) in enumerate(skeleton):
        heat[:, :, part] = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 2.0**2))
    fields = np.zeros((size, size, 38), np.float32)
    for (a, b), (fx, fy) in zip(LIMBS, FIELDS, strict=True):
        (xa, ya), (xb, yb) = skeleton[a], skeleton[b]
        length = np.hypot(xb - xa, yb - ya)
        ux, uy = (xb - xa) / length, (yb - ya) / length
        along = (xs - xa) * ux + (ys - ya) * uy
        across = np.abs((xs - xa) * uy - (ys - ya) * ux)
        band = (along >= -1) & (along <= length + 1) & (across <= 2)
        fields[band, fx], fields[band, fy] = ux, uy
    return heat, fields


def test_openpose_finds_the_person_and_draws_the_standard_skeleton() -> None:
    heat, fields = network_outputs(SKELETON)
    positions, people = find_bodies(heat, fields)
    assert len(people) == 1
    found = [positions[part] for part in people[0]]
    assert found == [(float(x), float(y)) for x, y in SKELETON]
    canvas = draw_bodies((128, 128), positions, people)
    assert canvas.shape == (128, 128, 3) and canvas.dtype == np.uint8
    for part, (x, y) in enumerate(SKELETON):  # each keypoint a disc in full colour
        assert tuple(canvas[y, x]) == COLORS[part], part
    # The right upper arm (limb 2) in its colour dimmed to 60%, 4 pixels each side.
    assert tuple(canvas[46, 37]) == (153, 102, 0)
    assert tuple(canvas[46 + 9, 37 + 6]) == (0, 0, 0)
    assert canvas[0:8].max() == 0 and canvas[:, 116:].max() == 0  # black elsewhere


def test_the_openpose_map_draws_what_the_network_finds_on_the_padded_image(
    tools: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The network's outputs (made by hand here) are read at the image padded to 128x128
    and the drawing is cut back to the image's 128x112."""
    seen: list[tuple[int, ...]] = []

    def outputs(network: Any, pixels: Any, device: str = "cpu") -> tuple[Any, Any]:
        seen.append(pixels.shape)
        return network_outputs(SKELETON)

    monkeypatch.setattr(openpose, "body_outputs", outputs)
    made = preprocess(
        photo((128, 112)), unit("openpose", resolution=112), annotators=tools_annotators(tools)
    )
    assert seen == [(128, 128, 3)] and made.shape == (112, 128, 3)
    for part, (x, y) in enumerate(SKELETON):
        if y < 112:
            assert tuple(made[y, x]) == COLORS[part], part


def test_openpose_drops_a_person_with_too_few_keypoints() -> None:
    heat, fields = network_outputs(SKELETON)
    heat[:, :, 2:] = 0  # nose and neck only
    positions, people = find_bodies(heat, fields)
    assert len(positions) == 2 and people == []
    assert draw_bodies((128, 128), positions, people).max() == 0


def test_two_people_are_told_apart() -> None:
    left = [(x // 2, y) for x, y in SKELETON]
    right = [(x // 2 + 64, y) for x, y in SKELETON]
    heat_l, fields_l = network_outputs(left)
    heat_r, fields_r = network_outputs(right)
    positions, people = find_bodies(np.maximum(heat_l, heat_r), fields_l + fields_r)
    assert len(people) == 2
    xs = sorted(positions[person[1]][0] for person in people)  # the necks
    assert xs == [32.0, 96.0]


# --- Files and messages --------------------------------------------------------------


def test_the_published_architectures_have_the_published_sizes() -> None:
    """Built without memory: the parameter counts of the published files, and widths
    read back from their shapes."""
    import torch

    for build, count in (
        (hed.hed_network, 14_716_168),
        (lineart.lineart_network, 4_290_945),
        (openpose.body_network, 52_311_446),
    ):
        with torch.device("meta"):
            network = build()
        assert sum(p.numel() for p in network.parameters()) == count
    with torch.device("meta"):
        body = openpose.body_network()
        state = body.state_dict()
        again = openpose.network_from_state(state)
    assert len(state) == 184 and "Mconv7_stage6_L2.weight" in state and "conv4_4_CPM.bias" in state
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in state.items()
    }
    with torch.device("meta"):
        keys = set(lineart.lineart_network().state_dict())
    blocks = {
        f"model2.{i}.conv_block.{j}.{p}"
        for i in range(3)
        for j in (1, 5)
        for p in ("weight", "bias")
    }
    ends = {
        f"{m}.{p}"
        for m in ("model0.1", "model1.0", "model1.3", "model3.0", "model3.3", "model4.1")
        for p in ("weight", "bias")
    }
    assert keys == blocks | ends
    with torch.device("meta"):
        keys = set(hed.hed_network().state_dict())
    assert len(keys) == 37 and {"norm", "block5.convs.2.weight", "block1.projection.bias"} <= keys


def test_a_missing_file_says_what_to_get_and_where_it_looked(tmp_path: Path) -> None:
    empty = tmp_path / "annotators"
    empty.mkdir()
    for name, file in (
        ("softedge_hedsafe", "ControlNetHED.pth"),
        ("lineart_coarse", "sk_model2.pth"),
        ("openpose", "body_pose_model.pth"),
    ):
        with pytest.raises(ModelError) as refused:
            check_preprocessor(unit(name), Annotators([empty]))
        message = str(refused.value)
        assert file in message and str(empty) in message and A1111_DIR in message
        assert f"{COMFY_DIR}/{HUB}" in message
    check_preprocessor(unit("openpose"))  # without folders: only the name is checked
    with pytest.raises(ModelError, match=r"body_pose_model\.pth.*no annotator folder"):
        control_map(photo(), unit("openpose"), (64, 64))


def test_a_wrong_file_is_refused_with_its_name(tmp_path: Path) -> None:
    tiny_annotators.save_hed(tmp_path / "lineart" / "sk_model.pth")  # HED under line art's name
    tiny_annotators.save_lineart(tmp_path / "hed" / "ControlNetHED.pth")
    (tmp_path / "openpose").mkdir()
    (tmp_path / "openpose" / "body_pose_model.pth").write_bytes(b"junk")  # cut short
    annotators = Annotators([tmp_path])
    for name, why in (
        ("lineart_realistic", "not the line art"),
        ("softedge_hed", "not the HED"),
        ("openpose", "body_pose_model.pth"),
    ):
        with pytest.raises(ModelError, match=why) as refused:
            preprocess(photo(), unit(name, resolution=64), annotators=annotators)
        assert str(tmp_path) in str(refused.value) or "body_pose_model" in str(refused.value)
    state = tiny_annotators.tiny_lineart().state_dict()
    state["model4.1.weight"] = state["model4.1.weight"][:, :, :3]  # a layer of another shape
    with pytest.raises(ModelError, match="another shape"):
        load_network(
            tiny_annotators.save_state_dict(state, tmp_path / "bad.pth"),
            lineart.network_from_state,
            "line art",
        )


def test_the_network_is_loaded_once_for_many_maps(
    tools: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[Path] = []
    real = hed.load_network

    def counted(path: Path, *args: Any) -> Any:
        loads.append(path)
        return real(path, *args)

    monkeypatch.setattr(hed, "load_network", counted)
    annotators = tools_annotators(tools)
    for name in ("softedge_hed", "softedge_hedsafe", "scribble_hed"):
        preprocess(photo(), unit(name, resolution=64), annotators=annotators)
    assert len(loads) == 1


def test_the_dialog_offers_the_new_preprocessors_and_others_stay_refused() -> None:
    from sdstudio.ui.control_dialog import preprocessor_names

    names = preprocessor_names()
    for name in (
        "softedge_hed",
        "softedge_hedsafe",
        "lineart_realistic",
        "lineart_coarse",
        "openpose",
    ):
        assert name in names
    for name in ("openpose_full", "openpose_hand", "dw_openpose_full", "lineart_anime"):
        assert name not in names
        with pytest.raises(ModelError, match="does not run it yet"):
            check_preprocessor(unit(name))
