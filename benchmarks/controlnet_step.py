"""The cost of a ControlNet unit per denoising step, relative to no unit.

    python benchmarks/controlnet_step.py              # SD 1.5's full-size UNet, 512x512
    python benchmarks/controlnet_step.py --size 256 --rounds 5
    python benchmarks/controlnet_step.py --tiny       # the tests' tiny UNet (a smoke run)

The UNet is SD 1.5's architecture (the shipped config) with random float32 weights on
the CPU; the ControlNet is made from it as its released ControlNets are
(``ControlNetModel.from_unet``: its encoder half plus the zero convolutions). One step is
what a pipeline does per step with CFG: a batch of 2 latents. Without a unit: one UNet
call. With one unit: a ControlNet call whose 13 residuals then go into the UNet call, as
diffusers' ControlNet pipelines do. Printed: the median seconds of each over the rounds
(after one warm-up), their ratio, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def build(tiny: bool) -> tuple[Any, Any, int]:
    """The UNet, its ControlNet, and the text-embedding width."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(0)
    if tiny:
        from sdstudio.testing import save_tiny_model

        folder = save_tiny_model(Path(tempfile.mkdtemp()) / "tiny")
        unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    else:
        config = UNet2DConditionModel.load_config(ROOT / "resources/model_configs/sd1/unet")
        unet = UNet2DConditionModel.from_config(config)
    controlnet = ControlNetModel.from_unet(unet)
    return unet.eval(), controlnet.eval(), unet.config.cross_attention_dim


def measure(size: int, rounds: int, tiny: bool) -> dict[str, float]:
    """Median seconds of a step without and with one ControlNet unit."""
    import torch

    unet, controlnet, width = build(tiny)
    latent = size // 8
    sample = torch.randn(2, 4, latent, latent)
    text = torch.randn(2, 77, width)
    hint = torch.rand(2, 3, size, size)
    timestep = torch.tensor(500)

    def plain() -> None:
        unet(sample, timestep, encoder_hidden_states=text)

    def guided() -> None:
        down, mid = controlnet(
            sample, timestep, encoder_hidden_states=text, controlnet_cond=hint, return_dict=False
        )
        unet(
            sample,
            timestep,
            encoder_hidden_states=text,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        )

    times: dict[str, list[float]] = {"plain": [], "guided": []}
    with torch.inference_mode():
        plain(), guided()  # warm-up
        for _ in range(rounds):
            for name, step in (("plain", plain), ("guided", guided)):
                started = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - started)
    no_unit = statistics.median(times["plain"])
    one_unit = statistics.median(times["guided"])
    return {"size": size, "no_unit_s": no_unit, "one_unit_s": one_unit,
            "ratio": one_unit / no_unit}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image size (default 512)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny UNet instead")
    args = parser.parse_args(argv)
    figures = measure(args.size, args.rounds, args.tiny)
    print(
        f"{args.size}x{args.size}, CFG batch 2, float32 on the CPU: a step takes "
        f"{figures['no_unit_s']:.2f} s without a ControlNet and {figures['one_unit_s']:.2f} s "
        f"with one unit ({figures['ratio']:.2f}x)"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
