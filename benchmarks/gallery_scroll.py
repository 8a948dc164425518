"""Gallery speed at 100,000 images: open the panel, then scroll the grid to the end.

Fills a fresh history (as ``history_100k.py`` does; the files themselves do not
exist, so every tile ends with the "missing" placeholder after one background
attempt), opens a :class:`GalleryPanel` offscreen and scrolls to the bottom in
equal steps, painting after each. Prints JSON, in milliseconds: the time to
open and first paint the panel, the time until the view has laid out every
row (the layout is batched, so the panel is usable before), and the median
and worst time per scroll step; then the time per thumbnail of real 512 px
images, made cold and read back from the disk cache. Figures only, no targets.

    python benchmarks/gallery_scroll.py [--rows 100000] [--steps 200]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _fill(database: Path, rows: int) -> None:
    spec = importlib.util.spec_from_file_location(
        "history_100k", Path(__file__).with_name("history_100k.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.fill(database, rows)


def _thumbnail_ms(app: object, folder: Path, count: int) -> dict[str, float]:
    """Per-thumbnail time for ``count`` 512 px PNGs: cold, then from the disk cache."""
    from PIL import Image

    from sdstudio.ui.thumbnails import ThumbnailLoader

    paths = []
    for i in range(count):
        path = folder / f"{i:04d}.png"
        Image.effect_noise((512, 512), 40 + i % 50).convert("RGB").save(path)
        paths.append(str(path))
    figures = {}
    for name in ("cold", "disk_cache"):
        loader = ThumbnailLoader(folder / "cache")
        begin = time.perf_counter()
        for path in paths:
            loader.request(path)
        while loader.pending:
            app.processEvents()  # type: ignore[attr-defined]
        figures[f"thumbnail_{name}_ms"] = round((time.perf_counter() - begin) * 1000 / count, 2)
        loader.shutdown()
        loader.deleteLater()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--images", type=int, default=200, help="real images for thumbnails")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PySide6.QtWidgets import QApplication

    from sdstudio.engine.history.library import ImageLibrary
    from sdstudio.ui.gallery import GalleryPanel

    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory(prefix="sdstudio-gallery-") as tmp:
        database = Path(tmp) / "history.sqlite3"
        begin = time.perf_counter()
        _fill(database, args.rows)
        fill_s = time.perf_counter() - begin

        begin = time.perf_counter()
        library = ImageLibrary.open(database, Path(tmp) / "outputs")
        panel = GalleryPanel(library, Path(tmp) / "thumbnails")
        panel.resize(1000, 800)
        panel.show()
        panel.view.viewport().repaint()
        app.processEvents()
        open_ms = (time.perf_counter() - begin) * 1000

        view = panel.view
        last_index = panel.model.index(panel.model.rowCount() - 1)
        deadline = time.perf_counter() + 120
        while view.visualRect(last_index).isEmpty() and time.perf_counter() < deadline:
            app.processEvents()  # batched layout: wait until the last row has a place
        layout_ms = (time.perf_counter() - begin) * 1000

        bar = view.verticalScrollBar()
        steps: list[float] = []
        for step in range(1, args.steps + 1):
            begin = time.perf_counter()
            bar.setValue(bar.maximum() * step // args.steps)
            view.viewport().repaint()
            app.processEvents()
            steps.append((time.perf_counter() - begin) * 1000)
        end_shown = view.visualRect(last_index).intersects(view.viewport().rect())
        rows = panel.model.rowCount()
        panel.shutdown()
        panel.close()
        panel.deleteLater()
        app.processEvents()
        library.close()
        images = Path(tmp) / "images"
        images.mkdir()
        thumbnails = _thumbnail_ms(app, images, args.images) if args.images else {}
    print(
        json.dumps(
            {
                "rows": rows,
                "fill_s": round(fill_s, 1),
                "open_ms": round(open_ms, 1),
                "layout_done_ms": round(layout_ms, 1),
                "scroll_steps": len(steps),
                "scroll_step_median_ms": round(statistics.median(steps), 2),
                "scroll_step_worst_ms": round(max(steps), 2),
                "last_row_shown": end_shown,
                "thumbnail_images": args.images,
                **thumbnails,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
