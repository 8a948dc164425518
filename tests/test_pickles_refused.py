"""Pickle files (.ckpt, .pt, .bin) that would run code are refused everywhere they are opened."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from sdstudio.engine.errors import ModelError

REFUSAL = re.compile(r"holds code.*\.safetensors", re.IGNORECASE)
"""What every refusal says: the file holds code, and to use a .safetensors file instead."""


class Payload:
    """A pickled object that runs a shell command creating ``marker`` when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch '{self.marker}'",))


def evil_file(path: Path, content: dict[str, Any]) -> Path:
    """``content`` saved with torch.save, plus a payload that would create ``path.marker``."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**content, "extra": Payload(marker_of(path))}, path)
    return path


def marker_of(path: Path) -> Path:
    """The file the payload in ``path`` would create."""
    return path.with_name(path.name + ".ran")


@pytest.fixture(scope="module")
def pipe(tiny_model: Path) -> Any:
    """The tiny SD 1.x pipeline, on the CPU."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_the_restricted_loader_refuses_code(tmp_path: Path, suffix: str) -> None:
    import torch

    from sdstudio.engine.models.loading import load_pickle_state_dict

    path = evil_file(tmp_path / f"model{suffix}", {"state_dict": {"w": torch.ones(2)}})
    with pytest.raises(ModelError, match=REFUSAL) as caught:
        load_pickle_state_dict(path)
    assert path.name in str(caught.value) and "\n" not in str(caught.value)
    assert not marker_of(path).exists()


def test_a_vae_pickle_with_code_is_refused(tmp_path: Path, pipe: Any) -> None:
    import torch

    from sdstudio.engine.vae import load_vae

    path = evil_file(tmp_path / "vae.pt", {"decoder.conv_in.weight": torch.ones(1)})
    with pytest.raises(ModelError, match=REFUSAL):
        load_vae(path, pipe.vae)
    assert not marker_of(path).exists()


@pytest.mark.parametrize("suffix", [".pt", ".ckpt", ".bin"])
def test_a_lora_pickle_with_code_is_refused(tmp_path: Path, pipe: Any, suffix: str) -> None:
    import torch

    from sdstudio.engine.networks import Networks

    loras = tmp_path / "Lora"
    key = "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"
    path = evil_file(loras / f"evil{suffix}", {key: torch.ones(4, 32)})
    networks = Networks(lambda: [loras], lambda: [])
    with pytest.raises(ModelError, match=REFUSAL) as caught:
        networks.apply(pipe, "a cat <lora:evil:1>", "")
    assert path.name in str(caught.value)
    assert not marker_of(path).exists()


def test_an_embedding_pickle_with_code_is_refused(tmp_path: Path, pipe: Any) -> None:
    import torch

    from sdstudio.engine.networks import Networks

    embeddings = tmp_path / "embeddings"
    path = evil_file(embeddings / "evilstyle.pt", {"string_to_param": {"*": torch.ones(1, 32)}})
    said: list[str] = []
    networks = Networks(lambda: [], lambda: [embeddings])
    active = networks.apply(pipe, "a cat, evilstyle", "", on_status=said.append)
    assert active.embeddings == ()
    assert len(said) == 1 and REFUSAL.search(said[0]) and path.name in said[0]
    assert not marker_of(path).exists()


def test_an_sdxl_embedding_pickle_with_code_is_refused(tmp_path: Path) -> None:
    import torch

    from sdstudio.engine.networks import _sdxl_vectors

    path = evil_file(
        tmp_path / "xlstyle.pt", {"clip_l": torch.ones(1, 768), "clip_g": torch.ones(1, 1280)}
    )
    with pytest.raises(ModelError, match=REFUSAL):
        _sdxl_vectors(path)
    assert not marker_of(path).exists()


def test_the_payload_would_run_if_loaded_without_restrictions(tmp_path: Path) -> None:
    """The files above are real attacks: an unrestricted load runs the command."""
    import torch

    path = evil_file(tmp_path / "model.ckpt", {})
    torch.load(path, weights_only=False)
    assert marker_of(path).exists()
