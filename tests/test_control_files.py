"""ControlNet files: found where each tool keeps them, their family read from the header,
and the kinds that cannot run refused with the reason."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from sdstudio.engine.control.control_files import (
    controlnet_family,
    find_controlnet,
    folder_family,
    inspect_controlnet,
)
from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.models.catalog import network_folders, scan_folder
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.settings import Settings
from sdstudio.testing.tiny_control import (
    FLUX_CONTROLNET_SHAPES,
    SDXL_CONTROLNET_SHAPES,
    T2I_ADAPTER_SHAPES,
    write_header_file,
)

SD15_ORIGINAL = {
    "control_model.input_hint_block.0.weight": (16, 3, 3, 3),
    "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
    "control_model.zero_convs.0.0.weight": (320, 320, 1, 1),
}
SD2_DIFFUSERS = {
    "controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
}


def test_the_family_is_read_from_the_header() -> None:
    assert controlnet_family(SD15_ORIGINAL) == ("sd1", "SD 1.x")
    assert controlnet_family(SD2_DIFFUSERS) == ("sd2", "SD 2.x")
    assert controlnet_family(SDXL_CONTROLNET_SHAPES) == ("sdxl", "SDXL")
    no_attention = {"controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3)}
    assert controlnet_family({**no_attention, "add_embedding.linear_1.weight": (8, 8)})[0] == "sdxl"


@pytest.mark.parametrize(
    ("shapes", "kind"),
    [
        (FLUX_CONTROLNET_SHAPES, "Flux ControlNet"),
        ({"pos_embed.proj.weight": (8, 16), "transformer_blocks.0.x": (8,)}, "SD 3 ControlNet"),
        (
            {"control_model.lora_controlnet": (1,), "input_hint_block.0.weight": (1,)},
            "Control-LoRA",
        ),
    ],
)
def test_other_control_models_are_refused_as_not_supported_yet(
    shapes: dict[str, tuple[int, ...]], kind: str, tmp_path: Path
) -> None:
    path = write_header_file(tmp_path / "control.safetensors", shapes)
    with pytest.raises(ModelError, match=f"{kind}, which sdstudio cannot run yet"):
        inspect_controlnet(path)


def test_a_model_that_is_no_controlnet_is_refused(tmp_path: Path) -> None:
    path = write_header_file(tmp_path / "lora.safetensors", {"conv_in.weight": (4, 4, 3, 3)})
    with pytest.raises(ModelError, match="not a ControlNet"):
        inspect_controlnet(path)


def test_diffusers_folders_are_told_by_their_config(tmp_path: Path) -> None:
    folder = tmp_path / "cn"
    folder.mkdir()
    (folder / "config.json").write_text(
        '{"_class_name": "ControlNetModel", "cross_attention_dim": 2048, '
        '"addition_embed_type": "text_time"}'
    )
    assert folder_family(folder) == ("sdxl", "SDXL")
    (folder / "config.json").write_text('{"_class_name": "FluxControlNetModel"}')
    assert folder_family(folder) == ("flux1", "Flux.1")


def test_a_pickle_with_code_is_refused_and_one_of_weights_is_read(tmp_path: Path) -> None:
    import torch

    bad = tmp_path / "evil.pth"
    with bad.open("wb") as file:
        pickle.dump({"x": print}, file)  # a global that is not a tensor
    with pytest.raises(ModelError, match="pickle"):
        inspect_controlnet(bad)
    good = tmp_path / "control_sd15_canny.pth"
    torch.save({k: torch.zeros(shape) for k, shape in SD15_ORIGINAL.items()}, good)
    assert inspect_controlnet(good).family == "sd1"


def test_found_by_name_in_each_tools_folders(tmp_path: Path) -> None:
    a1111 = tmp_path / "webui"
    (a1111 / "models" / "Stable-diffusion").mkdir(parents=True)
    canny = write_header_file(
        a1111 / "models" / "ControlNet" / "control_v11p_sd15_canny.safetensors", SD15_ORIGINAL
    )
    depth = write_header_file(
        a1111 / "extensions" / "sd-webui-controlnet" / "models" / "depth.safetensors",
        SD15_ORIGINAL,
    )
    comfy = tmp_path / "comfy"
    (comfy / "models" / "checkpoints").mkdir(parents=True)
    xl = write_header_file(
        comfy / "models" / "controlnet" / "xl" / "xl.safetensors", SDXL_CONTROLNET_SHAPES
    )
    invoke = tmp_path / "invoke"
    (invoke / "models" / "sdxl" / "controlnet" / "xl_folder").mkdir(parents=True)
    (invoke / "models" / "sdxl" / "controlnet" / "xl_folder" / "config.json").write_text(
        '{"_class_name": "ControlNetModel", "cross_attention_dim": 2048}'
    )
    paths = AppPaths.under(tmp_path / "home")
    own = write_header_file(paths.controlnets_dir / "mine.safetensors", SD15_ORIGINAL)
    settings = Settings(model_folders=(str(a1111), str(comfy), str(invoke)))
    folders = network_folders(paths, settings, "controlnet")
    assert find_controlnet("control_v11p_sd15_canny [d14c016b]", folders) == canny.resolve()
    assert find_controlnet("control_v11p_sd15_canny.safetensors", folders) == canny.resolve()
    assert find_controlnet("depth", folders) == depth.resolve()
    assert find_controlnet("xl", folders) == xl.resolve()
    assert find_controlnet("xl_folder", folders).name == "xl_folder"
    assert find_controlnet("mine", folders) == own.resolve()
    assert find_controlnet(str(canny), []) == canny.resolve()
    with pytest.raises(InvalidRequest, match="'missing' was not found"):
        find_controlnet("missing", folders)
    entries = [e for root in (a1111, comfy, invoke) for e in scan_folder(root).entries]
    entries += scan_folder(paths.models_dir, source="app").entries
    write_header_file(comfy / "models" / "controlnet" / "adapter.safetensors", T2I_ADAPTER_SHAPES)
    adapter = [e for e in scan_folder(comfy).entries if e.name == "adapter"]
    assert [(e.family, e.family_label) for e in adapter] == [("unknown", "T2I-Adapter")]
    found = {e.name: (e.kind, e.family) for e in entries if e.kind == "controlnet"}
    assert found == {
        "control_v11p_sd15_canny": ("controlnet", "sd1"),
        "depth": ("controlnet", "sd1"),
        "xl": ("controlnet", "sdxl"),
        "xl_folder": ("controlnet", "sdxl"),
        "mine": ("controlnet", "sd1"),
    }
