"""Save screenshots of the main window: empty, while generating, with a gallery.

For each theme (light, dark) and size (1280x800, 1920x1080) the window is
built as the app builds it, with a tiny built-in model, and grabbed offscreen.

    python tools/screenshots.py [--out screenshots]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

SIZES = ((1280, 800), (1920, 1080))
THEMES = ("light", "dark")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="screenshots")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from PySide6.QtCore import QEventLoop
    from PySide6.QtWidgets import QApplication

    from sdstudio.engine.history.library import ImageLibrary
    from sdstudio.engine.paths import AppPaths
    from sdstudio.engine.request import GenerationRequest
    from sdstudio.logs import quiet_third_party
    from sdstudio.testing import save_tiny_model
    from sdstudio.ui.controller import GenerationController
    from sdstudio.ui.main_window import MainWindow
    from sdstudio.ui.theme import apply_theme
    from sdstudio.ui.worker import GenerationWorker

    quiet_third_party()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory(prefix="sdstudio-shots-") as tmp:
        model = save_tiny_model(Path(tmp) / "tiny-model")
        for theme in THEMES:
            apply_theme(app, theme)
            for width, height in SIZES:
                paths = AppPaths.under(Path(tmp) / f"home-{theme}-{width}")
                library = ImageLibrary.open(paths.history_db, paths.outputs_dir)
                controller = GenerationController(GenerationWorker(library, paths, "cpu"))
                window = MainWindow(controller, library, paths)
                window.resize(width, height)
                window.show()
                app.processEvents()
                stem = f"{theme}-{width}x{height}"
                window.grab().save(str(out / f"{stem}-empty.png"))

                window.panel.load(
                    GenerationRequest(
                        model=str(model),
                        prompt="a lighthouse on a cliff at dusk, oil painting",
                        negative_prompt="blurry",
                        steps=12,
                        width=512,
                        height=384,
                        seed=7,
                        batch_size=4,
                    )
                )
                loop = QEventLoop()

                def grab_during(
                    _job: int,
                    step: int,
                    _total: int,
                    index: int,
                    *_rest: object,
                    stem: str = stem,
                    window: MainWindow = window,
                ) -> None:
                    if index == 1 and step == 6:
                        window.grab().save(str(out / f"{stem}-generating.png"))

                controller.progress.connect(grab_during)
                controller.finished.connect(lambda *_a, loop=loop: loop.quit())
                controller.failed.connect(lambda *_a, loop=loop: loop.quit())
                window.generate()
                loop.exec()
                app.processEvents()
                window.grab().save(str(out / f"{stem}-gallery.png"))
                window.close()
                library.close()
                print(stem, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
