"""Pickled LoRA and LyCORIS files (old kohya and LyCORIS ``.pt``/``.ckpt`` saves): read
through the restricted loader, applied as the safetensors files are, and one that holds
code refused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sdstudio.engine.errors import ModelError
from sdstudio.engine.networks import Networks
from sdstudio.engine.prompting import lycoris
from sdstudio.testing import tiny_lycoris


class Payload:
    """Unpickled, it would run a shell command creating ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture(scope="module")
def pipe(tiny_model: Path) -> Any:
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)


@pytest.fixture(scope="module")
def folder(pipe: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA folder: a pickled LoHa (``.pt``), a pickled plain LoRA (``.ckpt``, nested in
    a ``state_dict`` as some old saves are) and a LoHa pickle that holds code."""
    folder = tmp_path_factory.mktemp("pickles") / "Lora"
    folder.mkdir()
    loha = tiny_lycoris.loha(pipe)
    flat = {f"{module}.{part}": t for module, parts in loha.items() for part, t in parts.items()}
    torch.save(flat, folder / "old_loha.pt")
    generator = torch.Generator().manual_seed(4)
    plain: dict[str, torch.Tensor] = {}
    for name, weight in tiny_lycoris.layers(pipe, tiny_lycoris.ATTENTION).items():
        plain[f"{name}.lora_down.weight"] = torch.randn(4, weight.shape[1], generator=generator)
        plain[f"{name}.lora_up.weight"] = torch.randn(weight.shape[0], 4, generator=generator) * 0.3
        plain[f"{name}.alpha"] = torch.tensor(4.0)
    torch.save({"state_dict": plain}, folder / "old_lora.ckpt")
    torch.save({**flat, "extra": Payload(folder / "ran")}, folder / "evil_loha.pt")
    return folder


def image(pipe: Any) -> np.ndarray:
    generator = torch.Generator().manual_seed(5)
    out = pipe("a boat", num_inference_steps=2, width=64, height=64, generator=generator)
    return np.asarray(out.images[0], dtype=np.int16)


def test_a_pickled_loha_and_a_pickled_lora_change_the_image(pipe: Any, folder: Path) -> None:
    from peft.tuners.lora import LoraLayer

    assert lycoris.file_kind(folder / "old_loha.pt") == "loha"
    assert lycoris.file_kind(folder / "old_lora.ckpt") == "lora"
    networks = Networks(lambda: [folder], lambda: [])
    plain = image(pipe)
    try:
        networks.apply(pipe, "a boat <lora:old_loha:1>", "")
        loha = image(pipe)
        networks.apply(pipe, "a boat <lora:old_lora:1>", "")
        lora = image(pipe)
        adapters = [m for m in pipe.unet.modules() if isinstance(m, LoraLayer)]
        assert adapters and all("lora_old_lora" in m.lora_A for m in adapters)
        networks.apply(pipe, "a boat <lora:old_loha:0> <lora:old_lora:0>", "")
        zero = image(pipe)
    finally:
        networks.apply(pipe, "a boat", "")
    assert np.abs(loha - plain).max() > 0 and np.abs(lora - plain).max() > 0
    assert not np.array_equal(loha, lora)
    assert np.array_equal(zero, plain)  # the LoHa's patch undone, the LoRA at weight 0


def test_a_pickled_loha_holding_code_is_refused(pipe: Any, folder: Path) -> None:
    networks = Networks(lambda: [folder], lambda: [])
    with pytest.raises(ModelError, match=r"evil_loha\.pt was not opened.*holds code"):
        networks.apply(pipe, "a boat <lora:evil_loha:1>", "")
    assert not (folder / "ran").exists()
    with pytest.raises(ModelError, match="holds code"):
        lycoris.read_tensors(folder / "evil_loha.pt")
    assert not (folder / "ran").exists()
