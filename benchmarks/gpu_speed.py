"""Speed of the CUDA fast path: float32 against what sdstudio runs on the GPU, per CFG step
and decode, with and without each part of the fast path.

    python benchmarks/gpu_speed.py                           # SD 1.5 at 512, SDXL at 1024
    python benchmarks/gpu_speed.py --archs sd1 --rounds 10 --no-compile
    python benchmarks/gpu_speed.py --device cpu --tiny --size 64  # a smoke run anywhere

The models are SD 1.5's and SDXL's architectures (the shipped configs in
resources/model_configs) with random weights, built once in float32 and copied into
each setting, all on the device at once (SDXL needs about 20 GB of GPU memory):

- ``float32``: float32 with TF32 off and PyTorch's fused attention (SDPA);
- ``float32_tf32``: the same with TF32 matrix products and convolutions;
- ``half_unfused``: half precision with diffusers' older, unfused attention;
- ``half``: half precision with SDPA, contiguous layout;
- ``fast_path``: what sdstudio runs (:func:`sdstudio.engine.cuda_path.cuda_layout`:
  SDPA, channels-last, TF32; the precision ``auto`` picks for SD models on this GPU);
- ``compiled``: the fast path with the UNet compiled (``torch.compile``, inductor, fixed
  shapes), its compile time reported apart;
- ``bfloat16``: the fast path in bfloat16, where the GPU has it.

Timed: one CFG step (the UNet on a batch of 2 latents) and, for float32 and the fast
path, the VAE decode of one image; each after a warm-up, in rounds that alternate the
settings, synchronised. Printed: one line per measurement, then one JSON object with the
min and median seconds, the speed-up over float32 (medians), the relative error against
float32's output, and the peak GPU memory of each setting.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {"sd1": 512, "sdxl": 1024}


def build(arch: str, tiny: bool) -> tuple[Any, Any]:
    """The UNet and VAE of ``arch`` in float32 with random weights (or the tiny model)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    if tiny:
        from sdstudio.testing import build_tiny_pipeline

        pipe = build_tiny_pipeline()
        return pipe.unet.eval(), pipe.vae.eval()
    configs = ROOT / "resources" / "model_configs" / arch
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae"))
    return unet.eval(), vae.eval()


def step_inputs(unet: Any, size: int, dtype: Any, device: str) -> dict[str, Any]:
    """The UNet's arguments for one CFG step at ``size`` (SDXL's added conditions too)."""
    import torch

    generator = torch.Generator().manual_seed(1)
    latent, config = size // 8, unet.config
    kwargs: dict[str, Any] = {
        "sample": torch.randn(2, config.in_channels, latent, latent, generator=generator),
        "timestep": torch.tensor(500),
        "encoder_hidden_states": torch.randn(
            2, 77, config.cross_attention_dim, generator=generator
        ),
    }
    if config.addition_embed_type == "text_time":
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(2, pooled, generator=generator),
            "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * 2, dtype=torch.float32),
        }

    def moved(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: moved(v) for k, v in value.items()}
        if value.is_floating_point() and value.ndim:
            return value.to(device, dtype)
        return value.to(device)

    return {k: moved(v) for k, v in kwargs.items()}


def settings(unet: Any, vae: Any, device: str, compile: bool) -> dict[str, dict[str, Any]]:
    """Each setting's UNet call maker, VAE, dtype and TF32 switch."""
    import torch
    from diffusers.models.attention_processor import AttnProcessor

    from sdstudio.engine.cuda_path import cuda_layout, current_gpu, sd_gpu_precision
    from sdstudio.engine.devices import DeviceConfig

    gpu = current_gpu() if device == "cuda" else None
    half_name = sd_gpu_precision(gpu)[0] if device == "cuda" else "bfloat16"
    half = getattr(torch, half_name)

    def copied(dtype: Any) -> tuple[Any, Any]:
        return copy.deepcopy(unet).to(device, dtype), copy.deepcopy(vae).to(device, dtype)

    made: dict[str, dict[str, Any]] = {}
    base = unet.to(device), vae.to(device)
    made["float32"] = {"unet": base[0], "vae": base[1], "dtype": torch.float32, "tf32": False}
    made["float32_tf32"] = {"unet": base[0], "vae": None, "dtype": torch.float32, "tf32": True}
    if half_name != "float32":
        unfused, _ = copied(half)
        unfused.set_attn_processor(AttnProcessor())
        made["half_unfused"] = {"unet": unfused, "vae": None, "dtype": half, "tf32": False}
        plain, _ = copied(half)
        made["half"] = {"unet": plain, "vae": None, "dtype": half, "tf32": False}
    fast_unet, fast_vae = copied(half)
    holder = SimpleNamespace(unet=fast_unet, vae=fast_vae)
    cuda_layout(holder, DeviceConfig("cuda", half_name))  # what the engine does on CUDA
    if device == "cpu":  # a smoke run: the same layout steps, by hand
        fast_unet.to(memory_format=torch.channels_last)
    made["fast_path"] = {"unet": fast_unet, "vae": fast_vae, "dtype": half, "tf32": True}
    if compile:
        compiled = torch.compile(fast_unet, dynamic=False)
        made["compiled"] = {"unet": compiled, "vae": None, "dtype": half, "tf32": True}
    if device == "cuda" and gpu is not None and gpu.ampere_or_newer and half_name != "bfloat16":
        bf_unet, bf_vae = copied(torch.bfloat16)
        cuda_layout(SimpleNamespace(unet=bf_unet, vae=bf_vae), DeviceConfig("cuda", "bfloat16"))
        made["bfloat16"] = {"unet": bf_unet, "vae": None, "dtype": torch.bfloat16, "tf32": True}
    return made


def timed(call: Callable[[], Any], device: str, tf32: bool) -> tuple[float, Any, int]:
    """Seconds, result and peak GPU bytes of one call."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with torch.inference_mode():
        result = call()
    if device == "cuda":
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else 0
    return time.perf_counter() - started, result, peak


def measure_arch(
    arch: str, size: int, rounds: int, device: str, tiny: bool, compile: bool
) -> dict[str, Any]:
    """Every setting of one architecture, alternating, with the summary figures."""
    import torch

    unet, vae = build(arch, tiny)
    made = settings(unet, vae, device, compile)
    calls: dict[str, tuple[Callable[[], Any], bool]] = {}
    for name, setting in made.items():
        kwargs = step_inputs(unet, size, setting["dtype"], device)
        model = setting["unet"]
        calls[f"cfg_step/{name}"] = (lambda m=model, k=kwargs: m(**k).sample, setting["tf32"])
        if setting["vae"] is not None:
            generator = torch.Generator().manual_seed(2)
            latent = torch.randn(1, 4, size // 8, size // 8, generator=generator)
            latent = (latent / setting["vae"].config.scaling_factor).to(device, setting["dtype"])
            decode = setting["vae"].decode
            calls[f"vae_decode/{name}"] = (lambda d=decode, z=latent: d(z).sample, setting["tf32"])
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    outputs: dict[str, Any] = {}
    peaks: dict[str, int] = {}
    warm_up: dict[str, float] = {}
    for name, (call, tf32) in calls.items():
        warm_up[name], outputs[name], peaks[name] = timed(call, device, tf32)
    for _ in range(rounds):
        for name, (call, tf32) in calls.items():
            spent, _result, _peak = timed(call, device, tf32)
            seconds[name].append(spent)
            print(f"{arch} {size}x{size} {name}: {spent:.4f} s", flush=True)
    summary: dict[str, Any] = {"size": size}
    for name, spent in seconds.items():
        what, setting = name.split("/")
        reference = outputs[f"{what}/float32"].float()
        error = (outputs[name].float() - reference).abs().mean() / reference.abs().mean()
        float32 = statistics.median(seconds[f"{what}/float32"])
        summary[name] = {
            "min_s": round(min(spent), 5),
            "median_s": round(statistics.median(spent), 5),
            "speedup": round(float32 / statistics.median(spent), 3),
            "relative_error": round(float(error), 5),
            "peak_gb": round(peaks[name] / 1024**3, 2),
        }
        if setting == "compiled":
            summary[name]["first_call_s"] = round(warm_up[name], 1)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--size", type=int, default=None, help="one size for every arch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny model")
    parser.add_argument("--compile", default=None, action=argparse.BooleanOptionalAction)
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("No CUDA GPU here; use --device cpu for a smoke run.", file=sys.stderr)
        return 2
    compile = args.device == "cuda" if args.compile is None else args.compile
    result: dict[str, Any] = {"device": args.device, "torch": torch.__version__}
    if args.device == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
    for arch in ["sd1"] if args.tiny else args.archs:
        size = args.size or SIZES[arch]
        result[arch] = measure_arch(arch, size, args.rounds, args.device, args.tiny, compile)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
