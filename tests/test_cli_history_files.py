"""``sdstudio-cli history`` with files already in the way and numbers of any size: exports
never overwrite, huge ids and a lost search index give clear answers."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.cli import main
from sdstudio.engine.generation import GeneratedImage
from sdstudio.engine.history.library import ImageLibrary
from sdstudio.engine.metadata import RECORD_KEY, ImageRecord
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.request import GenerationRequest

HUGE = str(10**20)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def record(prompt: str, seed: int) -> ImageRecord:
    request = GenerationRequest(model="/m/dreamy", prompt=prompt, seed=seed, width=64, height=64)
    return ImageRecord(request=request, model_name="dreamy", created=f"2026-01-01T00:00:{seed:02d}")


@pytest.fixture
def saved() -> list[dict]:
    """Two images in the outputs folder and the history: id, path and bytes of each."""
    paths = AppPaths.default()
    library = ImageLibrary.open(paths.history_db, paths.outputs_dir)
    images = []
    for seed in (1, 2):
        entry = library.save(
            GeneratedImage(Image.new("RGB", (8, 8), (seed, 0, 0)), record("a cat", seed))
        )
        images.append({"id": entry.id, "path": Path(entry.path)})
    library.close()
    for image in images:
        image["bytes"] = image["path"].read_bytes()
    return images


def test_export_never_overwrites_and_numbers_new_names(capsys, saved, tmp_path) -> None:
    destination = tmp_path / "export"
    destination.mkdir()
    first_name = saved[0]["path"].name
    (destination / first_name).write_bytes(b"someone else's file")
    (destination / "settings.json").write_text("[]")
    ids = [str(image["id"]) for image in saved]
    code, out, err = cli(capsys, "history", "export", *ids, "--to", str(destination))
    assert code == 0, err
    assert (destination / first_name).read_bytes() == b"someone else's file"
    assert (destination / "settings.json").read_text() == "[]"
    stem = Path(first_name).stem
    copy = destination / f"{stem}-2.png"
    assert copy.read_bytes() == saved[0]["bytes"]
    written = out.splitlines()[:-1]
    assert written == [
        str(copy),
        str(destination / saved[1]["path"].name),
        str(destination / "settings-2.json"),
    ]
    data = json.loads((destination / "settings-2.json").read_text())
    assert [row["path"] for row in data] == written[:2]

    code, out, _ = cli(capsys, "history", "export", *ids, "--to", str(destination), "--json")
    assert code == 0
    done = json.loads(out)
    assert [Path(p).name for p in [*done["files"], done["settings"]]] == [
        f"{stem}-3.png",
        f"{saved[1]['path'].stem}-2.png",
        "settings-3.json",
    ]
    assert len(list(destination.iterdir())) == 8  # nothing was replaced

    code, _, _ = cli(
        capsys, "history", "export", ids[0], "--to", str(destination), "--format", "csv"
    )
    assert code == 0 and (destination / "settings.csv").is_file()
    code, _, _ = cli(
        capsys, "history", "export", ids[0], "--to", str(destination), "--format", "csv"
    )
    assert code == 0 and (destination / "settings-2.csv").is_file()


def test_export_into_the_images_own_folder_makes_a_numbered_copy(capsys, saved) -> None:
    image = saved[0]
    folder = image["path"].parent
    code, out, err = cli(capsys, "history", "export", str(image["id"]), "--to", str(folder))
    assert code == 0, err
    copy = folder / f"{image['path'].stem}-2.png"
    assert out.splitlines()[0] == str(copy)
    assert copy.read_bytes() == image["bytes"] == image["path"].read_bytes()


@pytest.mark.parametrize(
    "args",
    [
        ("show", HUGE),
        ("show", "-" + HUGE),
        ("favorite", HUGE),
        ("delete", HUGE),
        ("export", HUGE, "--to", "somewhere"),
    ],
)
def test_ids_too_large_for_sqlite_are_a_clear_error(capsys, saved, args) -> None:
    code, _out, err = cli(capsys, "history", *args)
    assert code == 1
    assert f"No image with id {args[1]} in the history." in err
    assert "unexpected" not in err


def test_huge_limits_and_offsets_list_what_there_is(capsys, saved) -> None:
    code, out, err = cli(capsys, "history", "list", "--limit", HUGE, "--json")
    assert code == 0, err
    listing = json.loads(out)
    assert listing["total"] == 2 and len(listing["entries"]) == 2
    code, out, err = cli(capsys, "history", "list", "--offset", HUGE, "--limit", HUGE)
    assert code == 0, err
    assert out.strip() == "No images match."


def test_a_dropped_search_index_is_rebuilt(capsys, saved) -> None:
    with sqlite3.connect(AppPaths.default().history_db) as db:
        db.execute("DROP TABLE images_text")
    db.close()
    code, out, err = cli(capsys, "history", "list", "--search", "cat", "--json")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines() if line.startswith('{"event"')]
    assert "search index" in events[0]["message"]
    assert json.loads(out[out.index("\n{\n") + 1 :])["total"] == 2


def test_rebuild_reports_an_odd_file_and_goes_on(capsys, saved, tmp_path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for image in saved:
        (folder / image["path"].name).write_bytes(image["bytes"])
    text = record("MARK", 9).to_json().replace('"MARK"', '"bad \\ud800 text"')
    info = PngInfo()
    info.add_text(RECORD_KEY, text)
    Image.new("RGB", (8, 8)).save(folder / "odd.png", pnginfo=info)
    (folder / "odd\udcff.png").write_bytes(saved[0]["bytes"])  # a name that is not UTF-8
    code, out, err = cli(capsys, "history", "rebuild", str(folder))
    assert code == 0, err
    assert "unexpected" not in err
    added = int(out.split(" images added")[0])
    assert added in (2, 3)  # the odd prompt stored cleaned, or reported below
    assert "odd\\udcff.png" in err
