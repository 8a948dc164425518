"""The queue kept between runs: saved whole, read back, and damaged files set aside."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdstudio.engine.errors import StorageError
from sdstudio.engine.queue_file import (
    MAX_QUEUE_FILE_BYTES,
    QUEUE_FILE_VERSION,
    discard_queue,
    load_queue,
    save_queue,
)
from sdstudio.engine.request import GenerationRequest, Mode


def requests() -> list[GenerationRequest]:
    return [
        GenerationRequest(model="m", prompt="a lighthouse", steps=4, width=64, height=64, seed=3),
        GenerationRequest(
            model="m",
            prompt="a castle, ünïcode",
            mode=Mode.INPAINT,
            init_image="/data/inputs/a.png",
            mask="/data/inputs/b.png",
            strength=0.5,
            batch_size=2,
            mask_blur=8,
        ),
    ]


def test_saved_requests_read_back_equal_and_in_order(tmp_path: Path) -> None:
    file = tmp_path / "data" / "queue.json"
    save_queue(file, requests())
    saved = load_queue(file)
    assert saved.requests == tuple(requests())
    assert (saved.skipped, saved.problem) == (0, "")
    assert json.loads(file.read_text("utf-8"))["version"] == QUEUE_FILE_VERSION
    assert [p.name for p in file.parent.iterdir()] == ["queue.json"]  # no temporary left


def test_an_empty_queue_removes_the_file_and_no_file_is_an_empty_queue(tmp_path: Path) -> None:
    file = tmp_path / "queue.json"
    save_queue(file, requests())
    save_queue(file, [])
    assert not file.exists()
    assert load_queue(file).requests == ()
    discard_queue(file)  # already gone: fine


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
        (b'{"version": 1, "jobs": [' + b"9" * 5000 + b"]}", "too many digits"),
        (b'{"version": 1, "jobs": {"a": 1}}', "does not hold a list of jobs"),
        (b'["a list"]', "does not hold a list of jobs"),
        (b'{"jobs": []}', "no version number"),
        (b'{"version": true, "jobs": []}', "no version number"),
        (b'{"version": 99, "jobs": []}', "newer sdstudio"),
    ],
)
def test_a_damaged_file_is_set_aside_with_a_clear_message(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    file = tmp_path / "queue.json"
    file.write_bytes(content)
    saved = load_queue(file)
    assert saved.requests == ()
    assert reason in saved.problem
    assert "set aside as queue.json.bad" in saved.problem
    assert not file.exists()
    assert (tmp_path / "queue.json.bad").read_bytes() == content
    assert load_queue(file).problem == ""  # not reported again


def test_a_huge_file_is_not_read(tmp_path: Path) -> None:
    file = tmp_path / "queue.json"
    file.write_bytes(b" " * (MAX_QUEUE_FILE_BYTES + 1))
    saved = load_queue(file)
    assert "larger than" in saved.problem and saved.requests == ()


def test_a_folder_in_place_of_the_file_is_reported(tmp_path: Path) -> None:
    file = tmp_path / "queue.json"
    file.mkdir()
    saved = load_queue(file)
    assert "could not be read" in saved.problem and saved.requests == ()


def test_jobs_that_do_not_read_are_left_out_and_counted(tmp_path: Path) -> None:
    good = requests()[0].to_dict()
    jobs = [
        good,
        {**good, "steps": 100_000},
        "not a job",
        {**good, "schema": 99},
        {**good, "mode": ["x"]},
        {**good, "prompt": "second good one"},
    ]
    file = tmp_path / "queue.json"
    file.write_text(json.dumps({"version": 1, "jobs": jobs}), "utf-8")
    saved = load_queue(file)
    assert [r.prompt for r in saved.requests] == ["a lighthouse", "second good one"]
    assert saved.skipped == 4
    assert saved.problem.startswith("4 of the 6 jobs kept from last time could not be read")
    assert "Steps must be between" in saved.problem
    assert file.exists()  # the file itself was fine


def test_a_queue_that_cannot_be_written_raises_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(StorageError):
        save_queue(blocker / "queue.json", requests())
