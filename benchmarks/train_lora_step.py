"""Seconds per LoRA training step on the CPU, and the process's peak memory.

    python benchmarks/train_lora_step.py                 # SD 1.5's architecture, 512x512
    python benchmarks/train_lora_step.py --size 256 --steps 3
    python benchmarks/train_lora_step.py --tiny          # the tests' tiny model (a smoke run)

The model is SD 1.5's architecture (the shipped configs in resources/model_configs/sd1,
random float32 weights) built in memory, trained through sdstudio's LoRA trainer and
loop exactly as ``sdstudio-cli train lora`` runs them: rank 16, batch 1, gradient
checkpointing, latents cached (the VAE encodes the one image once, before the steps),
every layer kohya trains (attention, feed-forward, proj_in/proj_out). Printed: each
step's seconds, the median after the first (warm-up) step, the peak resident memory
of the process (model built, training included), then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def build_model(tiny: bool) -> Any:
    """A frozen :class:`TrainingModel`: SD 1.5's architecture with random weights (or the
    tiny test model)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from sdstudio.engine.training.model import TrainingModel

    torch.manual_seed(0)
    if tiny:
        from sdstudio.testing import build_tiny_pipeline

        pipe = build_tiny_pipeline()
    else:
        configs = ROOT / "resources" / "model_configs" / "sd1"
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(configs / "text_encoder"))
        tokenizer = CLIPTokenizer.from_pretrained(ROOT / "resources/model_configs/clip_tokenizer")
        scheduler = DDPMScheduler.from_pretrained(configs / "scheduler")
        pipe = StableDiffusionPipeline(
            unet=unet,
            vae=vae,
            text_encoder=text,
            tokenizer=tokenizer,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False).eval()
    return TrainingModel(
        pipe=pipe,
        family="sd1",
        device=torch.device("cpu"),
        weight_dtype=torch.float32,
        noise_scheduler=DDPMScheduler.from_config(pipe.scheduler.config),
        model_name="sd15-architecture" if not tiny else "tiny",
    )


def measure(size: int, steps: int, tiny: bool) -> dict[str, Any]:
    """Train ``steps`` steps at ``size``² and return the figures."""
    import numpy as np
    from PIL import Image

    from sdstudio.engine.training.datasets import BucketOptions
    from sdstudio.engine.training.events import TrainingEvent
    from sdstudio.engine.training.loop import run_training
    from sdstudio.engine.training.lora_trainer import LoraTrainer
    from sdstudio.engine.training.options import LoraOptions, TrainingOptions

    work = Path(tempfile.mkdtemp(prefix="sdstudio-train-bench-"))
    (work / "data").mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(work / "data" / "image.png")
    (work / "data" / "image.txt").write_text("a photo of a thing", "utf-8")
    began = time.perf_counter()
    model = build_model(tiny)
    built_s = time.perf_counter() - began
    options = LoraOptions(
        TrainingOptions(
            model=work / "model",
            data=work / "data",
            name="bench",
            output_dir=work / "out",
            state_dir=work / "state",
            max_train_steps=steps,
            device="cpu",
            gradient_checkpointing=True,
            cache_latents=True,
            buckets=BucketOptions((size, size), min(256, size), 1024, 64),
        ),
        network_dim=16,
        network_alpha=16,
    )
    times: list[float] = []
    last = [time.perf_counter()]

    def on_event(event: TrainingEvent) -> None:
        now = time.perf_counter()
        if event.kind == "start":
            last[0] = now
        elif event.kind == "step":
            times.append(now - last[0])
            last[0] = now
            print(f"step {len(times)}: {times[-1]:.2f} s", flush=True)

    trainer = LoraTrainer(options, on_event=on_event, model=model)
    run_training(trainer, on_event=on_event)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mb = peak_kb / 1024 if sys.platform != "darwin" else peak_kb / 1024 / 1024
    measured = times[1:] or times
    return {
        "model": "tiny" if tiny else "sd15-architecture",
        "size": size,
        "batch": 1,
        "rank": 16,
        "gradient_checkpointing": True,
        "steps": steps,
        "build_s": round(built_s, 2),
        "step_s_median": round(statistics.median(measured), 3),
        "step_s": [round(t, 3) for t in times],
        "peak_rss_mb": round(peak_mb),
        "trainable_parameters": sum(p.numel() for p in trainer.network.parameters()),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3, help="steps, the first a warm-up")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)
    figures = measure(args.size, args.steps, args.tiny)
    print(
        f"{figures['model']} at {args.size}x{args.size}, batch 1, gradient checkpointing: "
        f"{figures['step_s_median']:.2f} s/step; peak RSS {figures['peak_rss_mb']} MB"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
