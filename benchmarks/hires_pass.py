"""Time of a hires fix on the CPU: one first-pass step and one hires step, as a user runs it.

    python benchmarks/hires_pass.py                     # SD 1.5 architecture, 512 -> 1024
    python benchmarks/hires_pass.py --size 256          # a 256 px first pass, 512 px hires
    python benchmarks/hires_pass.py --upscaler Lanczos  # decode, resize, encode again
    python benchmarks/hires_pass.py --model PATH        # any model sdstudio loads

Without ``--model``, a single-file checkpoint of random fp16 weights with SD 1.5's
full-size architecture is written to a temporary folder (2 GB; see
``benchmarks/cpu_memory.py``). The engine generates one image with 1 step, CFG 7,
and a hires fix of upscale 2 with 1 hires step at denoising 0.5, in float32 on the
CPU. Printed: the seconds of the first pass (its prompt and step; a ``Latent``
upscaler decodes nothing there), of the second pass (upscale, its step, the VAE
decode at the hires size) and of each pass's step, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(model: Path, size: int, upscaler: str, folder: Path) -> dict[str, float]:
    """Generate once with a hires fix and time its parts (seconds)."""
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.generation import Engine, Progress
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.engine.refine.hires_settings import HiresFix
    from sdstudio.engine.request import GenerationRequest, Mode

    manager = PipelineManager(choose_device("cpu"))
    started = time.perf_counter()
    manager.pipeline(str(model), Mode.TXT2IMG)
    loaded = time.perf_counter()
    marks: dict[str, float] = {}

    def on_progress(progress: Progress) -> None:
        marks.setdefault("hires_step" if progress.hires else "first_step", time.perf_counter())

    def on_status(message: str) -> None:
        if message.startswith("Hires pass"):
            marks["hires"] = time.perf_counter()

    request = GenerationRequest(
        model=str(model),
        prompt="a lighthouse at dusk",
        sampler="Euler",
        schedule="Automatic",
        steps=1,
        guidance_scale=7.0,
        seed=1,
        width=size,
        height=size,
        hires=HiresFix(scale=2, upscaler=upscaler, steps=1, denoise=0.5),
    )
    engine = Engine(manager, folder / "inputs", previews=False)
    begun = time.perf_counter()
    [result] = list(engine.generate(request, on_progress=on_progress, on_status=on_status))
    ended = time.perf_counter()
    assert result.image.size == (2 * size, 2 * size)
    return {
        "load_s": loaded - started,
        "first_pass_s": marks["hires"] - begun,
        "first_step_s": marks["first_step"] - begun,
        "second_pass_s": ended - marks["hires"],
        "hires_step_s": marks["hires_step"] - marks["hires"],
        "hires_decode_s": ended - marks["hires_step"],
    }


def main(argv: list[str] | None = None) -> int:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="first pass size (default 512)")
    parser.add_argument("--upscaler", default="Latent", help="Latent (default), Lanczos ...")
    parser.add_argument("--model", type=Path, default=None, help="default: random SD 1.5")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sdstudio-hires-") as name:
        folder = Path(name)
        model = args.model
        if model is None:
            model = folder / "sd1-random.safetensors"
            # Built in its own process, so that its memory is given back before the run.
            code = "import sys; from benchmarks.cpu_memory import write_checkpoint as w; "
            code += "from pathlib import Path; w('sd1', Path(sys.argv[1]))"
            subprocess.run([sys.executable, "-c", code, str(model)], check=True, cwd=ROOT)
        figures = measure(model, args.size, args.upscaler, folder)
    size, hires = args.size, 2 * args.size
    print(
        f"{size}x{size} -> {hires}x{hires} with {args.upscaler}, 1 + 1 steps, CFG 7, float32 "
        f"on the CPU: first pass {figures['first_pass_s']:.1f} s "
        f"(its step {figures['first_step_s']:.1f} s), second pass "
        f"{figures['second_pass_s']:.1f} s (its step {figures['hires_step_s']:.1f} s, "
        f"then the decode {figures['hires_decode_s']:.1f} s); loading {figures['load_s']:.1f} s",
        flush=True,
    )
    print(json.dumps({"size": size, "hires_size": hires, **figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
