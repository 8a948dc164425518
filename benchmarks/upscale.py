"""Time and memory of upscaling with a full-size ESRGAN on the CPU, in tiles and whole.

    python benchmarks/upscale.py                    # 512 -> 2048 px, tiles of 256, then whole
    python benchmarks/upscale.py --tiles 192,512    # other tile sizes (0: the whole image)
    python benchmarks/upscale.py --size 256         # a 256 px source
    python benchmarks/upscale.py --model PATH       # any upscaler file sdstudio loads
    python benchmarks/upscale.py --threads 1        # torch's CPU threads (default: its own)

Without ``--model``, an RRDBNet of random weights with ESRGAN_4x's and
RealESRGAN_x4plus's architecture (64 filters, 23 blocks, 4x; 67 MB) is written as
``.safetensors`` to a temporary folder. Each tile size runs in a fresh process, which
loads the model with sdstudio's loader and upscales a random square image 4x with
:func:`sdstudio.engine.refine.upscalers.upscale_image`, float32 on the CPU, with the default
overlap. Printed per run: seconds, tiles, the process's resident memory before the
upscale (torch imported, the model loaded) and its peak (``ru_maxrss``), then one JSON
line with all runs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_model(path: Path, seed: int = 0) -> Path:
    """A full-size 4x ESRGAN (RRDBNet, 64 filters, 23 blocks) of random weights."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    model = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _rss_mb() -> float:
    """This process's resident memory now (Linux), else its peak so far."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except (OSError, ValueError, IndexError):
        return _peak_mb()


def _peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def measure(model: Path, size: int, tile: int, threads: int = 0) -> dict[str, float]:
    """Upscale a random ``size`` px image 4x in this process; seconds, tiles and memory
    (``threads``: torch's CPU threads, 0 for its default)."""
    import numpy as np
    import torch
    from PIL import Image

    from sdstudio.engine.refine.upscalers import UpscalerCache, upscale_image

    if threads:
        torch.set_num_threads(threads)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), np.uint8))
    cache = UpscalerCache()
    started = time.perf_counter()
    upscaler = cache.get(model)
    loaded = time.perf_counter()
    before = _rss_mb()
    tiles: list[int] = []
    begun = time.perf_counter()
    result = upscale_image(
        image, model, 4, tile=tile, cache=cache, on_progress=lambda d, t: tiles.append(t)
    )
    seconds = time.perf_counter() - begun
    assert result.size == (4 * size, 4 * size)
    return {
        "tile": tile,
        "tiles": tiles[-1] if tiles else 0,
        "seconds": seconds,
        "load_s": loaded - started,
        "scale": upscaler.scale,
        "threads": torch.get_num_threads(),
        "rss_before_mb": before,
        "peak_rss_mb": _peak_mb(),
    }


def _run_child(model: Path, size: int, tile: int, threads: int) -> dict[str, float] | None:
    """:func:`measure` in a fresh process (``None`` when it died: out of memory)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(model)]
    command += ["--size", str(size), "--tiles", str(tile), "--threads", str(threads)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"tile {tile}: failed ({done.returncode}): {done.stderr.strip()[-300:]}")
        return None
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> int:
    """Measure each tile size in its own process and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="source size (default 512)")
    parser.add_argument("--tiles", default="256,0", help="tile sizes, 0 = whole (default 256,0)")
    parser.add_argument("--model", type=Path, default=None, help="default: random ESRGAN 4x")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    tiles = [int(t) for t in args.tiles.split(",")]
    if args.child is not None:
        print(json.dumps(measure(args.child, args.size, tiles[0], args.threads)))
        return 0
    runs = []
    with tempfile.TemporaryDirectory(prefix="sdstudio-upscale-") as name:
        model = args.model or write_model(Path(name) / "esrgan-4x-random.safetensors")
        for tile in tiles:
            figures = _run_child(model, args.size, tile, args.threads)
            if figures is None:
                continue
            runs.append(figures)
            out = 4 * args.size
            pieces = f"{figures['tiles']:g} tiles of {tile}" if tile else "the whole image"
            print(
                f"{args.size}x{args.size} -> {out}x{out}, {pieces}, float32 on the CPU "
                f"({figures['threads']:g} threads): "
                f"{figures['seconds']:.1f} s; memory {figures['rss_before_mb']:.0f} MB before, "
                f"peak {figures['peak_rss_mb']:.0f} MB (load {figures['load_s']:.2f} s)",
                flush=True,
            )
    print(json.dumps({"size": args.size, "runs": runs}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
