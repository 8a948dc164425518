"""Memory when switching models: is the old model's memory given back?

Builds two models with SD 1.5's UNet (random weights), then generates with A,
with B, with A again and so on through the engine, printing the process's
resident memory (RSS) after each load. Target: every load of a model lands
within 10 % of the first load of that model (no growth across switches).

    python benchmarks/memory_switch.py [--switches 4]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
from pathlib import Path


def rss_mb() -> float:
    """This process's resident memory in MB."""
    import psutil

    return psutil.Process().memory_info().rss / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=4)
    parser.add_argument("--tiny", action="store_true", help="tiny models (a quick check only)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from sdstudio.logs import quiet_third_party

    quiet_third_party()
    from engine_vs_diffusers import build_sd15_sized_model

    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.generation import Engine
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.engine.request import GenerationRequest
    from sdstudio.testing import save_tiny_model

    build = save_tiny_model if args.tiny else build_sd15_sized_model
    with tempfile.TemporaryDirectory(prefix="sdstudio-memory-") as tmp:
        models = [build(Path(tmp) / name) for name in ("model-a", "model-b")]
        gc.collect()
        manager = PipelineManager(choose_device("cpu"))
        engine = Engine(manager, Path(tmp) / "inputs")
        start = rss_mb()
        loads: list[dict[str, object]] = []
        for index in range(args.switches * 2):
            model = models[index % 2]
            request = GenerationRequest(
                model=str(model), prompt="memory", steps=1, width=64, height=64, seed=1
            )
            list(engine.generate(request))
            gc.collect()
            loads.append({"model": model.name, "rss_mb": round(rss_mb(), 1)})
        manager.unload()
        gc.collect()
        after_unload = rss_mb()
    first = {str(entry["model"]): float(entry["rss_mb"]) for entry in loads[:2]}  # type: ignore[arg-type]
    growth = max(
        float(entry["rss_mb"]) / first[str(entry["model"])] - 1
        for entry in loads  # type: ignore[arg-type]
    )
    print(
        json.dumps(
            {
                "rss_before_mb": round(start, 1),
                "loads": loads,
                "max_growth_vs_first_load": round(growth, 4),
                "rss_after_unload_mb": round(after_unload, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
