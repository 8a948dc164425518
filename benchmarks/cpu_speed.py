"""Speed on the CPU: float32 against the precision ``auto`` picks, per CFG step and decode.

    python benchmarks/cpu_speed.py                     # SD 1.5's architecture, 512 and 256
    python benchmarks/cpu_speed.py --rounds 5 --sizes 512
    python benchmarks/cpu_speed.py --tiny --sizes 64   # the tests' tiny model (a smoke run)

The model is SD 1.5's architecture (the shipped configs in resources/model_configs/sd1)
with random weights, built once in float32 and copied into the precision ``auto`` picks
on this machine (:func:`sdstudio.engine.precision.sd_cpu_precision`: bfloat16 where the
CPU has it natively), each laid out as the engine lays out a loaded model
(:func:`sdstudio.engine.precision.cpu_layout`: channels-last where it measured faster,
the guarded decode). Measured: one CFG step (the UNet on a batch of 2 latents, as a
pipeline calls it per step) and the VAE decode of one image, each after one warm-up,
in rounds that alternate the settings so a busy machine slows them alike. Printed: one
line per measurement, then one JSON object with the min and median seconds of each
setting, the speed-up (float32's seconds over auto's, min and median), the relative
error of auto's output against float32's, and the load average before and after.

Other measurements join :data:`MEASUREMENTS`: a function of the built :class:`Setting`
and the image size that returns the call to time (or None where it does not apply).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class Setting(NamedTuple):
    """One way of running the model: its precision's name, the torch dtype, and the
    UNet and VAE laid out for it."""

    name: str
    precision: str
    dtype: Any
    unet: Any
    vae: Any
    cross_attention_dim: int


Measurement = Callable[[Setting, int], Callable[[], Any] | None]
"""Given a setting and the image size, the call to time (its result is compared with
float32's), or None where it does not apply."""


def cfg_step(setting: Setting, size: int) -> Callable[[], Any]:
    """One denoising step with CFG: the UNet on the unguided and the prompted latent."""
    import torch

    generator = torch.Generator().manual_seed(1)
    latent = size // 8
    sample = torch.randn(2, 4, latent, latent, generator=generator).to(setting.dtype)
    text = torch.randn(2, 77, setting.cross_attention_dim, generator=generator)
    text = text.to(setting.dtype)
    timestep = torch.tensor(500)
    return lambda: setting.unet(sample, timestep, encoder_hidden_states=text).sample


def vae_decode(setting: Setting, size: int) -> Callable[[], Any]:
    """The full VAE's decode of one image, as a pipeline decodes its final latents."""
    import torch

    generator = torch.Generator().manual_seed(2)
    latent = size // 8
    scaled = torch.randn(1, 4, latent, latent, generator=generator)
    scaled = (scaled / setting.vae.config.scaling_factor).to(setting.dtype)
    return lambda: setting.vae.decode(scaled).sample


MEASUREMENTS: dict[str, Measurement] = {"cfg_step": cfg_step, "vae_decode": vae_decode}
"""What is timed, by name, in this order in every round."""


def build(tiny: bool) -> tuple[Any, Any]:
    """The UNet and VAE in float32: SD 1.5's architecture (or the tests' tiny model)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.utils import logging

    logging.set_verbosity_error()  # casting random weights is what is meant here
    torch.manual_seed(0)
    if tiny:
        from sdstudio.testing import build_tiny_pipeline

        pipe = build_tiny_pipeline()
        return pipe.unet.eval(), pipe.vae.eval()
    configs = ROOT / "resources" / "model_configs" / "sd1"
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae"))
    return unet.eval(), vae.eval()


def settings(unet: Any, vae: Any) -> list[Setting]:
    """float32, and auto's choice on this CPU where it is another precision."""
    import torch

    from sdstudio.engine.devices import DeviceConfig
    from sdstudio.engine.precision import cpu_layout, sd_cpu_precision

    made = []
    for name, precision in (("float32", "float32"), ("auto", sd_cpu_precision()[0])):
        if name == "auto" and precision == "float32":
            break  # the same as float32 on this machine
        dtype = getattr(torch, precision)
        parts = [unet, vae] if precision == "float32" else [copy.deepcopy(unet), copy.deepcopy(vae)]
        parts = [part.to(dtype) for part in parts]
        holder = SimpleNamespace(unet=parts[0], vae=parts[1])  # what cpu_layout looks at
        cpu_layout(holder, DeviceConfig("cpu", precision, chosen_precision=precision))
        made.append(Setting(name, precision, dtype, *parts, unet.config.cross_attention_dim))
    return made


def measure(sizes: list[int], rounds: int, tiny: bool) -> dict[str, Any]:
    """Min and median seconds of every measurement and setting, with the speed-ups."""
    import torch

    from sdstudio.engine.precision import auto_precision

    load_before = os.getloadavg()
    unet, vae = build(tiny)
    made = settings(unet, vae)
    calls: dict[tuple[int, str, str], Callable[[], Any]] = {}
    errors: dict[tuple[int, str], float] = {}
    times: dict[tuple[int, str, str], list[float]] = {}
    with torch.inference_mode():
        for size in sizes:
            for what, measurement in MEASUREMENTS.items():
                outputs = {}
                for setting in made:
                    call = measurement(setting, size)
                    if call is None:
                        continue
                    calls[size, what, setting.name] = call
                    outputs[setting.name] = call().float()  # the warm-up
                    times[size, what, setting.name] = []
                if "auto" in outputs and "float32" in outputs:
                    reference = outputs["float32"]
                    error = (outputs["auto"] - reference).norm() / reference.norm()
                    errors[size, what] = float(error)
        for _ in range(rounds):
            for key, call in calls.items():
                started = time.perf_counter()
                call()
                times[key].append(time.perf_counter() - started)
    results: dict[str, Any] = {}
    for (size, what, name), seconds in times.items():
        entry = results.setdefault(str(size), {}).setdefault(what, {})
        entry[name] = {"min_s": min(seconds), "median_s": statistics.median(seconds)}
    for (size, what), error in errors.items():
        entry = results[str(size)][what]
        for stat in ("min", "median"):
            entry[f"speedup_{stat}"] = entry["float32"][f"{stat}_s"] / entry["auto"][f"{stat}_s"]
        entry["relative_error"] = error
    return {
        "model": "tiny" if tiny else "SD 1.5 architecture, random weights",
        "auto": auto_precision("cpu"),
        "settings": {setting.name: setting.precision for setting in made},
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[512, 256], help="image sizes (default 512 256)"
    )
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny model instead")
    args = parser.parse_args(argv)
    if args.rounds < 1 or any(size < 8 or size % 8 for size in args.sizes):
        parser.error("--rounds must be 1 or more and every size a multiple of 8")
    figures = measure(args.sizes, args.rounds, args.tiny)
    for size, measured in figures["results"].items():
        for what, entry in measured.items():
            line = ", ".join(
                f"{name} {entry[name]['median_s']:.3f} s" for name in figures["settings"]
            )
            if "speedup_median" in entry:
                line += f" (auto {entry['speedup_median']:.2f}x faster)"
            print(f"{size}x{size} {what}: {line}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
