"""Generation speed through the engine against bare diffusers, on the same pipeline.

Runs one request alternately through ``pipe(...)`` and through
``Engine.generate`` (progress callback and a latent preview at every step) in
one process, and prints it/s for both and their ratio (target: >= 0.98), from
the median and from the fastest run of each (on a shared machine, noise only
ever slows a run down, so the fastest runs are the fairest comparison).

The default model has SD 1.5's UNet and a CLIP-L-sized text encoder with
random weights, and a small VAE so that decoding does not hide the per-step
cost; a step at 128 px takes about 1.5 s on a 2-core CPU. ``--tiny`` uses the tiny test
model instead (a quick check that the script works).

    python benchmarks/engine_vs_diffusers.py [--size 128] [--steps 6] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def build_sd15_sized_model(folder: str | Path) -> Path:
    """Save a model with SD 1.5's UNet architecture and random weights."""
    folder = Path(folder)
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdstudio.testing import save_tiny_model

    save_tiny_model(folder)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768, sample_size=64)
    unet.save_pretrained(folder / "unet")
    config = json.loads((folder / "text_encoder" / "config.json").read_text())
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=config["vocab_size"],
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            max_position_embeddings=77,
            bos_token_id=config["bos_token_id"],
            eos_token_id=config["eos_token_id"],
            pad_token_id=config["pad_token_id"],
        )
    )
    text_encoder.save_pretrained(folder / "text_encoder")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="use the tiny test model")
    args = parser.parse_args(argv)

    from sdstudio.logs import quiet_third_party

    quiet_third_party()
    import torch

    from sdstudio.engine import samplers
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.generation import Engine, Progress
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.engine.request import GenerationRequest, Mode
    from sdstudio.testing import save_tiny_model

    with tempfile.TemporaryDirectory(prefix="sdstudio-bench-") as tmp:
        folder = Path(tmp) / "model"
        started = time.perf_counter()
        if args.tiny:
            save_tiny_model(folder)
        else:
            build_sd15_sized_model(folder)
        print(f"model built in {time.perf_counter() - started:.1f} s", flush=True)

        device = choose_device(args.device)
        manager = PipelineManager(device)
        engine = Engine(manager, Path(tmp) / "inputs", previews=True)
        request = GenerationRequest(
            model=str(folder),
            prompt="a lighthouse on a cliff at dusk, oil painting",
            negative_prompt="blurry",
            steps=args.steps,
            width=args.size,
            height=args.size,
            seed=1234,
        )
        pipe = manager.pipeline(request.model, Mode.TXT2IMG)

        def bare() -> None:
            pipe.scheduler = samplers.make_scheduler(
                request.sampler, request.schedule, manager.scheduler_config, seed=request.seed
            )
            pipe(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                num_inference_steps=request.steps,
                guidance_scale=request.guidance_scale,
                width=request.width,
                height=request.height,
                generator=torch.Generator("cpu").manual_seed(request.seed),
            )

        previews = 0

        def on_progress(progress: Progress) -> None:
            nonlocal previews
            previews += progress.preview is not None

        def through_engine() -> None:
            list(engine.generate(request, on_progress=on_progress))

        def timed(run) -> float:
            if device.device == "cuda":
                torch.cuda.synchronize()
            begin = time.perf_counter()
            run()
            if device.device == "cuda":
                torch.cuda.synchronize()
            return args.steps / (time.perf_counter() - begin)

        print(f"device {device.describe()}, {args.size} px, {args.steps} steps", flush=True)
        timed(bare)  # warm-up: first calls allocate and tune
        timed(through_engine)
        results: dict[str, list[float]] = {"diffusers": [], "engine": []}
        for round_index in range(args.rounds):
            order = [("diffusers", bare), ("engine", through_engine)]
            if round_index % 2:
                order.reverse()
            for name, run in order:
                results[name].append(timed(run))
                print(f"round {round_index + 1} {name:9} {results[name][-1]:.4f} it/s", flush=True)

    from sdstudio.engine.previews import latent_preview

    latents = torch.randn(1, 4, args.size // 8, args.size // 8)
    begin = time.perf_counter()
    for _ in range(200):
        latent_preview(latents)
    preview_s = (time.perf_counter() - begin) / 200

    diffusers_median = statistics.median(results["diffusers"])
    engine_median = statistics.median(results["engine"])
    diffusers_best = max(results["diffusers"])
    engine_best = max(results["engine"])
    summary = {
        "device": device.describe(),
        "size": args.size,
        "steps": args.steps,
        "rounds": args.rounds,
        "diffusers_it_s_median": round(diffusers_median, 4),
        "engine_it_s_median": round(engine_median, 4),
        "ratio_median": round(engine_median / diffusers_median, 4),
        "diffusers_it_s_best": round(diffusers_best, 4),
        "engine_it_s_best": round(engine_best, 4),
        "ratio_best": round(engine_best / diffusers_best, 4),
        "previews_made": previews,
        "preview_ms": round(preview_s * 1000, 3),
        "preview_share_of_step": round(preview_s * engine_median, 6),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
