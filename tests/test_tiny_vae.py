"""Tiny VAE files: found where ComfyUI, AUTOMATIC1111 and sdstudio keep them, loaded from
madebyollin's original layout and from diffusers folders, listed, downloaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from fake_hub import REPO

from sdstudio.engine.errors import ModelError
from sdstudio.engine.models.catalog import network_folders, scan_folder
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.settings import Settings
from sdstudio.engine.tiny_vae_files import find_for_family, find_tiny_vaes, load_tiny_vae
from sdstudio.testing.tiny_vae_approx import build_tiny_vae, write_diffusers, write_original


def comfy_root(tmp_path: Path) -> Path:
    root = tmp_path / "ComfyUI"
    (root / "models" / "checkpoints").mkdir(parents=True)
    return root


def decoded(vae: Any, channels: int = 4) -> torch.Tensor:
    latents = torch.randn(1, channels, 6, 5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return vae.decode(latents, return_dict=False)[0]


def test_original_files_in_comfyui_vae_approx_are_found_and_decode_as_the_source(
    tmp_path: Path,
) -> None:
    root = comfy_root(tmp_path)
    source = build_tiny_vae("taesd", seed=1)
    decoder, encoder = write_original(source, root / "models" / "vae_approx", "taesd")
    write_original(build_tiny_vae("taesdxl", seed=2), root / "models" / "vae_approx", "taesdxl")
    folders = network_folders(
        AppPaths.under(tmp_path / "home"), Settings(model_folders=(str(root),)), "tiny_vae"
    )
    assert folders == [root / "models" / "vae_approx"]
    found = find_for_family("sd1", folders)
    assert found is not None and found.path == decoder and found.encoder == encoder
    assert find_for_family("sdxl", folders).path.name == "taesdxl_decoder.safetensors"
    assert find_for_family("flux1", folders) is None
    assert find_for_family("qwen-image", folders) is None  # no published tiny VAE
    loaded = load_tiny_vae(found, torch.float32)
    assert torch.equal(decoded(loaded), decoded(source))
    assert torch.equal(loaded.encoder.layers[0].weight, source.encoder.layers[0].weight)


def test_a1111_pth_pickles_and_diffusers_folders_load(tmp_path: Path) -> None:
    a1111 = tmp_path / "webui"
    (a1111 / "models" / "Stable-diffusion").mkdir(parents=True)
    approx = a1111 / "models" / "VAE-approx"
    source = build_tiny_vae("taef1", seed=4)
    write_original(source, approx, "taef1", suffix=".pth")
    torch.save({"weight": torch.zeros(1)}, approx / "model.pt")  # A1111's own approximation
    folders = network_folders(
        AppPaths.under(tmp_path / "home"), Settings(model_folders=(str(a1111),)), "tiny_vae"
    )
    found = find_for_family("flux1", folders)
    assert found is not None and found.path.suffix == ".pth"
    assert torch.equal(decoded(load_tiny_vae(found, torch.float32), 16), decoded(source, 16))
    assert find_for_family("zimage", folders) == found  # Z-Image has Flux.1's VAE

    models = tmp_path / "models"
    folder = write_diffusers(build_tiny_vae("taesd3", seed=5), models / "vae_approx" / "taesd3")
    write_original(build_tiny_vae("taesd3", seed=6), models / "vae_approx", "taesd3")
    found = find_for_family("sd3", [models])
    assert found is not None and found.diffusers and found.path == folder  # a folder first
    assert load_tiny_vae(found, torch.bfloat16).dtype == torch.bfloat16


def test_foreign_and_damaged_files_are_refused_with_a_reason(tmp_path: Path) -> None:
    approx = tmp_path / "vae_approx"
    write_original(build_tiny_vae("taesd"), approx, "taesd")
    (approx / "taesd_encoder.safetensors").unlink()
    from safetensors.torch import save_file

    save_file({"1.weight": torch.zeros(64, 16, 3, 3)}, str(approx / "taesdxl_decoder.safetensors"))
    (approx / "taesd3_decoder.safetensors").write_bytes(b"not a file")
    assert load_tiny_vae(find_for_family("sd1", [approx]), torch.float32) is not None
    with pytest.raises(ModelError, match=r"taesdxl_decoder\.safetensors does not have the layout"):
        load_tiny_vae(find_for_family("sdxl", [approx]), torch.float32)
    with pytest.raises(ModelError, match="could not be read"):
        load_tiny_vae(find_for_family("sd3", [approx]), torch.float32)


def test_tiny_vaes_are_listed_in_the_catalog(tmp_path: Path) -> None:
    root = comfy_root(tmp_path)
    write_original(build_tiny_vae("taesd"), root / "models" / "vae_approx", "taesd")
    write_diffusers(build_tiny_vae("taef1"), root / "models" / "vae_approx" / "taef1")
    entries = {e.name: e for e in scan_folder(root).entries if e.kind == "tiny_vae"}
    assert sorted(entries) == ["taef1", "taesd_decoder"]  # encoders are not listed
    assert entries["taesd_decoder"].family == "sd1"
    assert entries["taef1"].format == "diffusers" and entries["taef1"].family == "flux1"


@pytest.fixture
def repo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A tiny VAE repo as madebyollin publishes them: a diffusers folder and the originals."""
    folder = tmp_path_factory.mktemp("repo")
    write_diffusers(build_tiny_vae("taesd", seed=7), folder / "hf")
    write_original(build_tiny_vae("taesd", seed=7), folder / "hf", "taesd")
    files = {p.name: p.read_bytes() for p in (folder / "hf").iterdir()}
    files["diffusion_pytorch_model.bin"] = b"pickle" * 10
    files["README.md"] = b"# tiny vae"
    return files


def test_the_download_lands_where_previews_find_it(hub: Any, tmp_path: Path) -> None:
    from sdstudio.engine.models.download import (
        TINY_VAE_DOWNLOADS,
        download_tiny_vae,
        tiny_vae_folder,
    )

    assert set(TINY_VAE_DOWNLOADS) == {
        "madebyollin/taesd", "madebyollin/taesdxl", "madebyollin/taesd3", "madebyollin/taef1"
    }  # fmt: skip
    paths = AppPaths.under(tmp_path / "home")
    folder = tiny_vae_folder(paths.models_dir, "madebyollin/taesd")
    assert folder == paths.models_dir / "vae_approx" / "taesd"
    snapshot = download_tiny_vae(REPO, folder, endpoint=hub.endpoint)
    assert "diffusion_pytorch_model.bin" not in {p.name for p in snapshot.iterdir()}
    assert json.loads((snapshot / "config.json").read_text())["_class_name"] == "AutoencoderTiny"
    found = find_for_family("sd1", network_folders(paths, Settings(), "tiny_vae"))
    assert found is not None and found.path == snapshot and found.diffusers
    assert [f.path for f in find_tiny_vaes([paths.models_dir])] == [snapshot]
    assert load_tiny_vae(found, torch.float32).config.latent_channels == 4
