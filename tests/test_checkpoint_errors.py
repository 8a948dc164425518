"""Checkpoints that cannot be loaded say what they look like and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdstudio.engine.errors import ModelError
from sdstudio.engine.models.families import checkpoint_widths, width_differences
from sdstudio.engine.models.loading import configs_root, folder_widths, load_single_file

CONFIG_OPTION = "--config"
DIFFUSERS_ADVICE = "low_cpu_mem_usage"


@pytest.fixture(scope="module")
def tiny_state(tiny_model: Path) -> dict:
    """A tiny SD 1.x model in original layout: SD 1.x names, far from SD 1.x sizes."""
    from sdstudio.testing.checkpoints import random_original_checkpoint

    return random_original_checkpoint(tiny_model)


def save(state: dict, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file(state, str(path))
    return path


def refused(path: Path, config: Path | None = None) -> str:
    import torch

    with pytest.raises(ModelError) as caught:
        load_single_file(path, dtype=torch.float32, config=config)
    message = str(caught.value)
    assert DIFFUSERS_ADVICE not in message and "ignore_mismatched_sizes" not in message
    return message


def test_a_checkpoint_of_other_sizes_says_which_and_offers_a_config_folder(
    capsys, tiny_state: dict, tmp_path: Path
) -> None:
    from sdstudio.cli import main

    model = save(tiny_state, tmp_path / "small-sd.safetensors")
    code = main(["generate", "--model", str(model), "--prompt", "x", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert "small-sd.safetensors looks like an SD 1.x checkpoint" in line
    assert "its UNet is 32 channels wide (SD 1.x: 320)" in line
    assert "its text encoder is 32 wide (SD 1.x: 768)" in line
    assert CONFIG_OPTION in line and DIFFUSERS_ADVICE not in line


def test_a_unet_of_no_known_family_offers_a_config_folder(tiny_state: dict, tmp_path: Path) -> None:
    unet_only = {k: v for k, v in tiny_state.items() if k.startswith("model.diffusion_model.")}
    message = refused(save(unet_only, tmp_path / "mystery.safetensors"))
    assert "not a Stable Diffusion checkpoint sdstudio knows" in message
    assert "its UNet attends to text 32 wide" in message and "no text encoder" in message
    assert CONFIG_OPTION in message


def test_missing_parts_are_named_against_the_config_folder_given(
    tiny_state: dict, tiny_model: Path, tmp_path: Path
) -> None:
    no_vae = {k: v for k, v in tiny_state.items() if not k.startswith("first_stage_model.")}
    message = refused(save(no_vae, tmp_path / "no-vae.safetensors"), tiny_model)
    assert "does not fit the config folder tiny-sd: it holds no VAE weights" in message
    assert CONFIG_OPTION in message


def test_errors_from_the_loader_are_put_in_words(
    tiny_state: dict, tiny_model: Path, tmp_path: Path
) -> None:
    import torch

    # Sizes that the header check does not compare, so that diffusers itself refuses.
    key = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
    wrong = {**tiny_state, key: torch.zeros(77, 16)}
    message = refused(save(wrong, tmp_path / "odd.safetensors"), tiny_model)
    assert "odd.safetensors does not fit the config folder tiny-sd" in message
    assert "position_embedding.weight is [77, 16] where the config has [77, 32]" in message
    assert CONFIG_OPTION in message
    block = "model.diffusion_model.output_blocks.1."
    missing = {k: v for k, v in tiny_state.items() if not k.startswith(block)}
    message = refused(save(missing, tmp_path / "holey.safetensors"), tiny_model)
    assert "weights it needs are missing" in message and CONFIG_OPTION in message


def test_files_that_are_no_model_say_what_they_are(tiny_state: dict, tmp_path: Path) -> None:
    import torch

    lora = save({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, tmp_path / "ink.safetensors")
    assert "looks like a LoRA, not a model (use it in the prompt: <lora:ink:1>)" in refused(lora)
    embedding = save({"emb_params": torch.zeros(2, 768)}, tmp_path / "style.safetensors")
    assert "looks like a textual-inversion embedding" in refused(embedding)
    vae = {
        k.removeprefix("first_stage_model."): v
        for k, v in tiny_state.items()
        if k.startswith("first_stage_model.")
    }
    assert "looks like a VAE, not a model" in refused(save(vae, tmp_path / "vae.safetensors"))
    other = save({"net.0.weight": torch.zeros(2, 2)}, tmp_path / "other.safetensors")
    assert "it holds no UNet weights" in refused(other)


@pytest.mark.parametrize("folder", ["sd1", "sd2", "sdxl"])
def test_full_size_checkpoints_fit_the_shipped_configs(folder: str) -> None:
    from sdstudio.testing.checkpoints import random_original_checkpoint

    state = random_original_checkpoint(configs_root() / folder, device="meta")
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    expected = folder_widths(configs_root() / folder)
    assert expected.unet_channels == 320 and expected.vae
    assert width_differences(checkpoint_widths(shapes), expected, folder) == []
