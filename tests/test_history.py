"""The history store and library: queries, schema versions, rebuild, recovery, concurrency."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sdstudio.engine.generation import GeneratedImage
from sdstudio.engine.history import HistoryError, HistoryQuery, HistoryStore
from sdstudio.engine.history.library import ImageLibrary, rebuild, remove_stale_partial_files
from sdstudio.engine.history.schema import SCHEMA_VERSION
from sdstudio.engine.history.store import fts_query
from sdstudio.engine.metadata import ImageRecord
from sdstudio.engine.request import GenerationRequest


def record(prompt: str, seed: int, *, model: str = "dreamy", created: str = "") -> ImageRecord:
    request = GenerationRequest(
        model=f"/models/{model}",
        prompt=prompt,
        negative_prompt="blurry",
        seed=seed,
        width=64,
        height=64,
    )
    return ImageRecord(
        request=request,
        model_name=model,
        created=created or f"2026-01-01T00:00:{seed % 60:02d}.000+00:00",
    )


def result(prompt: str, seed: int, **kwargs) -> GeneratedImage:
    return GeneratedImage(
        Image.new("RGB", (64, 64), (seed % 255, 0, 0)), record(prompt, seed, **kwargs)
    )


@pytest.fixture
def store(tmp_path: Path):
    with HistoryStore(tmp_path / "history.sqlite3") as opened:
        yield opened


def test_add_get_and_page_newest_first(store: HistoryStore, tmp_path: Path) -> None:
    ids = [store.add(tmp_path / f"{i}.png", record(f"castle number {i}", i)) for i in range(5)]
    entry = store.get(ids[2])
    assert (entry.prompt, entry.seed, entry.model_name, entry.favorite) == (
        "castle number 2",
        2,
        "dreamy",
        False,
    )
    assert entry.request == record("castle number 2", 2).request
    assert [e.seed for e in store.page(limit=3)] == [4, 3, 2]
    assert [e.seed for e in store.page(offset=3, limit=3)] == [1, 0]
    assert store.count() == 5
    with pytest.raises(HistoryError, match="No image with id 999"):
        store.get(999)


def test_same_path_updates_its_row(store: HistoryStore, tmp_path: Path) -> None:
    first = store.add(tmp_path / "a.png", record("old prompt", 1))
    second = store.add(tmp_path / "a.png", record("new prompt", 1))
    assert first == second and store.count() == 1
    assert store.page(HistoryQuery(search="new"))[0].id == first
    assert store.count(HistoryQuery(search="old")) == 0


def test_search_favorites_and_model_filters(store: HistoryStore, tmp_path: Path) -> None:
    store.add(tmp_path / "1.png", record("a red lighthouse at dusk", 1))
    store.add(tmp_path / "2.png", record("a blue boat, Café scene", 2, model="other"))
    third = store.add(tmp_path / "3.png", record("Lighthouses in fog", 3))
    assert {e.seed for e in store.page(HistoryQuery(search="lighthouse"))} == {1, 3}
    assert [e.seed for e in store.page(HistoryQuery(search="red light"))] == [1]
    assert [e.seed for e in store.page(HistoryQuery(search="cafe"))] == [2]
    assert store.count(HistoryQuery(search="blurry")) == 3  # negative prompts are searched too
    store.set_favorite(third, True)
    assert [e.seed for e in store.page(HistoryQuery(favorites=True))] == [3]
    assert [e.seed for e in store.page(HistoryQuery(model="other"))] == [2]
    assert store.count(HistoryQuery(search="lighthouse", favorites=True)) == 1
    assert store.models() == ["dreamy", "other"]
    store.delete(third)
    assert store.count(HistoryQuery(search="fog")) == 0


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_any_search_text_is_safe(text: str) -> None:
    query = fts_query(text)
    with HistoryStore(Path(":memory:")) as memory:
        memory.count(HistoryQuery(search=text))
    assert '""' not in query


def test_schema_version_is_set_and_newer_databases_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    HistoryStore(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.execute("PRAGMA user_version = 99")
    before = path.read_bytes()
    with pytest.raises(HistoryError, match=r"newer sdstudio \(schema 99"):
        HistoryStore(path)
    assert path.read_bytes() == before


def test_library_saves_then_records(tmp_path: Path) -> None:
    library = ImageLibrary.open(tmp_path / "db.sqlite3", tmp_path / "outputs")
    entry = library.save(result("a cat", 5))
    assert Path(entry.path).is_file() and entry.path.endswith("_5.png")
    assert Path(entry.path).parent.parent == tmp_path / "outputs"
    library.delete(entry.id)
    assert not Path(entry.path).exists() and library.store.count() == 0
    kept = library.save(result("a dog", 6))
    library.delete(kept.id, keep_file=True)
    assert Path(kept.path).exists()
    library.close()


def test_rebuild_restores_every_row_and_reports_unreadable_files(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    library = ImageLibrary.open(tmp_path / "db.sqlite3", outputs)
    saved = [library.save(result(f"picture {i}", i)) for i in range(6)]
    library.store.set_favorite(saved[0].id, True)
    library.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp_path / 'db.sqlite3'}{suffix}").unlink(missing_ok=True)
    (outputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    Image.new("RGB", (8, 8)).save(outputs / "no-settings.png")
    (outputs / ".partial.png.part").write_bytes(b"x")
    with HistoryStore(tmp_path / "db.sqlite3") as store:
        report = rebuild(store, [outputs])
        assert report.added == 6
        assert sorted(Path(p).name for p, _ in report.skipped) == ["broken.png", "no-settings.png"]
        rows = {e.path: e for e in store.page(limit=100)}
        assert set(rows) == {s.path for s in saved}
        for old in saved:
            assert rows[old.path].request_json == old.request_json
            assert rows[old.path].created == old.created
        again = rebuild(store, [outputs])
        assert (again.added, again.already) == (0, 6)


def test_corrupt_database_is_moved_aside_and_rebuilt(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    library = ImageLibrary.open(tmp_path / "db.sqlite3", outputs)
    for i in range(3):
        library.save(result(f"image {i}", i))
    library.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp_path / 'db.sqlite3'}{suffix}").unlink(missing_ok=True)
    (tmp_path / "db.sqlite3").write_bytes(b"this is not a database" * 100)
    notices: list[str] = []
    library = ImageLibrary.open(tmp_path / "db.sqlite3", outputs, on_notice=notices.append)
    assert library.store.count() == 3
    assert len(notices) == 1 and "rebuilt from the images: 3 images restored" in notices[0]
    assert len(list(tmp_path.glob("db.sqlite3.corrupt-*"))) == 1
    library.close()


def test_stale_partial_files_are_removed(tmp_path: Path) -> None:
    import os
    import time

    hour_ago = time.time() - 3600
    day = tmp_path / "2026-01-01"
    day.mkdir()
    old = day / ".20260101-101010-123_5.png.k2_x9q0z.part"
    fresh = day / ".20260101-101011-456_6.png.a1b2c3d4.part"
    data = tmp_path / "data"
    data.mkdir()
    old_settings = data / ".settings.json.0abc_def.part"
    others = [
        tmp_path / ".foo.part",  # another program's, in the outputs folder itself
        day / ".foo.part",
        day / ".download.iso.part",
        day / ".notes.txt.ABCDEFGH.part",  # mkstemp never uses capitals
        tmp_path / "keep" / "deep" / ".x.png.abcdefgh.part",  # not a folder sdstudio writes
        tmp_path / "2026-01-02" / "sub" / ".x.png.abcdefgh.part",
    ]
    for path in [old, fresh, old_settings, *others]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        if path is not fresh:
            os.utime(path, (hour_ago, hour_ago))
    assert remove_stale_partial_files(tmp_path, [data]) == 2
    assert not old.exists() and not old_settings.exists()
    assert fresh.exists() and all(path.exists() for path in others)


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from sdstudio.engine.history import HistoryStore
        from sdstudio.engine.metadata import ImageRecord
        from sdstudio.engine.request import GenerationRequest
        name = sys.argv[1]
        store = HistoryStore(Path({str(tmp_path / "shared.sqlite3")!r}))
        for i in range(150):
            request = GenerationRequest(model="m", prompt=f"{{name}} {{i}}", seed=i)
            store.add(Path({str(tmp_path)!r}) / f"{{name}}-{{i}}.png", ImageRecord(request=request))
        store.close()
    """)
    writers = [subprocess.Popen([sys.executable, "-c", script, name]) for name in ("app", "cli")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    with HistoryStore(tmp_path / "shared.sqlite3") as store:
        assert store.count() == 300
        assert store.count(HistoryQuery(search="app")) == 150
        assert store.integrity_check() == "ok"


SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def test_hub_snapshots_are_recorded_by_repository_id(store: HistoryStore, tmp_path: Path) -> None:
    cached = record("a fox", 1).request.replace(
        model=f"/cache/models--org--tiny-sd/snapshots/{SNAPSHOT}"
    )
    old_style = ImageRecord(request=cached, model_name=SNAPSHOT)
    assert store.get(store.add(tmp_path / "fox.png", old_style)).model_name == "org/tiny-sd"
    named = ImageRecord(request=cached.replace(model="org/tiny-sd"), model_name="org/tiny-sd")
    assert store.get(store.add(tmp_path / "fox2.png", named)).model_name == "org/tiny-sd"
    plain = store.add(tmp_path / "cat.png", record("a cat", 2, model="dreamy"))
    assert store.get(plain).model_name == "dreamy"


def test_old_rows_naming_a_snapshot_hash_are_migrated(tmp_path: Path) -> None:
    from sdstudio.engine.history import schema

    path = tmp_path / "history.sqlite3"
    with sqlite3.connect(path) as db:
        for statement in schema._statements(schema.MIGRATIONS[0]):
            db.execute(statement)
        db.execute("PRAGMA user_version = 1")
        rows = [
            (f"/cache/models--org--tiny-sd/snapshots/{SNAPSHOT}", SNAPSHOT),
            (rf"C:\hf\models--org--win\snapshots\{SNAPSHOT}", SNAPSHOT),
            ("/models/" + SNAPSHOT, SNAPSHOT),  # a folder that merely has such a name
            ("/models/dreamy", "dreamy"),
        ]
        for index, (model, name) in enumerate(rows):
            request = record("a fox", index).request.replace(model=model)
            db.execute(
                "INSERT INTO images (path, created, created_ts, prompt, negative_prompt, "
                "model_name, model_hash, seed, width, height, mode, sampler, duration_s, "
                "source, request_json, record_json) VALUES (?, '', 0, 'a fox', '', ?, '', "
                "?, 64, 64, 'txt2img', 'Euler', 0, 'sdstudio', ?, '{}')",
                (f"/out/{index}.png", name, index, request.to_json()),
            )
    with HistoryStore(path) as store:
        names = [e.model_name for e in sorted(store.page(), key=lambda e: e.seed)]
        assert names == ["org/tiny-sd", "org/win", SNAPSHOT, "dreamy"]
        assert [e.seed for e in store.page(HistoryQuery(model="org/tiny-sd"))] == [0]
