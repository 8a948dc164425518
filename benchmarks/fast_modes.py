"""The fast modes against the full computation: seconds per image and how far the image moves.

    python benchmarks/fast_modes.py                        # SD 1.5's architecture, 512², 6 steps
    python benchmarks/fast_modes.py --size 256 --rounds 2
    python benchmarks/fast_modes.py --modes deep-cache,interval=2 token-merging,ratio=0.5
    python benchmarks/fast_modes.py --modes deep-cache,interval=3,layer=0  # inside the top block
    python benchmarks/fast_modes.py --modes deep-cache,interval=3,layer=block  # whole blocks
    python benchmarks/fast_modes.py --tiny --size 64       # the tests' tiny model (a smoke run)
    python benchmarks/fast_modes.py --flux-small 0.05 0.2  # the first-block cache, reduced Flux.1
    python benchmarks/fast_modes.py --flux-small --flux-modes taylorseer-cache,interval=3,warmup=3

The model is SD 1.5's architecture (the shipped configs in resources/model_configs/sd1)
with random weights in float32 on the CPU. Each mode denoises the same starting noise
with the same (random) prompt embeddings for ``--steps`` steps of DPM++ 2M Karras at
CFG 7 (a batch of 2 latents per step, as the pipeline runs it), the hooks of the mode
on the UNet exactly as the engine adds them (:func:`sdstudio.engine.speed.applied`),
and the VAE decodes the result. The modes run in turn in every round, so a busy machine
slows them alike. Printed: one line per run, then one JSON object with, per mode, the
min and median seconds of the denoising and of the whole image (denoising + decode),
the speed-up of the denoising against the full computation (median over median), how
many UNet calls skipped work, and the mean absolute difference (0-255) of its decoded
image against the full computation's; with the load average before and after.

``--flux-small`` times a reduced Flux.1 transformer (:data:`FLUX_SMALL`) alone, with
random text embeddings, through flow-matching Euler steps: the full computation against
the first-block cache at each threshold and each of ``--flux-modes`` (short forms, such
as ``taylorseer-cache,interval=3``), with the difference of the final latents relative
to their mean size (no VAE decode).

Random weights make the features change from step to step differently from a trained
model's, so the differences say how the mode behaves, not how a real picture looks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_MODES = (
    "deep-cache,interval=2,layer=block",
    "deep-cache,interval=2,layer=0",
    "deep-cache,interval=3,layer=block",
    "deep-cache,interval=3,layer=0",
    "token-merging,ratio=0.5",
)
"""DeepCache over whole blocks (``layer=block``) and inside the top block (``layer=0``,
the paper's setting), each at intervals 2 and 3, and token merging."""
CFG = 7.0


def build(tiny: bool) -> tuple[Any, Any, int]:
    """The UNet and VAE in float32, and the width of the text embeddings."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    if tiny:
        from sdstudio.testing import build_tiny_pipeline

        pipe = build_tiny_pipeline()
        return pipe.unet.eval(), pipe.vae.eval(), pipe.unet.config.cross_attention_dim
    configs = ROOT / "resources" / "model_configs" / "sd1"
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae"))
    return unet.eval(), vae.eval(), unet.config.cross_attention_dim


def generate(unet: Any, vae: Any, width: int, size: int, steps: int, fast: Any) -> dict[str, Any]:
    """Denoise and decode one image with ``fast`` (None: the full computation)."""
    import numpy as np
    import torch

    from sdstudio.engine import samplers, speed

    generator = torch.Generator("cpu").manual_seed(1)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    latents = torch.randn((1, 4, size // factor, size // factor), generator=generator)
    embeddings = torch.randn((2, 77, width), generator=generator)
    scheduler = samplers.make_scheduler("DPM++ 2M", "Karras", _scheduler_config(), seed=1)
    scheduler.set_timesteps(steps)
    latents = latents * scheduler.init_noise_sigma
    started = time.perf_counter()
    with torch.inference_mode(), speed.applied(SimpleNamespace(unet=unet), fast, "SD 1.x") as state:
        for timestep in scheduler.timesteps:
            batch = scheduler.scale_model_input(torch.cat([latents] * 2), timestep)
            noise = unet(batch, timestep, encoder_hidden_states=embeddings).sample
            uncond, cond = noise.chunk(2)
            latents = scheduler.step(uncond + CFG * (cond - uncond), timestep, latents).prev_sample
        denoised = time.perf_counter()
        image = vae.decode(latents / vae.config.scaling_factor).sample
    finished = time.perf_counter()
    pixels = ((image[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0)
    return {
        "denoise_s": denoised - started,
        "image_s": finished - started,
        "reused": getattr(state, "reused", 0),
        "pixels": np.asarray(pixels, dtype=np.int16),
    }


def _scheduler_config() -> dict[str, Any]:
    path = ROOT / "resources" / "model_configs" / "sd1" / "scheduler" / "scheduler_config.json"
    return dict(json.loads(path.read_text()))


def measure(
    models: tuple[Any, Any, int], size: int, steps: int, rounds: int, modes: list[str]
) -> dict[str, Any]:
    """Run the full computation and every mode ``rounds`` times, alternating, with the
    UNet, VAE and text width of :func:`build`."""
    import numpy as np

    from sdstudio.engine.speed import parse_fast_mode

    unet, vae, width = models
    tiny = unet.config.block_out_channels[0] < 128
    chosen = {"full": None, **{text: parse_fast_mode(text) for text in modes}}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
    load_before = os.getloadavg()
    generate(unet, vae, width, size, 1, None)  # warm-up
    for round_index in range(rounds):
        for name, fast in chosen.items():
            run = generate(unet, vae, width, size, steps, fast)
            runs[name].append(run)
            difference = np.abs(run["pixels"] - runs["full"][0]["pixels"]).mean()
            print(
                f"round {round_index + 1} {name:28} denoise {run['denoise_s']:.2f} s, "
                f"image {run['image_s']:.2f} s, reused {run['reused']}, "
                f"mean difference {difference:.3f}",
                flush=True,
            )
    full = runs["full"][0]["pixels"]
    full_median = statistics.median(r["denoise_s"] for r in runs["full"])
    summary: dict[str, Any] = {
        "model": "tiny" if tiny else "SD 1.5 architecture, random weights, float32",
        "size": size,
        "steps": steps,
        "cfg": CFG,
        "rounds": rounds,
        "load_before": [round(v, 2) for v in load_before],
    }
    for name, results in runs.items():
        denoise = [r["denoise_s"] for r in results]
        image = [r["image_s"] for r in results]
        summary[name] = {
            "denoise_min_s": round(min(denoise), 3),
            "denoise_median_s": round(statistics.median(denoise), 3),
            "image_min_s": round(min(image), 3),
            "image_median_s": round(statistics.median(image), 3),
            "denoise_speedup": round(full_median / statistics.median(denoise), 3),
            "reused_calls": results[0]["reused"],
            "mean_abs_diff": round(float(np.abs(results[0]["pixels"] - full).mean()), 3),
            "repeatable": all(np.array_equal(r["pixels"], results[0]["pixels"]) for r in results),
        }
    summary["load_after"] = [round(v, 2) for v in os.getloadavg()]
    return summary


FLUX_SMALL = {
    "num_layers": 4,
    "num_single_layers": 8,
    "attention_head_dim": 128,
    "num_attention_heads": 8,
    "joint_attention_dim": 1024,
    "pooled_projection_dim": 768,
}
"""A reduced Flux.1 transformer (real: 19 + 38 blocks of width 3072) that a busy CPU runs."""


def flux_denoise(model: Any, size: int, steps: int, fast: Any) -> dict[str, Any]:
    """Flow-matching Euler steps of the transformer alone (no text encoder, no VAE)."""
    import torch

    from sdstudio.engine import speed

    side = size // 16  # 8 pixels a latent, 2x2 latents a token
    generator = torch.Generator("cpu").manual_seed(1)
    latents = torch.randn((1, side * side, 64), generator=generator)
    text = torch.randn((1, 128, FLUX_SMALL["joint_attention_dim"]), generator=generator)
    pooled = torch.randn((1, FLUX_SMALL["pooled_projection_dim"]), generator=generator)
    rows, columns = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    image_ids = torch.stack([torch.zeros_like(rows), rows, columns], -1).reshape(-1, 3).float()
    text_ids = torch.zeros((128, 3))
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    started = time.perf_counter()
    pipe = SimpleNamespace(transformer=model)
    with torch.inference_mode(), speed.applied(pipe, fast, "Flux.1") as state:
        for index in range(steps):
            velocity = model(
                hidden_states=latents,
                encoder_hidden_states=text,
                pooled_projections=pooled,
                timestep=sigmas[index].expand(1),
                img_ids=image_ids,
                txt_ids=text_ids,
                return_dict=False,
            )[0]
            latents = latents + (sigmas[index + 1] - sigmas[index]) * velocity
    return {
        "denoise_s": time.perf_counter() - started,
        "reused": getattr(state, "reused", 0),
        "latents": latents,
    }


def measure_flux(
    size: int, steps: int, rounds: int, thresholds: list[float], modes: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The first-block cache at each threshold and the other ``modes`` (short forms)
    against the full computation, alternating."""
    import torch
    from diffusers import FluxTransformer2DModel

    from sdstudio.engine.speed import FastMode, parse_fast_mode

    torch.manual_seed(0)
    model = FluxTransformer2DModel(**FLUX_SMALL).eval()
    chosen: dict[str, Any] = {"full": None}
    for threshold in thresholds:
        chosen[f"first-block-cache,threshold={threshold:g}"] = FastMode(
            "first-block-cache", threshold
        )
    chosen.update({text: parse_fast_mode(text) for text in modes})
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
    load_before = os.getloadavg()
    flux_denoise(model, size, 1, None)  # warm-up
    for round_index in range(rounds):
        for name, fast in chosen.items():
            run = flux_denoise(model, size, steps, fast)
            runs[name].append(run)
            print(
                f"round {round_index + 1} {name:32} denoise {run['denoise_s']:.2f} s, "
                f"reused {run['reused']}",
                flush=True,
            )
    full = runs["full"][0]["latents"]
    full_median = statistics.median(r["denoise_s"] for r in runs["full"])
    summary: dict[str, Any] = {
        "model": "Flux.1 transformer reduced to 4 + 8 blocks of width 1024, random weights, "
        "float32; transformer only, no decode",
        "size": size,
        "steps": steps,
        "rounds": rounds,
        "load_before": [round(v, 2) for v in load_before],
    }
    for name, results in runs.items():
        denoise = [r["denoise_s"] for r in results]
        difference = (results[0]["latents"] - full).abs().mean() / full.abs().mean()
        summary[name] = {
            "denoise_min_s": round(min(denoise), 3),
            "denoise_median_s": round(statistics.median(denoise), 3),
            "denoise_speedup": round(full_median / statistics.median(denoise), 3),
            "reused_calls": results[0]["reused"],
            "relative_latent_diff": round(float(difference), 4),
        }
    summary["load_after"] = [round(v, 2) for v in os.getloadavg()]
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES))
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny model")
    parser.add_argument(
        "--flux-small",
        nargs="*",
        type=float,
        metavar="THRESHOLD",
        default=None,
        help="instead: the first-block cache at these thresholds on a reduced Flux.1 "
        "transformer (default 0.05 0.2 0.5)",
    )
    parser.add_argument(
        "--flux-modes",
        nargs="+",
        default=[],
        metavar="MODE",
        help="with --flux-small: these fast modes too (short forms, such as "
        "taylorseer-cache,interval=3); alone, without thresholds, only these",
    )
    args = parser.parse_args(argv)
    if args.flux_small is not None:
        thresholds = args.flux_small or [0.05, 0.2, 0.5]
        modes = tuple(args.flux_modes)
        if args.flux_modes and not args.flux_small:
            thresholds = []
        summary = measure_flux(args.size, args.steps, args.rounds, thresholds, modes)
    else:
        summary = measure(build(args.tiny), args.size, args.steps, args.rounds, args.modes)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
