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


FROZEN_CHILD = """
import gc, json, sys, time, weakref
from pathlib import Path
from sdstudio.engine.history.library import ImageLibrary
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.request import Mode
from sdstudio.ui.worker import GenerationWorker

paths = AppPaths.default()
worker = GenerationWorker(ImageLibrary.open(paths.history_db, paths.outputs_dir), paths, "cpu")
worker.warm_up()
frozen = gc.get_freeze_count()
manager = worker._engine.pipelines
unet = weakref.ref(manager.pipeline(sys.argv[1], Mode.TXT2IMG).unet)
started = time.perf_counter()
manager.unload()
print(json.dumps({"frozen": frozen, "unet_freed": unet() is None,
                  "unload_ms": (time.perf_counter() - started) * 1000}))
"""


def test_warm_up_freezes_imports_and_models_are_still_freed(tiny_model: Path) -> None:
    """After the worker's warm-up, gc skips the imported libraries; a model is still freed."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", FROZEN_CHILD, str(tiny_model)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["frozen"] > 100_000  # torch, diffusers and transformers
    assert report["unet_freed"]
