"""Finding models where users keep them: tool roots, plain folders and the Hugging Face cache."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.models.catalog import (
    ModelEntry,
    add_model_folder,
    list_models,
    remove_model_folder,
    scan_folder,
    scan_hf_cache,
)
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.settings import Settings, load_settings, save_settings


def save_tensors(path: Path, names: tuple[str, ...] = ("model.weight",)) -> Path:
    """A small but valid safetensors file."""
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: torch.zeros(2, 2) for name in names}, str(path))
    return path


def write(path: Path, data: bytes = b"\x80\x02}q\x00.") -> Path:
    """A file with some bytes (a pickle-like ``.pt`` or ``.ckpt`` that is never opened)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def diffusers_folder(path: Path, cross_attention_dim: int = 768, in_channels: int = 4) -> Path:
    """The JSON files of a diffusers folder (no weights: listing never reads them)."""
    path.mkdir(parents=True, exist_ok=True)
    index = {
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
    }
    (path / "model_index.json").write_text(json.dumps(index))
    unet = {"cross_attention_dim": cross_attention_dim, "in_channels": in_channels}
    write(path / "unet" / "config.json", json.dumps(unet).encode())
    return path


def by_name(entries: list[ModelEntry]) -> dict[str, ModelEntry]:
    """Entries keyed by name."""
    return {entry.name: entry for entry in entries}


def summary(entries: list[ModelEntry]) -> set[tuple[str, str, str, str]]:
    """(name, kind, format, source) of each entry."""
    return {(e.name, e.kind, e.format, e.source) for e in entries}


def test_a1111_root_is_detected_and_bad_files_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "stable-diffusion-webui"
    save_tensors(root / "models/Stable-diffusion/a.safetensors")
    save_tensors(root / "models/Stable-diffusion/xl/sdxl_turbo.safetensors")
    write(root / "models/Stable-diffusion/old.ckpt")
    write(root / "models/Stable-diffusion/broken.safetensors", b"\xff" * 20)
    write(root / "models/Stable-diffusion/empty.safetensors", b"")
    (root / "models/Stable-diffusion/gone.safetensors").symlink_to(tmp_path / "nowhere")
    write(root / "models/Stable-diffusion/notes.txt", b"not a model")
    save_tensors(root / "models/Lora/l.safetensors", ("lora_unet_down.lora_up.weight",))
    write(root / "embeddings/e.pt")
    save_tensors(root / "models/VAE/v.safetensors", ("decoder.conv_in.weight",))

    catalog = scan_folder(root)

    assert summary(catalog.entries) == {
        ("a", "checkpoint", "safetensors", "a1111"),
        ("sdxl_turbo", "checkpoint", "safetensors", "a1111"),
        ("old", "checkpoint", "ckpt", "a1111"),
        ("l", "lora", "safetensors", "a1111"),
        ("e", "embedding", "pt", "a1111"),
        ("v", "vae", "safetensors", "a1111"),
    }
    entries = by_name(catalog.entries)
    assert entries["sdxl_turbo"].few_step and not entries["a"].few_step
    assert entries["a"].path == str(root / "models/Stable-diffusion/a.safetensors")
    assert (
        entries["a"].size_bytes == (root / "models/Stable-diffusion/a.safetensors").stat().st_size
    )
    assert all(isinstance(e.family, str) and e.family_label for e in catalog.entries)
    skipped = {Path(path).name for path, _reason in catalog.skipped}
    assert skipped == {"broken.safetensors", "empty.safetensors", "gone.safetensors"}


def test_comfyui_root(tmp_path: Path) -> None:
    root = tmp_path / "ComfyUI"
    write(root / "models/checkpoints/c.ckpt")
    diffusers_folder(root / "models/diffusers/dreamy")
    save_tensors(root / "models/loras/cl.safetensors")
    write(root / "models/embeddings/ce.bin")
    save_tensors(root / "models/vae/cv.safetensors")
    save_tensors(root / "models/controlnet/other.safetensors")

    catalog = scan_folder(root)

    assert summary(catalog.entries) == {
        ("c", "checkpoint", "ckpt", "comfyui"),
        ("dreamy", "checkpoint", "diffusers", "comfyui"),
        ("cl", "lora", "safetensors", "comfyui"),
        ("ce", "embedding", "bin", "comfyui"),
        ("cv", "vae", "safetensors", "comfyui"),
        ("other", "controlnet", "safetensors", "comfyui"),
    }
    dreamy = by_name(catalog.entries)["dreamy"]
    assert (dreamy.family, dreamy.family_label) == ("sd1", "SD 1.x")
    other = by_name(catalog.entries)["other"]  # no ControlNet: listed, told as such
    assert (other.family, other.family_label) == ("unknown", "Not a ControlNet")
    assert catalog.skipped == []


def test_invokeai_root(tmp_path: Path) -> None:
    root = tmp_path / "invokeai"
    write(root / "invokeai.yaml", b"schema_version: 4.0.2\n")
    diffusers_folder(root / "models/sdxl/main/juggernaut", cross_attention_dim=2048)
    diffusers_folder(root / "models/sd-1/main/sd-inpaint", in_channels=9)
    save_tensors(root / "models/sd-1/main/single.safetensors")
    save_tensors(root / "models/sdxl/lora/il.safetensors")
    write(root / "models/sd-1/embedding/ie.pt")
    save_tensors(root / "models/any/vae/iv.safetensors")
    save_tensors(root / "models/sd-1/controlnet/cn.safetensors")

    catalog = scan_folder(root)

    assert summary(catalog.entries) == {
        ("juggernaut", "checkpoint", "diffusers", "invokeai"),
        ("sd-inpaint", "checkpoint", "diffusers", "invokeai"),
        ("single", "checkpoint", "safetensors", "invokeai"),
        ("il", "lora", "safetensors", "invokeai"),
        ("ie", "embedding", "pt", "invokeai"),
        ("iv", "vae", "safetensors", "invokeai"),
        ("cn", "controlnet", "safetensors", "invokeai"),
    }
    entries = by_name(catalog.entries)
    assert entries["juggernaut"].family == "sdxl"
    assert entries["sd-inpaint"].family_label == "SD 1.x inpainting"
    assert entries["juggernaut"].size_bytes > 0


def test_plain_folder_tells_kinds_by_subfolder_and_header(tmp_path: Path) -> None:
    root = tmp_path / "my-models"
    save_tensors(root / "p.safetensors")
    save_tensors(root / "loras/pl.safetensors")
    save_tensors(root / "lcm-lora-sdv1-5.safetensors", ("lora_unet_x.lora_down.weight",))
    write(root / "embeddings/pe.pt")
    diffusers_folder(root / "dreamshaper-lightning")

    catalog = scan_folder(root)

    assert summary(catalog.entries) == {
        ("p", "checkpoint", "safetensors", "folder"),
        ("pl", "lora", "safetensors", "folder"),
        ("lcm-lora-sdv1-5", "lora", "safetensors", "folder"),
        ("pe", "embedding", "pt", "folder"),
        ("dreamshaper-lightning", "checkpoint", "diffusers", "folder"),
    }
    entries = by_name(catalog.entries)
    assert entries["lcm-lora-sdv1-5"].flags == ("few-step",)
    assert entries["dreamshaper-lightning"].few_step
    assert entries["p"].to_dict()["flags"] == []


def fake_hf_cache(cache: Path, repo: str, files: dict[str, bytes], commit: str) -> Path:
    """A Hugging Face cache entry laid out as huggingface_hub writes it."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        write(blob, data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    write(folder / "refs" / "main", commit.encode())
    return snapshot


def test_hugging_face_cache_lists_diffusers_repos(tmp_path: Path, tiny_model: Path) -> None:
    cache = tmp_path / "hub"
    files = {p.relative_to(tiny_model).as_posix(): p.read_bytes()
             for p in tiny_model.rglob("*") if p.is_file()}  # fmt: skip
    snapshot = fake_hf_cache(cache, "org/tiny-sd", files, "a" * 40)
    fake_hf_cache(cache, "org/tokenizer-only", {"tokenizer.json": b"{}"}, "b" * 40)
    write(cache / "datasets--org--data" / "refs" / "main", b"c" * 40)

    entries = scan_hf_cache(cache).entries

    assert [(e.name, e.kind, e.format, e.source, e.path) for e in entries] == [
        ("org/tiny-sd", "checkpoint", "diffusers", "huggingface", str(snapshot))
    ]
    assert entries[0].size_bytes == sum(len(data) for data in files.values())
    assert scan_hf_cache(tmp_path / "no-cache").entries == []


def test_list_models_combines_sources_and_honours_hf_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = AppPaths.default()
    save_tensors(paths.models_dir / "own.safetensors")
    comfy = tmp_path / "ComfyUI"
    save_tensors(comfy / "models/checkpoints/c.safetensors")
    cache = tmp_path / "hf"
    fake_hf_cache(cache, "org/x", {"model_index.json": b"{}"}, "d" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    settings = Settings(model_folders=(str(comfy), str(comfy), str(tmp_path / "missing")))

    catalog = list_models(paths, settings)

    assert summary(catalog.entries) == {
        ("own", "checkpoint", "safetensors", "app"),
        ("c", "checkpoint", "safetensors", "comfyui"),
        ("org/x", "checkpoint", "diffusers", "huggingface"),
    }
    assert catalog.skipped == [(str(tmp_path / "missing"), "folder not found")]


def test_model_folders_are_saved_in_settings(tmp_path: Path) -> None:
    paths = AppPaths.default()
    folder = tmp_path / "models"
    folder.mkdir()
    settings = add_model_folder(Settings(theme="dark"), folder)
    assert add_model_folder(settings, folder) == settings
    save_settings(paths, settings)
    loaded = load_settings(paths)
    assert loaded.model_folders == (str(folder.resolve()),)
    assert loaded.theme == "dark" and "model_folders" not in loaded.extra
    assert remove_model_folder(loaded, folder).model_folders == ()
    with pytest.raises(InvalidRequest, match="not one of the model folders"):
        remove_model_folder(Settings(), folder)
    with pytest.raises(InvalidRequest, match="does not exist"):
        add_model_folder(Settings(), tmp_path / "missing")
    paths.settings_file.write_text(json.dumps({"model_folders": "oops", "theme": "light"}))
    assert load_settings(paths).model_folders == ()


def test_unreadable_folder_is_skipped_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "plain"
    save_tensors(root / "ok.safetensors")
    locked = root / "locked"
    save_tensors(locked / "hidden.safetensors")
    real_scandir = os.scandir

    def scandir(path: object) -> object:
        if Path(str(path)) == locked:  # as if its permissions forbade reading it
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    catalog = scan_folder(root)
    assert [e.name for e in catalog.entries] == ["ok"]
    assert catalog.skipped == [(str(locked), "unreadable: Permission denied")]


SD_TO_K = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"
XL_TO_K = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight"
PEFT_TO_K = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight"


@pytest.mark.parametrize(
    ("header", "family"),
    [
        ({SD_TO_K: [4, 768]}, "sd1"),
        ({SD_TO_K: [8, 1024]}, "sd2"),
        ({XL_TO_K: [4, 2048]}, "sdxl"),
        ({PEFT_TO_K: [4, 2048]}, "sdxl"),
        ({"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": [4, 1280]}, "sdxl"),
        ({"emb_params": [2, 768]}, "sd1"),
        ({"string_to_param.*": [1, 1024]}, "sd2"),
        ({"clip_l": [2, 768], "clip_g": [2, 1280]}, "sdxl"),
        ({"lora_unet_x.hada_w1_a": [4, 4]}, "unknown"),
    ],
)
def test_lora_and_embedding_families_come_from_tensor_widths(header: dict, family: str) -> None:
    from sdstudio.engine.models.layouts import network_family

    full = {
        key: {"dtype": "F16", "shape": shape, "data_offsets": [0, 0]}
        for key, shape in header.items()
    }
    assert network_family({"__metadata__": {}, **full})[0] == family


def test_scanned_loras_and_embeddings_carry_their_family(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    root = tmp_path / "webui"
    for folder in ("models/Stable-diffusion", "models/Lora", "embeddings"):
        (root / folder).mkdir(parents=True)
    key = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight"
    save_file({key: torch.zeros(4, 2048)}, root / "models/Lora/xl_detail.safetensors")
    save_file({"emb_params": torch.zeros(1, 768)}, root / "embeddings/easyneg.safetensors")
    found = {e.name: (e.kind, e.family_label) for e in scan_folder(root).entries}
    assert found == {"xl_detail": ("lora", "SDXL"), "easyneg": ("embedding", "SD 1.x")}


def header_file(path: Path, count: int, key: str = "data_offsets") -> Path:
    """A safetensors file whose header lists ``count`` empty tensors (no tensor data)."""
    entry = f'{{"dtype":"F16","shape":[0],"{key}":[0,0]}}'
    header = ("{" + ",".join(f'"t{i}":{entry}' for i in range(count)) + "}").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    return path


@pytest.mark.parametrize(
    ("count", "key", "reason"),
    [
        (1_000_000, "data_offsets", "safetensors header of 56 MB, larger than any model's"),
        (150_000, "data_offsets", "safetensors header lists 150,000 tensors, more than any"),
        # Written so that the header's bytes do not show its entries: counted once parsed.
        (110_000, "data\\u005foffsets", "safetensors header lists 110,000 tensors"),
    ],
)
def test_a_header_listing_too_many_tensors_is_skipped_quickly(
    tmp_path: Path, count: int, key: str, reason: str
) -> None:
    import time
    import tracemalloc

    root = tmp_path / "webui"
    save_tensors(root / "models/Lora/fine.safetensors", (SD_TO_K,))
    huge = header_file(root / "models/Lora/huge.safetensors", count, key)
    shown = key == "data_offsets"  # refused from its bytes, before parsing
    if shown:
        tracemalloc.start()
    started = time.perf_counter()
    catalog = scan_folder(root)
    elapsed = time.perf_counter() - started
    if shown:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 2 * min(huge.stat().st_size, 16 * 2**20) + 8_000_000, f"{peak:,} bytes"
    assert [e.name for e in catalog.entries] == ["fine"]
    ((path, why),) = catalog.skipped
    assert path == str(huge) and why.startswith(reason) and why.endswith("not read")
    assert elapsed < (3 if shown else 20), f"{elapsed:.1f} s"


def test_each_header_is_parsed_once_per_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from safetensors.torch import save_file

    from sdstudio.engine.models import families

    root = tmp_path / "webui"
    for folder in ("models/Stable-diffusion", "models/VAE", "embeddings"):
        (root / folder).mkdir(parents=True)
    checkpoint = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3),
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(1),
    }
    save_file(checkpoint, root / "models/Stable-diffusion/sd15.safetensors")
    (root / "models/Lora/xl").mkdir(parents=True)
    save_file({XL_TO_K: torch.zeros(4, 2048)}, root / "models/Lora/xl/detail.safetensors")
    save_tensors(root / "models/VAE/vae.safetensors", ("decoder.conv_in.weight",))
    save_file({"emb_params": torch.zeros(1, 768)}, root / "embeddings/easyneg.safetensors")
    plain = tmp_path / "plain"
    (plain / "loras").mkdir(parents=True)
    save_file({SD_TO_K: torch.zeros(4, 768)}, plain / "loras/pl.safetensors")
    save_tensors(plain / "p.safetensors")
    files = sorted([*root.rglob("*.safetensors"), *plain.rglob("*.safetensors")])

    headers = {}
    for path in files:
        data = path.read_bytes()
        headers[data[8 : 8 + int.from_bytes(data[:8], "little")]] = path
    parses = dict.fromkeys(files, 0)
    real_loads = json.loads

    def counting_loads(text: str | bytes, *args: object, **kwargs: object) -> object:
        found = headers.get(text.encode() if isinstance(text, str) else bytes(text))
        if found is not None:
            parses[found] += 1
        return real_loads(text, *args, **kwargs)

    monkeypatch.setattr(json, "loads", counting_loads)
    monkeypatch.setattr(families, "read_safetensors_shapes", None)  # would read it again
    settings = Settings(model_folders=(str(root), str(plain), str(root / "models/Lora")))

    catalog = list_models(AppPaths.default(), settings, with_hf=False)

    assert parses == dict.fromkeys(files, 1)
    assert catalog.skipped == []
    found = {e.name: (e.kind, e.family_label) for e in catalog.entries}
    assert found == {
        "sd15": ("checkpoint", "SD 1.x"),
        "detail": ("lora", "SDXL"),
        "vae": ("vae", "Unknown"),
        "easyneg": ("embedding", "SD 1.x"),
        "pl": ("lora", "SD 1.x"),
        "p": ("checkpoint", "unknown model type"),
    }


def test_opening_a_checkpoint_with_a_huge_header_is_refused_before_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from sdstudio.engine.errors import ModelError
    from sdstudio.engine.models.families import read_safetensors_shapes

    path = header_file(tmp_path / "huge.safetensors", 150_000)
    parsed: list[int] = []
    real_loads = json.loads
    monkeypatch.setattr(json, "loads", lambda text, *a, **k: parsed.append(1) or real_loads(text))
    with pytest.raises(ModelError, match=r"huge\.safetensors is not a model: its safetensors"):
        read_safetensors_shapes(path)
    assert not parsed
    small = header_file(tmp_path / "small.safetensors", 3)
    assert read_safetensors_shapes(small) == {"t0": (0,), "t1": (0,), "t2": (0,)}
