"""The cost of a ControlNet unit (and of an image prompt) per denoising step, relative
to neither.

    python benchmarks/controlnet_step.py              # SD 1.5's full-size UNet, 512x512
    python benchmarks/controlnet_step.py --size 256 --rounds 5
    python benchmarks/controlnet_step.py --tiny       # the tests' tiny UNet (a smoke run)

The UNet is SD 1.5's architecture (the shipped config) with random float32 weights on
the CPU; the ControlNet is made from it as its released ControlNets are
(``ControlNetModel.from_unet``: its encoder half plus the zero convolutions). One step is
what a pipeline does per step with CFG: a batch of 2 latents. Without a unit: one UNet
call. With one unit: a ControlNet call whose 13 residuals then go into the UNet call, as
diffusers' ControlNet pipelines do. With an image prompt: the UNet with an IP-Adapter of
ip-adapter_sd15's shapes loaded (ViT-H image embeddings, 4 image tokens added to every
cross-attention). Printed: the median seconds of each over the rounds (after one
warm-up), their ratios, then one JSON line.
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

    prompted_unet = with_image_prompt(unet)
    embeds = [torch.randn(2, 1, 1024)]  # [unguided, prompt] x one reference image

    def prompted() -> None:
        prompted_unet(
            sample, timestep, encoder_hidden_states=text, added_cond_kwargs={"image_embeds": embeds}
        )

    steps = {"plain": plain, "guided": guided, "prompted": prompted}
    times: dict[str, list[float]] = {name: [] for name in steps}
    with torch.inference_mode():
        for step in steps.values():  # warm-up
            step()
        for _ in range(rounds):
            for name, step in steps.items():
                started = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - started)
    no_unit = statistics.median(times["plain"])
    one_unit = statistics.median(times["guided"])
    image_prompt = statistics.median(times["prompted"])
    return {"size": size, "no_unit_s": no_unit, "one_unit_s": one_unit,
            "ratio": one_unit / no_unit, "image_prompt_s": image_prompt,
            "image_prompt_ratio": image_prompt / no_unit}  # fmt: skip


def with_image_prompt(unet: Any) -> Any:
    """A copy of ``unet`` with an IP-Adapter of ip-adapter_sd15's shapes (random) loaded."""
    import copy

    import torch

    cross = unet.config.cross_attention_dim
    widths = list(unet.config.block_out_channels)
    state: dict[str, dict[str, Any]] = {
        "image_proj": {
            "proj.weight": torch.randn(4 * cross, 1024) * 0.02,
            "proj.bias": torch.zeros(4 * cross),
            "norm.weight": torch.ones(cross),
            "norm.bias": torch.zeros(cross),
        },
        "ip_adapter": {},
    }
    for index, name in enumerate(n for n in unet.attn_processors if "attn2" in n):
        if name.startswith("mid_block"):
            hidden = widths[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(widths))[int(name.split(".")[1])]
        else:
            hidden = widths[int(name.split(".")[1])]
        key = 2 * index + 1  # the adapter numbers every attention layer, attn1 included
        for part in ("to_k_ip", "to_v_ip"):
            state["ip_adapter"][f"{key}.{part}.weight"] = torch.randn(hidden, cross) * 0.02
    prompted = copy.deepcopy(unet)
    prompted._load_ip_adapter_weights([state])
    return prompted.eval()


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
        f"with one unit ({figures['ratio']:.2f}x); {figures['image_prompt_s']:.2f} s with an "
        f"image prompt ({figures['image_prompt_ratio']:.2f}x)"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
