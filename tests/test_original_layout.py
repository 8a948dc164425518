"""Whole pipelines written as one original-layout checkpoint and read back through
sdstudio's single-file loader: every weight comes back equal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from sdstudio.engine.models.families import Family, detect_family
from sdstudio.engine.models.loading import load_single_file
from sdstudio.engine.training.original_layout import pipeline_family, write_checkpoint

PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def load_folder(folder: Path) -> Any:
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(folder, local_files_only=True)


def assert_same_weights(first: Any, second: Any) -> None:
    compared = 0
    for part in PARTS:
        a, b = getattr(first, part, None), getattr(second, part, None)
        if a is None:
            assert b is None
            continue
        ours, theirs = a.state_dict(), b.state_dict()
        for key, tensor in ours.items():
            if key.endswith("position_ids"):
                continue
            assert torch.equal(tensor, theirs[key]), f"{part}.{key}"
            compared += 1
    assert compared > 100


def test_a_tiny_sd1_pipeline_round_trips(tiny_model: Path, tmp_path: Path) -> None:
    pipe = load_folder(tiny_model)
    assert pipeline_family(pipe) == "sd1"
    path = write_checkpoint(pipe, tmp_path / "out.safetensors", dtype=None, metadata={"a": "b"})
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    with safe_open(str(path), "pt") as file:
        keys = set(file.keys())
        metadata = file.metadata()
    assert metadata["modelspec.architecture"] == "stable-diffusion-v1" and metadata["a"] == "b"
    assert metadata["modelspec.prediction_type"] == "epsilon" and "v_pred" not in keys
    assert any(k.startswith("cond_stage_model.transformer.text_model.") for k in keys)
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in keys)
    assert detect_family(path).family is Family.SD1
    back = load_single_file(path, dtype=torch.float32, config=tiny_model)
    assert_same_weights(pipe, back)


def test_a_tiny_sdxl_pipeline_round_trips(tmp_path: Path) -> None:
    from sdstudio.testing.tiny_refiner import save_tiny_sdxl

    folder = save_tiny_sdxl(tmp_path / "xl")
    pipe = load_folder(folder)
    assert pipeline_family(pipe) == "sdxl"
    path = write_checkpoint(pipe, tmp_path / "xl.safetensors", dtype=None)
    with safe_open(str(path), "pt") as file:
        keys = set(file.keys())
        assert file.metadata()["modelspec.architecture"] == "stable-diffusion-xl-v1-base"
    assert "model.diffusion_model.label_emb.0.0.weight" in keys
    assert any(k.startswith("conditioner.embedders.0.transformer.text_model.") for k in keys)
    assert any(k.startswith("conditioner.embedders.1.model.transformer.resblocks.") for k in keys)
    assert detect_family(path).family is Family.SDXL
    back = load_single_file(path, dtype=torch.float32, config=folder)
    assert_same_weights(pipe, back)


def test_an_open_clip_text_encoder_round_trips_as_sd2(tiny_model: Path, tmp_path: Path) -> None:
    """SD 2.x's text encoder (OpenCLIP's plain GELU) goes to ``cond_stage_model.model.``
    with q, k and v fused, and comes back equal."""
    folder = shutil.copytree(tiny_model, tmp_path / "tiny-2")
    config_file = folder / "text_encoder" / "config.json"
    config = json.loads(config_file.read_text("utf-8"))
    config_file.write_text(json.dumps({**config, "hidden_act": "gelu"}), "utf-8")
    pipe = load_folder(folder)
    assert pipeline_family(pipe) == "sd2"
    path = write_checkpoint(pipe, tmp_path / "sd2.safetensors", dtype=None)
    with safe_open(str(path), "pt") as file:
        keys = set(file.keys())
        assert file.metadata()["modelspec.architecture"] == "stable-diffusion-v2-512"
    assert "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight" in keys
    assert detect_family(path).family is Family.SD2
    assert_same_weights(pipe, load_single_file(path, dtype=torch.float32, config=folder))


def test_half_precision_and_v_prediction_are_written(tiny_model: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_model, tmp_path / "tiny-v")
    config_file = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text("utf-8"))
    config_file.write_text(json.dumps({**config, "prediction_type": "v_prediction"}), "utf-8")
    pipe = load_folder(folder)
    path = write_checkpoint(pipe, tmp_path / "v.safetensors", dtype=torch.float16)
    with safe_open(str(path), "pt") as file:
        assert "v_pred" in set(file.keys())
        assert file.metadata()["modelspec.prediction_type"] == "v"
        key = "model.diffusion_model.input_blocks.0.0.weight"
        assert file.get_tensor(key).dtype == torch.float16
    assert detect_family(path).prediction_type == "v_prediction"


def test_the_testing_module_keeps_its_names() -> None:
    from sdstudio.engine.training import original_layout
    from sdstudio.testing import checkpoints

    for name in ("convert_unet_to_original", "convert_vae_to_original", "UNET_PREFIX"):
        assert getattr(checkpoints, name) is getattr(original_layout, name)
    assert callable(checkpoints.save_single_file_checkpoint)


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_full_size_unets_convert_on_the_meta_device(family: str) -> None:
    from diffusers import UNet2DConditionModel

    from sdstudio.engine.models.families import checkpoint_widths
    from sdstudio.engine.models.loading import configs_root
    from sdstudio.engine.training.original_layout import convert_unet_to_original

    config = json.loads((configs_root() / family / "unet" / "config.json").read_text("utf-8"))
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    shapes = {
        k: tuple(v.shape) for k, v in convert_unet_to_original(unet.state_dict(), config).items()
    }
    widths = checkpoint_widths(shapes)
    assert widths.unet_channels == 320
    assert widths.input_blocks == (9 if family == "sdxl" else 12)
