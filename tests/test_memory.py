"""Choosing how a model fits on the GPU (logic; no GPU needed)."""

from __future__ import annotations

from pathlib import Path

from sdstudio.engine.memory import GIB, plan_memory, weights_bytes


def test_auto_follows_free_memory() -> None:
    sdxl = 7 * GIB
    assert plan_memory("auto", "cuda", sdxl, 24 * GIB).cpu_offload is False
    roomy = plan_memory("auto", "cuda", sdxl, 24 * GIB)
    assert not (roomy.attention_slicing or roomy.vae_tiling)
    tight = plan_memory("auto", "cuda", sdxl, int(8.5 * GIB))
    assert (tight.cpu_offload, tight.attention_slicing, tight.vae_tiling) == (False, True, True)
    small = plan_memory("auto", "cuda", sdxl, 6 * GIB)
    assert small.cpu_offload and small.vae_tiling
    assert "6.0 GiB free" in small.reason


def test_modes_override_and_other_devices() -> None:
    assert plan_memory("low", "cuda", GIB, 80 * GIB).cpu_offload
    assert not plan_memory("fast", "cuda", 10 * GIB, 1 * GIB).cpu_offload
    assert plan_memory("auto", "mps", GIB, None).attention_slicing
    cpu = plan_memory("low", "cpu", GIB, None)
    assert not (cpu.cpu_offload or cpu.attention_slicing or cpu.vae_tiling)


def test_weights_of_a_loaded_pipeline(manager, tiny_model: Path) -> None:
    from sdstudio.engine.request import Mode

    pipe = manager.pipeline(str(tiny_model), Mode.TXT2IMG)
    size = weights_bytes(pipe)
    assert 1_000_000 < size < 20_000_000
    assert manager.memory_plan.reason.startswith("cpu")
