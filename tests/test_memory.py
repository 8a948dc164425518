"""Choosing how a model fits on the GPU (logic; no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.memory import (
    GIB,
    MEMORY_MODES,
    MemoryPlan,
    _group_offloaded,
    place,
    plan_memory,
    weights_bytes,
)
from sdstudio.engine.settings import Settings, change_setting


def test_auto_follows_free_memory() -> None:
    sdxl = 7 * GIB
    assert plan_memory("auto", "cuda", sdxl, 24 * GIB).cpu_offload is False
    roomy = plan_memory("auto", "cuda", sdxl, 24 * GIB)
    assert not (roomy.attention_slicing or roomy.vae_tiling)
    tight = plan_memory("auto", "cuda", sdxl, int(8.5 * GIB))
    assert (tight.cpu_offload, tight.attention_slicing, tight.vae_tiling) == (False, False, True)
    small = plan_memory("auto", "cuda", sdxl, 6 * GIB)
    assert small.cpu_offload and small.vae_tiling
    assert "6.0 GiB free" in small.reason


def test_modes_override_and_other_devices() -> None:
    assert plan_memory("low", "cuda", GIB, 80 * GIB).cpu_offload
    assert not plan_memory("fast", "cuda", 10 * GIB, 1 * GIB).cpu_offload
    assert plan_memory("auto", "mps", GIB, None).attention_slicing
    cpu = plan_memory("low", "cpu", GIB, None)
    assert not (cpu.cpu_offload or cpu.attention_slicing or cpu.vae_tiling)


def test_models_far_over_the_gpu_stream_their_layers() -> None:
    """The plan chosen from the files before loading: Flux.1 dev's 33.7 GB of weights,
    its 23.8 GB transformer the largest part."""
    flux, transformer, headroom = int(33.7 * GIB), int(23.8 * GIB), 4 * GIB
    plans = {
        free: plan_memory("auto", "cuda", flux, free * GIB, largest=transformer, headroom=headroom)
        for free in (80, 36, 26, 12, 2)
    }
    assert [plans[free].offload for free in (80, 36, 26, 12, 2)] == [
        "", "", "model", "group", "sequential"
    ]  # fmt: skip
    assert plans[36].vae_tiling and not plans[36].attention_slicing
    assert all(plan.cpu_offload for free, plan in plans.items() if free < 30)
    assert "12.0 GiB free" in plans[12].reason
    for mode, offload in (("group", "group"), ("sequential", "sequential"), ("low", "model")):
        chosen = plan_memory(mode, "cuda", GIB, 80 * GIB)
        assert chosen.offload == offload and chosen.reason == f"{mode} (chosen in settings)"
    assert plan_memory("sequential", "cpu", GIB, None).offload == ""


def test_every_memory_mode_is_a_setting_and_a_choice_in_the_window() -> None:
    from sdstudio.ui.preferences import MEMORY_MODES as CHOICES

    assert [value for value, _label in CHOICES] == list(MEMORY_MODES)
    for mode in MEMORY_MODES:
        assert change_setting(Settings(), "memory", mode).memory == mode
    with pytest.raises(InvalidRequest, match="group, sequential"):
        change_setting(Settings(), "memory", "tiny")


def test_group_offload_runs_the_same_image_and_takes_a_new_vae(tmp_path: Path) -> None:
    """Group offload on the CPU (the GPU's code path, with the CPU as the onload device):
    the image is the one the plain pipeline makes, and a VAE put in later is offloaded
    when the plan is placed again, as the pipeline manager does after choosing a VAE."""
    import torch

    from sdstudio.testing import build_tiny_pipeline

    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)

    def run() -> torch.Tensor:
        generator = torch.Generator().manual_seed(3)
        arguments = {"num_inference_steps": 2, "height": 64, "width": 64, "output_type": "pt"}
        return pipe("a boat", generator=generator, **arguments).images

    plain = run()
    place(pipe, "cpu", MemoryPlan("group"))
    assert _group_offloaded(pipe.unet) and _group_offloaded(pipe.text_encoder)
    assert torch.equal(run(), plain)
    pipe.vae = build_tiny_pipeline().vae  # the same weights, loaded again
    assert not _group_offloaded(pipe.vae)
    place(pipe, "cpu", MemoryPlan("group"))
    assert _group_offloaded(pipe.vae)
    assert torch.equal(run(), plain)


def test_tied_weights_count_once() -> None:
    import torch

    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(100, 8)
            self.head = torch.nn.Linear(8, 100, bias=False)
            self.head.weight = torch.nn.Parameter(self.embed.weight.data)  # same storage

    class Pipe:
        def __init__(self) -> None:
            self.components = {"text_encoder": Tied(), "tokenizer": object()}

    assert weights_bytes(Pipe()) == 100 * 8 * 4


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


@pytest.mark.slow
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
