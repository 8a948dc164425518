"""GUI responsiveness while the worker generates, and start-up time.

1. Start-up: a fresh process runs ``sdstudio.app.main()``; the time from
   launching it to the window's event loop answering is printed, with whether
   torch was imported by then (it should not be).
2. Responsiveness: the window generates on the CPU with a model whose step
   takes over 0.3 s (SD 1.5's UNet with random weights), while a 1 ms QTimer
   heartbeat on the GUI thread records the gaps between its ticks. The longest
   gap and the 99th percentile are printed for the whole job (model loading
   included) and for the denoising steps alone. The worker's warm-up (importing
   torch, which the app does once, shortly after the window appears) is
   measured apart.

Targets: start-up under 1 s, longest gap under 50 ms, p99 under 16 ms.

    python benchmarks/gui_responsiveness.py [--size 128] [--steps 4]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STARTUP_CHILD = """
import json, sys, time
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
original_exec = QApplication.exec
def measured_exec(*_args):
    def report():
        loaded = {"torch": "torch" in sys.modules, "numpy": "numpy" in sys.modules}
        print(json.dumps({"ready": time.time(), **loaded}), flush=True)
        QApplication.quit()
    QTimer.singleShot(0, report)
    return original_exec()
QApplication.exec = measured_exec
from sdstudio.app import main
sys.exit(main([]))
"""


def measure_startup(home: Path, runs: int = 3) -> dict[str, object]:
    """Median seconds from launching the app to an answering window."""
    times = []
    torch_loaded = False
    env = {**os.environ, "SDSTUDIO_HOME": str(home), "QT_QPA_PLATFORM": "offscreen"}
    for _ in range(runs):
        started = time.time()
        done = subprocess.run(
            [sys.executable, "-c", STARTUP_CHILD],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=True,
        )
        report = json.loads(done.stdout.strip().splitlines()[-1])
        times.append(report["ready"] - started)
        torch_loaded = torch_loaded or report["torch"]
    times.sort()
    return {"startup_s": round(times[len(times) // 2], 3), "torch_imported_at_start": torch_loaded}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure_gaps(model: Path, size: int, steps: int) -> dict[str, object]:
    """Heartbeat gaps on the GUI thread while the window generates."""
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from sdstudio.engine.history.library import ImageLibrary
    from sdstudio.engine.paths import AppPaths
    from sdstudio.engine.request import GenerationRequest
    from sdstudio.ui.controller import GenerationController
    from sdstudio.ui.main_window import MainWindow
    from sdstudio.ui.worker import GenerationWorker

    app = QApplication.instance() or QApplication(["sdstudio"])
    paths = AppPaths.default()
    library = ImageLibrary.open(paths.history_db, paths.outputs_dir)
    controller = GenerationController(GenerationWorker(library, paths, "cpu"))
    window = MainWindow(controller, library, paths)
    window.show()
    window.panel.load(
        GenerationRequest(
            model=str(model),
            prompt="a lighthouse at dusk",
            steps=steps,
            width=size,
            height=size,
            seed=1,
        )
    )
    ticks: list[float] = []
    step_times: list[float] = []
    heartbeat = QTimer()
    heartbeat.setInterval(1)
    heartbeat.timeout.connect(lambda: ticks.append(time.perf_counter()))
    loop = QEventLoop()
    controller.progress.connect(lambda *args: step_times.append(time.perf_counter()))
    controller.finished.connect(lambda *args: loop.quit())
    controller.failed.connect(lambda job, message: (print(message), loop.quit()))
    heartbeat.start()
    warm = QEventLoop()
    controller.warmed_up.connect(warm.quit)
    warm_started = time.perf_counter()
    controller.warm_up()
    warm.exec()
    warm_up_s = time.perf_counter() - warm_started
    warm_gaps = [(b - a) * 1000 for a, b in itertools.pairwise(ticks)]
    ticks.clear()
    started = time.perf_counter()
    window.generate()
    loop.exec()
    heartbeat.stop()
    elapsed = time.perf_counter() - started
    controller.shutdown()
    library.close()
    window.close()
    app.processEvents()

    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(ticks)]
    first_step = step_times[0] if step_times else started
    step_gaps = [(b - a) * 1000 for a, b in itertools.pairwise(ticks) if a >= first_step]
    per_step = (step_times[-1] - step_times[0]) / max(1, len(step_times) - 1)
    return {
        "warm_up_s": round(warm_up_s, 2),
        "warm_up_longest_gap_ms": round(max(warm_gaps), 1),
        "job_s": round(elapsed, 2),
        "step_s": round(per_step, 2),
        "ticks": len(ticks),
        "longest_gap_ms": round(max(gaps), 1),
        "p99_gap_ms": round(percentile(gaps, 0.99), 1),
        "steps_longest_gap_ms": round(max(step_gaps), 1) if step_gaps else None,
        "steps_p99_gap_ms": round(percentile(step_gaps, 0.99), 1) if step_gaps else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--tiny", action="store_true", help="tiny model (a quick check only)")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    with tempfile.TemporaryDirectory(prefix="sdstudio-gui-bench-") as tmp:
        os.environ["SDSTUDIO_HOME"] = str(Path(tmp) / "home")
        figures: dict[str, object] = measure_startup(Path(tmp) / "home")
        # Build the model in another process, so that torch is first imported
        # by the worker thread here, as in the real app.
        model = Path(tmp) / "model"
        builder = "save_tiny_model" if args.tiny else "build_sd15_sized_model"
        script = (
            f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "from sdstudio.logs import quiet_third_party; quiet_third_party()\n"
            "from sdstudio.testing import save_tiny_model\n"
            "from engine_vs_diffusers import build_sd15_sized_model\n"
            f"{builder}({str(model)!r})\n"
        )
        subprocess.run([sys.executable, "-c", script], check=True, timeout=600)
        assert "torch" not in sys.modules
        figures.update(measure_gaps(model, args.size, args.steps))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
