"""``sdstudio --self-test``: build the window, generate with a tiny model, report as JSON.

Used to check that an installed or packaged app really works, with no display
and no model download: it builds a tiny random model, runs one generation
through the real worker thread, checks one progress signal per step, and
hands a file to its own single-instance server as a second launch would.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sdstudio.engine.paths import AppPaths

STEPS = 4


def run_self_test(device: str = "cpu") -> int:
    """Run the self-test; print a JSON summary and return the exit status."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    started = time.perf_counter()
    summary: dict[str, object] = {"ok": False}
    with tempfile.TemporaryDirectory(prefix="sdstudio-self-test-") as tmp:
        os.environ["SDSTUDIO_HOME"] = str(Path(tmp) / "home")
        try:
            summary.update(_generate_through_window(Path(tmp), device))
        except Exception as error:  # the report must say what broke
            summary["error"] = f"{type(error).__name__}: {error}"
    summary["seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


def _generate_through_window(folder: Path, device: str) -> dict[str, object]:
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    import sdstudio
    from sdstudio.engine.history.library import ImageLibrary
    from sdstudio.engine.paths import AppPaths
    from sdstudio.engine.request import GenerationRequest
    from sdstudio.logs import quiet_third_party
    from sdstudio.ui.controller import GenerationController
    from sdstudio.ui.main_window import MainWindow
    from sdstudio.ui.worker import GenerationWorker

    app = QApplication.instance() or QApplication(["sdstudio"])
    paths = AppPaths.default()
    library = ImageLibrary.open(paths.history_db, paths.outputs_dir)
    controller = GenerationController(GenerationWorker(library, paths, device))
    window = MainWindow(controller, library, paths)
    window.show()

    quiet_third_party()
    from sdstudio.testing import save_tiny_model

    model = save_tiny_model(folder / "tiny-model")
    window.panel.load(
        GenerationRequest(
            model=str(model), prompt="self test", steps=STEPS, width=64, height=64, seed=1
        )
    )
    steps: list[int] = []
    outcome: dict[str, object] = {}
    loop = QEventLoop()
    controller.progress.connect(lambda _job, step, *_rest: steps.append(step))
    controller.finished.connect(lambda _job, written: (outcome.update(images=written), loop.quit()))
    controller.failed.connect(lambda _job, message: (outcome.update(error=message), loop.quit()))
    controller.cancelled.connect(lambda _job: (outcome.update(error="cancelled"), loop.quit()))
    QTimer.singleShot(300_000, lambda: (outcome.update(error="timed out"), loop.quit()))
    window.generate()
    loop.exec()
    handed_over = _hand_over_to_self(paths, folder / "opened.png")
    controller.shutdown()
    window.close()
    app.processEvents()
    recorded = library.store.count()
    library.close()
    images = outcome.get("images") or []
    ok = (
        "error" not in outcome
        and steps == list(range(1, STEPS + 1))
        and len(images) == 1  # type: ignore[arg-type]
        and all(Path(p).is_file() for p in images)  # type: ignore[union-attr]
        and recorded == 1
        and handed_over
    )
    result: dict[str, object] = {
        "ok": ok,
        "version": sdstudio.__version__,
        "steps_expected": STEPS,
        "progress_signals": len(steps),
        "images": len(images),  # type: ignore[arg-type]
        "history_rows": recorded,
        "thread_stopped": not controller.thread_running,
        "hand_over": handed_over,
    }
    if "error" in outcome:
        result["error"] = outcome["error"]
    return result


def _hand_over_to_self(paths: AppPaths, file: Path) -> bool:
    """Start the single-instance server as the app does and send it ``file`` over its socket.

    The client is asynchronous, so this one event loop serves both ends.
    """
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtNetwork import QLocalSocket

    from sdstudio.ui.single_instance import claim_instance, encode_message

    server = claim_instance(paths, [])
    if server is None:
        return False
    received: list[list[str]] = []
    loop = QEventLoop()
    server.files_received.connect(lambda files: (received.append(files), loop.quit()))
    socket = QLocalSocket()
    socket.connected.connect(lambda: socket.write(encode_message({"files": [str(file)]})))
    socket.connectToServer(server.name)
    QTimer.singleShot(10_000, loop.quit)
    loop.exec()
    socket.abort()
    server.close()
    return received == [[str(file)]]
