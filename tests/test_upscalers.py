"""Upscaler files: found where A1111, ComfyUI, InvokeAI and sdstudio keep them, by
file name, path or A1111's names; loaded without running code; refused with a reason
when they are no upscaler; listed by the catalog."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest

from sdstudio.engine.errors import ModelError
from sdstudio.engine.models.catalog import list_models, network_folders, scan_folder
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.refine.upscaler_files import check_usable, read_state_dict
from sdstudio.engine.refine.upscalers import (
    UpscalerCache,
    display_name,
    find_upscaler,
    load_upscaler,
    upscaler_choices,
    upscaler_label,
)
from sdstudio.engine.settings import Settings
from sdstudio.testing.tiny_upscalers import write_tiny_upscaler


@pytest.fixture
def tools(tmp_path: Path) -> dict[str, Path]:
    """An A1111 root, a ComfyUI root and an InvokeAI root with upscaler files, and
    sdstudio's own models folder (under ``home``)."""
    a1111 = tmp_path / "webui"
    (a1111 / "models" / "Stable-diffusion").mkdir(parents=True)
    write_tiny_upscaler(a1111 / "models/ESRGAN/4x-UltraSharp.pth", "esrgan", 4)
    write_tiny_upscaler(
        a1111 / "models/RealESRGAN/RealESRGAN_x4plus.pth", "esrgan", 4, layout="new",
        wrap="params_ema",
    )  # fmt: skip
    write_tiny_upscaler(a1111 / "models/SwinIR/SwinIR_4x.pth", "swinir", 2)
    write_tiny_upscaler(a1111 / "models/DAT/DAT_x2.pth", "dat", 2)
    comfyui = tmp_path / "ComfyUI"
    (comfyui / "models" / "checkpoints").mkdir(parents=True)
    write_tiny_upscaler(
        comfyui / "models/upscale_models/realesr-general-x4v3.safetensors", "compact", 4
    )
    write_tiny_upscaler(
        comfyui / "models/upscale_models/2x/RealESRGAN_x2plus.pth", "esrgan", 2, layout="new"
    )
    invokeai = tmp_path / "invokeai"
    write_tiny_upscaler(
        invokeai / "models/any/spandrel_image_to_image/4x_NMKD-Siax.safetensors", "compact", 4
    )
    home = tmp_path / "home"
    write_tiny_upscaler(home / "data/models/upscalers/1x-Denoise.pth", "compact", 1)
    return {"a1111": a1111, "comfyui": comfyui, "invokeai": invokeai, "home": home}


def folders_of(tools: dict[str, Path]) -> list[Path]:
    """The upscaler folders the settings give, as the engine gets them."""
    paths = AppPaths.under(tools["home"])
    roots = (str(tools["a1111"]), str(tools["comfyui"]), str(tools["invokeai"]))
    return network_folders(paths, Settings(model_folders=roots), "upscaler")


def test_the_upscaler_folders_of_each_tool_are_searched(tools: dict[str, Path]) -> None:
    folders = folders_of(tools)
    home, a1111, comfyui = tools["home"], tools["a1111"], tools["comfyui"]
    assert set(folders) >= {
        home / "data/models",  # the app's own folder, searched whole
        a1111 / "models/ESRGAN",
        a1111 / "models/RealESRGAN",
        a1111 / "models/SwinIR",
        a1111 / "models/DAT",
        comfyui / "models/upscale_models",
        tools["invokeai"] / "models/any/spandrel_image_to_image",
    }
    assert a1111 / "models/Stable-diffusion" not in folders
    assert upscaler_choices(folders) == sorted(
        [
            "1x-Denoise",
            "4x-UltraSharp",
            "4x_NMKD-Siax",
            "DAT_x2",
            "RealESRGAN_x2plus",
            "RealESRGAN_x4plus",
            "SwinIR_4x",
            "realesr-general-x4v3",
        ]
    )


@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("4x-UltraSharp", "webui/models/ESRGAN/4x-UltraSharp.pth"),
        ("4X-ULTRASHARP", "webui/models/ESRGAN/4x-UltraSharp.pth"),
        ("4x-UltraSharp.pth", "webui/models/ESRGAN/4x-UltraSharp.pth"),
        ("R-ESRGAN 4x+", "webui/models/RealESRGAN/RealESRGAN_x4plus.pth"),
        ("R-ESRGAN 2x+", "ComfyUI/models/upscale_models/2x/RealESRGAN_x2plus.pth"),
        ("R-ESRGAN General 4xV3", "ComfyUI/models/upscale_models/realesr-general-x4v3.safetensors"),
        ("SwinIR 4x", "webui/models/SwinIR/SwinIR_4x.pth"),
        ("DAT x2", "webui/models/DAT/DAT_x2.pth"),
        ("4x_NMKD-Siax", "invokeai/models/any/spandrel_image_to_image/4x_NMKD-Siax.safetensors"),
        ("1x-Denoise", "home/data/models/upscalers/1x-Denoise.pth"),
        ("SDXL\\4x-UltraSharp.pth", "webui/models/ESRGAN/4x-UltraSharp.pth"),  # a Windows name
    ],
)
def test_an_upscaler_is_found_by_stem_file_name_or_a1111_name(
    tools: dict[str, Path], name: str, file: str
) -> None:
    found = find_upscaler(name, folders_of(tools))
    assert found == (tools["a1111"].parent / file).resolve()
    assert load_upscaler(found).path == found


def test_a_path_is_taken_as_it_is_and_recorded_by_its_stem(tools: dict[str, Path]) -> None:
    path = tools["comfyui"] / "models/upscale_models/realesr-general-x4v3.safetensors"
    assert find_upscaler(str(path), []) == path.resolve()
    assert display_name(str(path)) == "realesr-general-x4v3"
    assert display_name("C:\\models\\4x-UltraSharp.pth") == "4x-UltraSharp"
    assert display_name("R-ESRGAN 4x+") == "R-ESRGAN 4x+"
    name, short = upscaler_label(str(path))
    assert name == "realesr-general-x4v3" and len(short) == 10
    assert upscaler_label("lanczos") == ("Lanczos", "")


def test_a_name_not_found_names_the_folders_searched_and_the_built_in_upscalers(
    tools: dict[str, Path],
) -> None:
    folders = folders_of(tools)
    with pytest.raises(ModelError) as caught:
        find_upscaler("4x-Missing", folders, built_in=("Lanczos", "Nearest"))
    message = str(caught.value)
    assert (
        "'4x-Missing' was not found" in message
        and "Built-in upscalers: Lanczos, Nearest" in message
    )
    assert str(tools["a1111"] / "models/ESRGAN") in message and "\n" not in message
    with pytest.raises(ModelError, match="no upscaler folders are set"):
        find_upscaler("4x-Missing", [])
    with pytest.raises(ModelError, match="LDSR is a latent diffusion upscaler"):
        find_upscaler("LDSR", folders)
    text = tools["a1111"] / "notes.txt"
    text.write_text("x")
    with pytest.raises(ModelError, match=r"notes\.txt is not an upscaler file"):
        find_upscaler(str(text), [])


@pytest.mark.parametrize(
    ("architecture", "scale", "layout", "suffix", "wrap", "detected"),
    [
        ("esrgan", 4, "old", ".pth", None, "ESRGAN"),
        ("esrgan", 2, "old", ".safetensors", None, "ESRGAN"),
        ("esrgan", 4, "new", ".pth", "params_ema", "ESRGAN"),
        ("esrgan", 2, "new", ".safetensors", None, "ESRGAN"),
        ("esrgan", 1, "old", ".ckpt", "state_dict", "ESRGAN"),
        ("compact", 4, "old", ".pt", "params", "RealESRGAN Compact"),
        ("compact", 2, "old", ".safetensors", None, "RealESRGAN Compact"),
        ("swinir", 2, "old", ".pth", None, "SwinIR"),
        ("dat", 2, "old", ".safetensors", None, "DAT"),
    ],
)
def test_spandrel_recognises_the_tiny_files_and_their_scale(
    tmp_path: Path,
    architecture: str,
    scale: int,
    layout: str,
    suffix: str,
    wrap: str | None,
    detected: str,
) -> None:
    path = write_tiny_upscaler(
        tmp_path / f"tiny{suffix}", architecture, scale, layout=layout, wrap=wrap
    )
    model = load_upscaler(path)
    assert (model.architecture, model.scale, model.name) == (detected, scale, "tiny")
    purpose = "Restoration" if scale == 1 else "SR"
    assert model.descriptor.purpose == purpose and not model.descriptor.model.training


class Payload:
    """A pickled object that runs a shell command creating ``marker`` when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch '{self.marker}'",))


def test_a_pickle_that_holds_code_is_refused_without_running_it(tmp_path: Path) -> None:
    import torch

    from sdstudio.testing.tiny_upscalers import tiny_upscaler_state_dict

    path = tmp_path / "models" / "ESRGAN" / "4x-Evil.pth"
    path.parent.mkdir(parents=True)
    marker = tmp_path / "ran"
    torch.save({"params_ema": tiny_upscaler_state_dict(), "x": Payload(marker)}, path)
    with pytest.raises(ModelError, match=r"4x-Evil\.pth was not opened.*holds code"):
        load_upscaler(find_upscaler("4x-Evil", [path.parent]))
    assert not marker.exists()


def save_tensors(path: Path, names: tuple[str, ...]) -> Path:
    import torch
    from safetensors.torch import save_file

    save_file({name: torch.zeros(4, 4) for name in names}, str(path))
    return path


def test_files_that_are_no_upscaler_give_a_reason(tmp_path: Path) -> None:
    import torch

    good = write_tiny_upscaler(tmp_path / "good.safetensors", "compact", 2).read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(good[: len(good) - 100])
    pickled = write_tiny_upscaler(tmp_path / "good.pth", "compact", 2).read_bytes()
    (tmp_path / "cut.pth").write_bytes(pickled[: len(pickled) // 2])
    save_tensors(tmp_path / "lora.safetensors", ("lora_unet_down.lora_up.weight",))
    save_tensors(tmp_path / "vae.safetensors", ("decoder.conv_in.weight", "encoder.conv_in.weight"))
    save_tensors(tmp_path / "sd.safetensors", ("model.diffusion_model.input_blocks.0.0.weight",))
    save_tensors(tmp_path / "other.safetensors", ("backbone.layer1.weight", "head.fc.weight"))
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "no_weights.pth")
    with warnings.catch_warnings():  # TorchScript is deprecated, but such files exist
        warnings.simplefilter("ignore", FutureWarning)
        script = torch.jit.script(torch.nn.Conv2d(3, 3, 1))
        torch.jit.save(script, str(tmp_path / "script.pt"))
    expected = {
        "cut.safetensors": "not a complete .safetensors file",
        "cut.pth": "could not be read: it is truncated or damaged",
        "lora.safetensors": "is a LoRA, not an upscaler",
        "vae.safetensors": "is a VAE, not an upscaler",
        "sd.safetensors": "is a Stable Diffusion checkpoint, not an upscaler",
        "other.safetensors": "not an upscaler model sdstudio knows",
        "no_weights.pth": "holds no weights",
        "script.pt": "is a TorchScript file",
    }
    for name, reason in expected.items():
        with pytest.raises(ModelError, match=reason) as caught:
            load_upscaler(tmp_path / name)
        assert str(caught.value).startswith(name) and "\n" not in str(caught.value)


def test_face_restoration_and_inpainting_models_are_refused(tmp_path: Path) -> None:
    """spandrel's own descriptors, with the purposes GFPGAN/CodeFormer and LaMa have."""
    import torch
    from spandrel import MAIN_REGISTRY, ImageModelDescriptor, MaskedImageModelDescriptor

    module = torch.nn.Conv2d(3, 3, 1)
    common: dict[str, Any] = {
        "tags": [],
        "supports_half": False,
        "supports_bfloat16": True,
        "input_channels": 3,
        "output_channels": 3,
    }

    def descriptor(kind: Any, architecture: str, **more: Any) -> Any:
        spec = MAIN_REGISTRY.get(architecture).architecture
        return kind(module, module.state_dict(), spec, **common, **more)

    face = descriptor(ImageModelDescriptor, "GFPGAN", purpose="FaceSR", scale=1)
    lama = descriptor(MaskedImageModelDescriptor, "LaMa", purpose="Inpainting")
    sr = descriptor(ImageModelDescriptor, "ESRGAN", purpose="SR", scale=2)
    with pytest.raises(ModelError, match=r"GFPGANv1\.4\.pth is a face restoration model"):
        check_usable(face, Path("GFPGANv1.4.pth"))
    with pytest.raises(ModelError, match=r"big-lama\.pt is an inpainting model \(LaMa\)"):
        check_usable(lama, Path("big-lama.pt"))
    check_usable(sr, Path("4x.pth"))


def test_the_cache_keeps_the_last_upscaler_while_its_file_is_unchanged(tmp_path: Path) -> None:
    first = write_tiny_upscaler(tmp_path / "a.pth", "compact", 2)
    second = write_tiny_upscaler(tmp_path / "b.safetensors", "compact", 4)
    cache = UpscalerCache()
    model = cache.get(first)
    assert cache.get(first) is model
    other = cache.get(second)
    assert other is not model and other.scale == 4
    assert cache.get(first) is not model  # only the last one is kept
    kept = cache.get(first)
    write_tiny_upscaler(first, "compact", 2, seed=1)
    os.utime(first, ns=(1, 1))  # a new file under the same name
    assert cache.get(first) is not kept
    assert cache.short_hash(first) == upscaler_label(str(first))[1]
    cache.clear()
    assert cache.get(first) is not kept


def test_state_dicts_are_unwrapped_from_training_containers(tmp_path: Path) -> None:
    path = write_tiny_upscaler(tmp_path / "net_g.pth", "compact", 2, wrap="params_ema")
    assert sorted(read_state_dict(path)) == sorted(
        read_state_dict(write_tiny_upscaler(tmp_path / "plain.pth", "compact", 2))
    )


def test_the_catalog_lists_upscaler_files_of_each_tool(tools: dict[str, Path]) -> None:
    paths = AppPaths.under(tools["home"])
    settings = Settings(
        model_folders=(str(tools["a1111"]), str(tools["comfyui"]), str(tools["invokeai"]))
    )
    entries = list_models(paths, settings, with_hf=False).entries
    upscalers = {(e.name, e.format, e.source) for e in entries if e.kind == "upscaler"}
    assert upscalers == {
        ("1x-Denoise", "pth", "app"),
        ("4x-UltraSharp", "pth", "a1111"),
        ("RealESRGAN_x4plus", "pth", "a1111"),
        ("SwinIR_4x", "pth", "a1111"),
        ("DAT_x2", "pth", "a1111"),
        ("realesr-general-x4v3", "safetensors", "comfyui"),
        ("RealESRGAN_x2plus", "pth", "comfyui"),
        ("4x_NMKD-Siax", "safetensors", "invokeai"),
    }
    assert {e.family for e in entries if e.kind == "upscaler"} == {"unknown"}
    # A .pth elsewhere is no model sdstudio lists; one in a plain folder's upscalers is.
    plain = tools["home"] / "plain"
    write_tiny_upscaler(plain / "stray.pth", "compact", 2)
    write_tiny_upscaler(plain / "upscale_models" / "kept.pth", "compact", 2)
    listed = {(e.name, e.kind) for e in scan_folder(plain).entries}
    assert listed == {("kept", "upscaler")}
