"""Rebuilding the history from odd files: one bad image is reported, links stay links."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.engine.generation import GeneratedImage
from sdstudio.engine.history import HistoryError, HistoryStore, HistoryUnavailable
from sdstudio.engine.history import library as library_module
from sdstudio.engine.history.library import ImageLibrary, rebuild
from sdstudio.engine.metadata import RECORD_KEY, ImageRecord, read_image_settings
from sdstudio.engine.request import GenerationRequest


def record(prompt: str, seed: int) -> ImageRecord:
    request = GenerationRequest(model="/m/dreamy", prompt=prompt, seed=seed, width=64, height=64)
    return ImageRecord(request=request, model_name="dreamy", created=f"2026-01-01T00:00:{seed:02d}")


def save_images(outputs: Path, count: int) -> list[Path]:
    """``count`` images with settings, written the way the app writes them."""
    library = ImageLibrary.open(outputs.parent / "seed.sqlite3", outputs)
    paths = [
        Path(library.save(GeneratedImage(Image.new("RGB", (8, 8)), record(f"good {i}", i))).path)
        for i in range(count)
    ]
    library.close()
    return paths


def write_lone_surrogate_image(path: Path) -> None:
    """A PNG whose sdstudio record is JSON holding ``\\ud800`` (valid JSON, not valid UTF-8)."""
    text = record("MARK", 50).to_json().replace('"MARK"', '"bad \\ud800 text"')
    assert "\\ud800" in text
    info = PngInfo()
    info.add_text(RECORD_KEY, text)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)


def test_an_image_with_a_lone_surrogate_does_not_stop_the_rebuild(tmp_path) -> None:
    outputs = tmp_path / "outputs"
    good = save_images(outputs, 3)
    write_lone_surrogate_image(outputs / "2026-01-01" / "odd.png")
    with HistoryStore(tmp_path / "db.sqlite3") as store:
        report = rebuild(store, [outputs])
        recorded = {Path(path).name for path in store.paths()}
    assert {path.name for path in good} <= recorded
    odd_reported = [path for path, _reason in report.skipped if path.endswith("odd.png")]
    assert ("odd.png" in recorded) != bool(odd_reported)  # either stored (cleaned) or reported
    assert report.added == len(recorded) == 3 + ("odd.png" in recorded)


def test_a_record_that_cannot_be_stored_is_skipped_and_reported(tmp_path, monkeypatch) -> None:
    outputs = tmp_path / "outputs"
    good = save_images(outputs, 3)
    odd = outputs / "2026-01-01" / "odd.png"
    write_lone_surrogate_image(odd)
    read = read_image_settings

    def unsanitised(path: Path):  # what a reader that kept the surrogate would give
        settings = read(path)
        if Path(path).name != "odd.png":
            return settings
        request = settings.request.replace(prompt="bad \ud800 text")
        return type(settings)(request=request, source=settings.source)

    monkeypatch.setattr(library_module, "read_image_settings", unsanitised)
    notices: list[str] = []
    library = ImageLibrary.open(tmp_path / "db.sqlite3", outputs, on_notice=notices.append)
    try:
        assert sorted(Path(p).name for p in library.store.paths()) == sorted(p.name for p in good)
        report = rebuild(library.store, [outputs])
    finally:
        library.close()
    assert report.added == 0 and report.already == 3
    assert [(Path(p).name, "UnicodeEncodeError" in r) for p, r in report.skipped] == [
        ("odd.png", True)
    ]
    assert "3 images restored, 1 could not be read" in notices[0]


def test_add_many_keeps_the_good_rows(tmp_path) -> None:
    huge_seed = record("seed out of range", 5)
    object.__setattr__(huge_seed.request, "seed", 2**70)  # as a faulty reader might leave it
    rows = [
        (tmp_path / "a.png", record("first", 1), "sdstudio"),
        (tmp_path / "b.png", record("bad \ud800", 2), "sdstudio"),
        (tmp_path / "c.png", record("third", 3), "sdstudio"),
        (tmp_path / "d\udcff.png", record("odd file name", 4), "sdstudio"),
        (tmp_path / "e.png", huge_seed, "sdstudio"),
    ]
    skipped: list[tuple[Path, str]] = []
    with HistoryStore(tmp_path / "db.sqlite3") as store:
        assert store.add_many(rows, lambda path, reason: skipped.append((path, reason))) == 2
        assert sorted(e.prompt for e in store.page()) == ["first", "third"]
        assert store.integrity_check() == "ok"
        with pytest.raises(HistoryError, match="could not be recorded"):
            store.add(tmp_path / "f.png", record("bad \ud800", 6))
    assert [(path.name, reason.split(":")[0]) for path, reason in skipped] == [
        ("b.png", "UnicodeEncodeError"),
        ("d\udcff.png", "UnicodeEncodeError"),
        ("e.png", "OverflowError"),
    ]


def test_recovery_at_start_never_raises(tmp_path, monkeypatch) -> None:
    outputs = tmp_path / "outputs"
    save_images(outputs, 2)

    def disk_full(*args, **kwargs):
        raise HistoryUnavailable("The disk holding the history database is full.")

    monkeypatch.setattr(HistoryStore, "add_many", disk_full)
    notices: list[str] = []
    library = ImageLibrary.open(tmp_path / "db.sqlite3", outputs, on_notice=notices.append)
    library.close()
    assert len(notices) == 1 and "stopped early" in notices[0] and "is full" in notices[0]


def test_reading_errors_of_any_kind_are_reported_per_file(tmp_path, monkeypatch) -> None:
    outputs = tmp_path / "outputs"
    good = save_images(outputs, 3)
    read = read_image_settings
    failures = iter([RecursionError("too deep"), OverflowError("too big"), ValueError("odd")])

    def flaky(path: Path):
        if Path(path) == good[1]:
            raise next(failures)
        return read(path)

    monkeypatch.setattr(library_module, "read_image_settings", flaky)
    with HistoryStore(tmp_path / "db.sqlite3") as store:
        for expected in ("RecursionError", "OverflowError", "ValueError"):
            report = rebuild(store, [outputs])
            assert [reason.split(":")[0] for _path, reason in report.skipped] == [expected]
        assert store.count() == 2


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_deleting_a_linked_image_removes_only_the_link(tmp_path) -> None:
    outside = tmp_path / "elsewhere"
    [target] = save_images(outside, 1)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    link = outputs / "linked.png"
    link.symlink_to(target)
    with HistoryStore(tmp_path / "db.sqlite3") as store:
        report = rebuild(store, [outputs])
        assert report.added == 1
        [entry] = store.page()
        assert entry.path == str(link)  # the link's own path, not resolved
        library = ImageLibrary(store, library_module.OutputWriter(outputs))
        library.delete(entry.id)
    assert not os.path.lexists(link)
    assert target.is_file()


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_the_gallery_removes_a_link_not_what_it_points_to(tmp_path) -> None:
    pytest.importorskip("PySide6")
    from sdstudio.ui.gallery import discard_file

    target = tmp_path / "elsewhere" / "image.png"
    target.parent.mkdir()
    Image.new("RGB", (8, 8)).save(target)
    link = tmp_path / "outputs" / "image.png"
    link.parent.mkdir()
    link.symlink_to(target)
    assert "link" in discard_file(str(link))
    assert not os.path.lexists(link) and target.is_file()
    dangling = tmp_path / "outputs" / "dangling.png"
    dangling.symlink_to(tmp_path / "gone.png")
    discard_file(str(dangling))
    assert not os.path.lexists(dangling)


def test_grids_are_not_indexed_as_generations(tmp_path) -> None:
    """An X/Y/Z grid (sdstudio's ``grids``, A1111's ``txt2img-grids``) carries the first
    image's settings but is not a generation: a rebuild leaves it out."""
    outputs = tmp_path / "outputs"
    good = save_images(outputs, 2)
    for folder in ("grids", "txt2img-grids"):
        (outputs / folder).mkdir(parents=True)
        for path in good:
            (outputs / folder / path.name).write_bytes(path.read_bytes())
    with HistoryStore(tmp_path / "db.sqlite3") as store:
        report = rebuild(store, [outputs])
        recorded = sorted(Path(path).parent.name for path in store.paths())
    assert report.added == 2
    assert "grids" not in recorded and "txt2img-grids" not in recorded


def test_a_wildcard_image_is_found_by_the_prompt_it_resolved_to(tmp_path) -> None:
    """The history searches and shows what a wildcard template became for the image; the
    request (the template, which re-runs) is kept whole."""
    from sdstudio.engine.history.entry import HistoryQuery

    base = record("a __animal__ in the snow", 3)
    resolved = {"prompt": "a lynx in the snow", "negative_prompt": ""}
    wild = ImageRecord(request=base.request, model_name="dreamy", extra={"wildcards": resolved})
    with HistoryStore(tmp_path / "db.sqlite3") as store:
        entry_id = store.add(tmp_path / "lynx.png", wild)
        found = store.page(HistoryQuery(search="lynx"))
        entry = store.get(entry_id)
    assert [e.id for e in found] == [entry_id]
    assert entry.prompt == "a lynx in the snow"
    assert entry.request.prompt == "a __animal__ in the snow"
