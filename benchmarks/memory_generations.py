"""Memory across many generations: does anything pile up as a user keeps working?

Runs N generations (default 100) as the app does: each through the engine with
per-step previews, written to disk with its metadata and recorded in the
history, alternating text-to-image and image-to-image, with a new prompt and
seed each time and a VAE override switched on and off. Prints the process's
resident memory (RSS) and Python's traced allocations after warm-up and at the
end. Target: no growth (the end within a few MB of the warm-up figure).

    python benchmarks/memory_generations.py [--generations 100] [--warm-up 10]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import tracemalloc
from pathlib import Path


def rss_mb() -> float:
    """This process's resident memory in MB."""
    import psutil

    return psutil.Process().memory_info().rss / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=100)
    parser.add_argument("--warm-up", type=int, default=10)
    args = parser.parse_args(argv)
    from sdstudio.logs import quiet_third_party

    quiet_third_party()
    from PIL import Image
    from safetensors.torch import load_file, save_file

    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.generation import Engine
    from sdstudio.engine.history.library import ImageLibrary
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.engine.request import GenerationRequest, Mode
    from sdstudio.testing import save_tiny_model

    with tempfile.TemporaryDirectory(prefix="sdstudio-memory-") as tmp:
        root = Path(tmp)
        model = save_tiny_model(root / "model")
        weights = load_file(str(model / "vae" / "diffusion_pytorch_model.safetensors"))
        vae = root / "vae" / "other"
        vae.mkdir(parents=True)
        (vae / "config.json").write_bytes((model / "vae" / "config.json").read_bytes())
        save_file(
            {k: v * 0.9 for k, v in weights.items()}, vae / "diffusion_pytorch_model.safetensors"
        )
        source = root / "source.png"
        Image.new("RGB", (64, 64), (40, 120, 200)).save(source)
        engine = Engine(PipelineManager(choose_device("cpu")), root / "inputs")
        library = ImageLibrary.open(root / "history.db", root / "outputs")
        previews = 0

        def on_progress(progress: object) -> None:
            nonlocal previews
            previews += getattr(progress, "preview", None) is not None

        def generate(index: int) -> None:
            request = GenerationRequest(
                model=str(model),
                prompt=f"a lighthouse number {index}, (dusk:1.{index % 5})",
                steps=3,
                width=64,
                height=64,
                seed=index,
                vae=str(vae) if index % 3 == 0 else "",
            )
            if index % 2:
                request = request.replace(mode=Mode.IMG2IMG, init_image=str(source))
            for result in engine.generate(request, on_progress=on_progress):
                library.save(result)

        for index in range(args.warm_up):
            generate(index)
        gc.collect()
        tracemalloc.start()
        start_rss, start_traced = rss_mb(), tracemalloc.get_traced_memory()[0]
        samples = []
        for index in range(args.warm_up, args.warm_up + args.generations):
            generate(index)
            if (index - args.warm_up + 1) % max(1, args.generations // 5) == 0:
                gc.collect()
                samples.append(round(rss_mb(), 1))
        gc.collect()
        end_rss, end_traced = rss_mb(), tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        rows = library.store.count()
        library.close()
    print(
        json.dumps(
            {
                "generations": args.generations,
                "history_rows": rows,
                "previews": previews,
                "rss_after_warm_up_mb": round(start_rss, 1),
                "rss_samples_mb": samples,
                "rss_growth_mb": round(end_rss - start_rss, 1),
                "python_traced_growth_kb": round((end_traced - start_traced) / 1024, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
