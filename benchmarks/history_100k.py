"""History speed at 100,000 images: open, first page, search, favourites.

Fills a fresh database with N rows of realistic prompts, closes it, then
times (median of several runs, milliseconds) opening the library and the
queries the gallery makes. Targets: open under 300 ms, each query under 50 ms.

    python benchmarks/history_100k.py [--rows 100000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

WORDS = [
    "portrait",
    "landscape",
    "castle",
    "lighthouse",
    "forest",
    "river",
    "mountain",
    "city",
    "street",
    "night",
    "dusk",
    "dawn",
    "neon",
    "cyberpunk",
    "watercolor",
    "oil",
    "painting",
    "photo",
    "cinematic",
    "dramatic",
    "soft",
    "light",
    "fog",
    "rain",
    "snow",
    "dragon",
    "knight",
    "wizard",
    "cat",
    "dog",
    "fox",
    "owl",
    "ship",
    "boat",
    "ocean",
    "beach",
    "desert",
    "garden",
    "flower",
    "rose",
    "tree",
    "ancient",
    "futuristic",
    "golden",
    "silver",
    "crimson",
    "azure",
    "emerald",
    "detailed",
    "masterpiece",
    "sharp",
    "focus",
    "bokeh",
    "wide",
    "angle",
    "macro",
    "studio",
    "volumetric",
    "sunset",
    "moon",
    "stars",
    "galaxy",
    "robot",
    "girl",
    "boy",
    "old",
    "man",
]


def fill(database: Path, rows: int, seed: int = 0) -> None:
    """Write ``rows`` history rows with random prompts, about 5 % favourites."""
    from sdstudio.engine.history import HistoryStore
    from sdstudio.engine.metadata import ImageRecord
    from sdstudio.engine.request import GenerationRequest

    rng = random.Random(seed)
    models = ["sd-1.5", "dreamshaper-8", "sdxl-base", "sd-turbo", "realistic-vision"]
    with HistoryStore(database) as store:
        for start in range(0, rows, 5000):
            batch = []
            for i in range(start, min(rows, start + 5000)):
                prompt = ", ".join(rng.sample(WORDS, 12))
                request = GenerationRequest(
                    model=f"/models/{rng.choice(models)}",
                    prompt=prompt,
                    negative_prompt="blurry, lowres, bad anatomy",
                    seed=rng.randrange(2**32),
                )
                stamp = 1_750_000_000 + i * 7
                created = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(stamp))
                record = ImageRecord(
                    request=request,
                    model_name=Path(request.model).name,
                    created=created,
                    duration_s=3.2,
                )
                batch.append((Path(f"/outputs/{i:06d}.png"), record, "sdstudio"))
            store.add_many(batch)
        store._db.execute(  # favourites: about one in twenty
            "UPDATE images SET favorite = 1 WHERE id % 20 = 0"
        )


def median_ms(run: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``run`` in milliseconds."""
    times = []
    for _ in range(repeat):
        begin = time.perf_counter()
        run()
        times.append((time.perf_counter() - begin) * 1000)
    return round(statistics.median(times), 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    from sdstudio.engine.history import HistoryQuery
    from sdstudio.engine.history.library import ImageLibrary

    with tempfile.TemporaryDirectory(prefix="sdstudio-history-") as tmp:
        database = Path(tmp) / "history.sqlite3"
        begin = time.perf_counter()
        fill(database, args.rows)
        fill_s = time.perf_counter() - begin
        outputs = Path(tmp) / "outputs"

        def open_library() -> None:
            ImageLibrary.open(database, outputs).close()

        open_ms = median_ms(open_library, args.repeat)
        library = ImageLibrary.open(database, outputs)
        store = library.store
        search = HistoryQuery(search="lighthouse")
        favourites = HistoryQuery(favorites=True)
        figures = {
            "rows": store.count(),
            "fill_s": round(fill_s, 1),
            "open_ms": open_ms,
            "first_page_ms": median_ms(lambda: store.page(limit=100), args.repeat),
            "count_ms": median_ms(store.count, args.repeat),
            "search_word_ms": median_ms(lambda: store.page(search, limit=100), args.repeat),
            "search_count_ms": median_ms(lambda: store.count(search), args.repeat),
            "search_two_words_ms": median_ms(
                lambda: store.page(HistoryQuery(search="castle fog"), limit=100), args.repeat
            ),
            "favourites_ms": median_ms(lambda: store.page(favourites, limit=100), args.repeat),
            "favourites_count_ms": median_ms(lambda: store.count(favourites), args.repeat),
            "model_filter_ms": median_ms(
                lambda: store.page(HistoryQuery(model="sd-turbo"), limit=100), args.repeat
            ),
            "deep_page_ms": median_ms(
                lambda: store.page(offset=args.rows // 2, limit=100), args.repeat
            ),
            "search_hits": store.count(search),
            "favourites": store.count(favourites),
            "database_mb": round(database.stat().st_size / 1e6, 1),
        }
        library.close()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
