"""Load time and seconds per step of each flow family, as sdstudio runs them.

    python benchmarks/flow_families.py                    # tiny models, every family
    python benchmarks/flow_families.py --real sd3 zimage  # real-size transformers too

Tiny: each family's tiny model as a diffusers folder and as a ComfyUI tree (transformer
file + text encoders + VAE), loaded and run by the engine at 512x512 for a few steps;
the figures are the load time and the median time between step events.

Real size (``--real``): the family's released transformer architecture with random
bf16 weights (built on the meta device, then filled), one denoising step of its
pipeline at 512x512 from random prompt embeddings (the text encoders are not part of
the step), output left as latents. It needs the transformer's bf16 size free in memory
(SD 3.5 Medium 5 GB, Flux.2 Klein 4B 8 GB, Z-Image 12 GB, Flux.1 24 GB, Qwen-Image
41 GB).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

FAMILIES = ("flux1", "sd3", "zimage", "qwen-image", "flux2-klein", "chroma")
SAVERS = {
    "flux1": "save_tiny_flux",
    "sd3": "save_tiny_sd3",
    "zimage": "save_tiny_zimage",
    "qwen-image": "save_tiny_qwen_image",
    "flux2-klein": "save_tiny_flux2_klein",
    "chroma": "save_tiny_chroma",
}


def tiny_figures(
    family: str, layout: str, folder: Path, size: int, steps: int, rounds: int = 3
) -> tuple[float, float]:
    """(load seconds, median seconds per step) of a tiny ``family`` model in ``layout``:
    the load is the first generation's time over the second's (the model then loaded)."""
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.generation import Engine, Progress
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.engine.request import GenerationRequest
    from sdstudio.testing import tiny_flow
    from sdstudio.testing.tiny_split import save_tiny_comfyui_model

    if layout == "folder":
        model = getattr(tiny_flow, SAVERS[family])(folder / f"tiny-{family}")
    else:
        model = save_tiny_comfyui_model(folder / "ComfyUI", family)
    engine = Engine(PipelineManager(choose_device("cpu")), folder / "inputs", previews=False)
    stamps: list[float] = []

    def on_progress(progress: Progress) -> None:
        stamps.append(time.perf_counter())

    request = GenerationRequest(
        model=str(model),
        prompt="a lighthouse at dusk",
        steps=steps,
        width=size,
        height=size,
        seed=1,
        sampler="Euler",
        schedule="Simple",
        guidance_scale=1.0,
    )
    loads, step_times = [], []
    for _ in range(rounds):
        engine.pipelines.unload()
        totals = []
        for _ in range(2):
            stamps.clear()
            started = time.perf_counter()
            next(engine.generate(request, on_progress=on_progress))
            totals.append(time.perf_counter() - started)
        loads.append(totals[0] - totals[1])
        step_times += [b - a for a, b in itertools.pairwise(stamps)]
    return statistics.median(loads), statistics.median(step_times)


def real_step(family: str, size: int) -> tuple[float, float, float]:
    """(build seconds, seconds for one step, parameters in billions) of the released
    transformer of ``family`` with random bf16 weights."""
    import diffusers
    import torch

    from sdstudio.engine.models.loading import configs_root
    from sdstudio.engine.parts.denoiser_configs import CLASSES

    config = RELEASED[family]
    started = time.perf_counter()
    with torch.device("meta"):
        transformer = getattr(diffusers, CLASSES[family])(**config)
    transformer = transformer.to_empty(device="cpu").to(torch.bfloat16)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in transformer.parameters():
            parameter.normal_(0.0, 0.02, generator=generator)
        for buffer in transformer.buffers():
            if buffer.is_floating_point():
                buffer.zero_()
    built = time.perf_counter() - started
    parameters = sum(p.numel() for p in transformer.parameters()) / 1e9
    folder = {"flux1": "flux1-dev", "sd3": "sd3"}.get(family, family)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(
        configs_root() / folder, subfolder="scheduler"
    )
    pipe = _pipeline(family, transformer, scheduler)
    started = time.perf_counter()
    with torch.no_grad():
        pipe(**_arguments(family, transformer, size))
    return built, time.perf_counter() - started, parameters


def _pipeline(family: str, transformer: Any, scheduler: Any) -> Any:
    import diffusers

    from sdstudio.engine.families import family as family_of

    layout = family_of(family).split
    assert layout is not None
    components: dict[str, Any] = {"transformer": transformer, "scheduler": scheduler, "vae": None}
    if family == "flux2-klein":  # its pipeline reads the VAE's latent statistics
        components["vae"] = _released_vae(family)
    for slot in layout.text:
        components[slot.component] = components[slot.tokenizer] = None
    components.update(layout.arguments)
    if layout.named_arguments is not None:  # a distilled model (Klein), as released
        components.update(layout.named_arguments(family))
    pipe = getattr(diffusers, layout.pipeline)(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _released_vae(family: str) -> Any:
    """The family's VAE with the shipped (released) config and random weights."""
    import json

    import diffusers

    from sdstudio.engine.models.loading import configs_root

    config = json.loads((configs_root() / family / "vae" / "config.json").read_text("utf-8"))
    return getattr(diffusers, config["_class_name"]).from_config(config).eval()


def _arguments(family: str, transformer: Any, size: int) -> dict[str, Any]:
    """One step at ``size`` from random prompt embeddings, output as latents."""
    import torch

    config = transformer.config
    embeds = torch.randn
    common: dict[str, Any] = {
        "num_inference_steps": 1,
        "height": size,
        "width": size,
        "output_type": "latent",
        "generator": torch.Generator().manual_seed(0),
    }
    bf16 = torch.bfloat16
    if family == "flux1":
        return common | {
            "prompt_embeds": embeds(1, 512, config.joint_attention_dim, dtype=bf16),
            "pooled_prompt_embeds": embeds(1, config.pooled_projection_dim, dtype=bf16),
            "guidance_scale": 3.5,
        }
    if family == "sd3":
        return common | {
            "prompt_embeds": embeds(1, 333, config.joint_attention_dim, dtype=bf16),
            "pooled_prompt_embeds": embeds(1, config.pooled_projection_dim, dtype=bf16),
            "guidance_scale": 1.0,
        }
    if family == "zimage":
        return common | {
            "prompt_embeds": [embeds(128, config.cap_feat_dim, dtype=bf16)],
            "guidance_scale": 0.0,
        }
    if family == "qwen-image":
        return common | {
            "prompt_embeds": embeds(1, 128, config.joint_attention_dim, dtype=bf16),
            "prompt_embeds_mask": torch.ones(1, 128, dtype=torch.long),
            "true_cfg_scale": 1.0,
        }
    return common | {"prompt_embeds": embeds(1, 512, config.joint_attention_dim, dtype=bf16)}


RELEASED: dict[str, dict[str, Any]] = {
    "flux1": {"guidance_embeds": True},  # Flux.1 dev: the class defaults are its config
    "sd3": {  # SD 3.5 Medium
        "num_layers": 24,
        "num_attention_heads": 24,
        "caption_projection_dim": 1536,
        "pos_embed_max_size": 384,
        "qk_norm": "rms_norm",
        "dual_attention_layers": tuple(range(13)),
    },
    "zimage": {"axes_lens": [1536, 512, 512]},
    "qwen-image": {"out_channels": 16},
    "flux2-klein": {  # 4B
        "in_channels": 128,
        "num_layers": 5,
        "num_single_layers": 20,
        "num_attention_heads": 24,
        "joint_attention_dim": 7680,
        "guidance_embeds": False,
    },
}
"""The released transformers' configs over the diffusers classes' defaults (the values
sdstudio infers from their files' shapes)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="loads measured (median)")
    parser.add_argument("--real", nargs="*", default=[], choices=tuple(RELEASED))
    args = parser.parse_args(argv)
    from sdstudio.logs import quiet_third_party

    quiet_third_party()
    print(f"Tiny models at {args.size}x{args.size}, {args.steps} steps (CPU):")
    print(f"{'family':<12} {'layout':<10} {'load s':>8} {'s/step':>8}")
    for family in args.families:
        for layout in ("folder", "comfyui"):
            with tempfile.TemporaryDirectory(prefix="sdstudio-bench-") as tmp:
                load, step = tiny_figures(
                    family, layout, Path(tmp), args.size, args.steps, args.rounds
                )
            print(f"{family:<12} {layout:<10} {load:>8.2f} {step:>8.3f}", flush=True)
    for family in args.real:
        built, step, parameters = real_step(family, args.size)
        print(
            f"{family:<12} real size: {parameters:.2f} B parameters (bf16), built in "
            f"{built:.0f} s, one step at {args.size}x{args.size} in {step:.1f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
