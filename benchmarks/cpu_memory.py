"""Peak memory of one CPU generation with a full-size model, as a user runs it.

    python benchmarks/cpu_memory.py                 # SD 1.5 at 512 px and SDXL at 1024 px
    python benchmarks/cpu_memory.py --family sd1    # one family

A single-file checkpoint of random fp16 weights with the real architecture is
written to a temporary folder (2 GB for SD 1.5, 7 GB for SDXL), then
``sdstudio-cli generate`` runs one step at the family's native size in a
fresh process (float32 on the CPU, as sdstudio chooses there). The figure is
that process's peak resident memory: what the machine needs free. More steps
do not need more memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"sd1": 512, "sdxl": 1024}
LABELS = {"sd1": "SD 1.5", "sdxl": "SDXL"}


def write_checkpoint(family: str, path: Path) -> None:
    """A random fp16 original-layout checkpoint of ``family``'s full-size architecture."""
    import torch
    from safetensors.torch import save_file

    from sdstudio.engine.models.loading import configs_root
    from sdstudio.testing.checkpoints import random_original_checkpoint

    state = random_original_checkpoint(configs_root() / family, dtype=torch.float16)
    save_file(state, str(path))


def peak_of_generation(checkpoint: Path, size: int, folder: Path) -> tuple[float, float]:
    """Peak RSS (GB) and wall time (s) of a one-step generation in a fresh process."""
    env = {**os.environ, "SDSTUDIO_HOME": str(folder / "home"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "sdstudio.cli", "generate", "--model", str(checkpoint)]
    command += ["--prompt", "a lighthouse at dusk", "--steps", "1", "--cfg", "7"]
    command += ["--width", str(size), "--height", str(size), "--device", "cpu"]
    command += ["--out", str(folder / "out"), "--json"]
    out, err = folder / "stdout.txt", folder / "stderr.txt"
    started = time.perf_counter()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr)
        _pid, status, usage = os.wait4(process.pid, 0)  # rusage of this child alone
        process.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(err.read_text(errors="replace"))
    events = [json.loads(line) for line in out.read_text().splitlines() if line[:1] == "{"]
    if not any(event["event"] == "image" for event in events):
        raise SystemExit("no image was written")
    return usage.ru_maxrss / 1024**2, elapsed  # ru_maxrss is in KiB on Linux


def main() -> None:
    """Measure each family and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(SIZES), action="append")
    args = parser.parse_args()
    for family in args.family or ["sd1", "sdxl"]:
        with tempfile.TemporaryDirectory(prefix="sdstudio-cpu-memory-") as name:
            folder = Path(name)
            checkpoint = folder / f"{family}-random.safetensors"
            # Built in its own process, so that its memory is not counted.
            code = "import sys; from benchmarks.cpu_memory import write_checkpoint as w; "
            code += "from pathlib import Path; w(sys.argv[1], Path(sys.argv[2]))"
            root = Path(__file__).resolve().parent.parent
            build = [sys.executable, "-c", code, family, str(checkpoint)]
            subprocess.run(build, check=True, cwd=root)
            size = SIZES[family]
            peak, elapsed = peak_of_generation(checkpoint, size, folder)
            gigabytes = checkpoint.stat().st_size / 1024**3
            print(
                f"{LABELS[family]} {size}x{size}, 1 step, CFG 7, float32 on the CPU: "
                f"peak RSS {peak:.1f} GB, {elapsed:.0f} s (checkpoint {gigabytes:.1f} GB fp16)",
                flush=True,
            )


if __name__ == "__main__":
    main()
