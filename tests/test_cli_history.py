"""sdstudio-cli history, rerun by id, settings, and surviving a kill at any moment."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.cli import main
from sdstudio.engine.history import HistoryStore
from sdstudio.engine.metadata import ImageRecord
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.refine.hires_settings import HiresFix
from sdstudio.engine.request import GenerationRequest, Mode


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_json(capsys, *args: str):
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, (out, err)
    return json.loads(out)


def events(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.fixture
def generated(capsys, tiny_model: Path) -> list[dict]:
    """Three images from one batch and one more, all recorded."""
    code, out, _ = cli(
        capsys,
        "generate",
        "--model",
        str(tiny_model),
        "--prompt",
        "a lighthouse on a cliff",
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--batch",
        "3",
        "--seed",
        "10",
        "--json",
    )
    assert code == 0
    code, more, _ = cli(
        capsys,
        "generate",
        "--model",
        str(tiny_model),
        "--prompt",
        "a red boat",
        "--negative",
        "fog",
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--seed",
        "99",
        "--json",
    )
    assert code == 0
    return [e for e in events(out) + events(more) if e["event"] == "image"]


def pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_generated_images_are_listed_and_searchable(capsys, generated, sdstudio_home) -> None:
    listing = cli_json(capsys, "history", "list")
    assert listing["total"] == 4
    assert [e["seed"] for e in listing["entries"]] == [99, 12, 11, 10]
    assert listing["entries"][0]["prompt"] == "a red boat"
    assert {e["id"] for e in generated} == {e["id"] for e in listing["entries"]}
    for entry in listing["entries"]:
        assert Path(entry["path"]).is_relative_to(sdstudio_home / "outputs")
    found = cli_json(capsys, "history", "list", "--search", "lighthouse")
    assert [e["seed"] for e in found["entries"]] == [12, 11, 10]
    assert cli_json(capsys, "history", "list", "--search", "fog")["total"] == 1
    assert cli_json(capsys, "history", "list", "--model", "tiny-sd", "--limit", "2")["total"] == 4
    code, out, _ = cli(capsys, "history", "list", "--search", "boat")
    assert code == 0 and "seed 99" in out and "a red boat" in out


def test_show_favorite_and_delete(capsys, generated) -> None:
    first = generated[0]
    shown = cli_json(capsys, "history", "show", str(first["id"]))
    assert shown["seed"] == 10 and shown["request"]["prompt"] == "a lighthouse on a cliff"
    cli_json(capsys, "history", "favorite", str(first["id"]))
    favourites = cli_json(capsys, "history", "list", "--favorites")
    assert [e["id"] for e in favourites["entries"]] == [first["id"]]
    cli(capsys, "history", "favorite", str(first["id"]), "--off")
    assert cli_json(capsys, "history", "list", "--favorites")["total"] == 0

    cli_json(capsys, "history", "delete", str(first["id"]), "--keep-file")
    assert Path(first["path"]).exists()
    second = generated[1]
    cli_json(capsys, "history", "delete", str(second["id"]))
    assert not Path(second["path"]).exists()
    assert cli_json(capsys, "history", "list")["total"] == 2
    code, _out, err = cli(capsys, "history", "show", str(second["id"]))
    assert code == 1 and f"No image with id {second['id']}" in err


def test_show_in_words_gives_every_setting_of_the_request(capsys, tmp_path) -> None:
    request = GenerationRequest(
        model="/models/dreamy-v2.safetensors",
        prompt="a lighthouse at dusk",
        negative_prompt="blurry, low detail",
        mode=Mode.INPAINT,
        sampler="Euler a",
        schedule="Exponential",
        steps=33,
        guidance_scale=6.5,
        seed=4242,
        width=576,
        height=704,
        batch_size=3,
        init_image="/inputs/ab12cd.png",
        mask="/inputs/ef34ab.png",
        strength=0.55,
        clip_skip=2,
        vae="/vaes/kl-f8-anime.safetensors",
        text_encoders=("clip_l.safetensors", "t5xxl_fp16.safetensors"),
        hires=HiresFix(scale=1.5, upscaler="Lanczos", steps=12, denoise=0.45),
    )
    record = ImageRecord(
        request=request,
        model_name="dreamy-v2",
        model_hash="9f8e7d6c5b",
        device="cuda",
        duration_s=4.25,
        created="2026-03-04T05:06:07",
        extra={"loras": [{"name": "ink", "weight": 0.8, "hash": "aa11bb22"}]},
    )
    image = tmp_path / "lighthouse.png"
    with HistoryStore(AppPaths.default().history_db) as store:
        entry_id = store.add(image, record)
        store.set_favorite(entry_id, True)

    code, out, err = cli(capsys, "history", "show", str(entry_id))
    assert code == 0, err
    shown = dict(line.strip().split(": ", 1) for line in out.splitlines() if ": " in line)
    for field in dataclasses.fields(GenerationRequest):
        value = getattr(request, field.name)
        if isinstance(value, Mode):
            value = value.value
        text = f"{value:g}" if isinstance(value, float) else str(value)
        if isinstance(value, bool):
            text = "yes" if value else "no"
        if field.name == "seed_resize_from":
            text = "off"
        elif isinstance(value, tuple):
            text = ", ".join(value) if value else "none"
        if isinstance(value, HiresFix):
            text = "upscale 1.5 with Lanczos, 12 steps, denoising 0.45"
        if value is None:  # a part the request does not have
            text = "none"
        assert any(v.strip() == text for v in shown.values()), (field.name, text, out)
    assert shown["Steps"].strip() == "33"
    assert shown["CFG scale"].strip() == "6.5"
    assert shown["Schedule"].strip() == "Exponential"
    assert shown["Strength"].strip() == "0.55"
    assert shown["Init image"].strip() == "/inputs/ab12cd.png"
    assert shown["Mask"].strip() == "/inputs/ef34ab.png"
    settings = out.split("\nSettings\n", 1)[1].splitlines()
    assert len(settings) == len(dataclasses.fields(GenerationRequest))  # one line a field
    assert shown["File"].strip() == str(image.resolve())
    assert shown["Created"].strip() == "2026-03-04T05:06:07"
    assert shown["Model hash"].strip() == "9f8e7d6c5b"
    assert shown["Favourite"].strip() == "yes"
    assert "ink (weight 0.8, hash aa11bb22)" in shown["LoRAs"]


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_output_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path) -> None:
    request = GenerationRequest(model="dreamy", prompt="a quiet harbour " * 20, seed=1)
    with HistoryStore(AppPaths.default().history_db) as store:
        store.add_many(
            (tmp_path / f"{i:05d}.png", ImageRecord(request=request.replace(seed=i)), "sdstudio")
            for i in range(600)
        )
    command = [sys.executable, "-m", "sdstudio.cli", "history", "list", "--json", "--limit", "600"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with subprocess.Popen(command, **pipes, env=dict(os.environ)) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().strip() == b"{"  # far more than a pipe holds follows
        process.stdout.close()  # as `| head -1` does
        err = process.stderr.read().decode()
        assert process.wait(timeout=60) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert err == ""


def test_a_broken_pipe_elsewhere_is_still_reported(capsys, monkeypatch) -> None:
    from sdstudio.cli import history

    def broken(*args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(history, "run", broken)
    code, _out, err = cli(capsys, "history", "list")
    assert code == 1 and "unexpected failure: a connection was closed" in err


def test_rerun_by_history_id_reproduces_the_pixels(capsys, generated, tmp_path) -> None:
    entry = generated[1]
    code, out, _ = cli(capsys, "rerun", str(entry["id"]), "--out", str(tmp_path), "--json")
    assert code == 0
    [again] = [e for e in events(out) if e["event"] == "image"]
    assert again["seed"] == 11
    assert np.array_equal(pixels(again["path"]), pixels(entry["path"]))
    assert cli_json(capsys, "history", "list")["total"] == 5  # re-runs are recorded too


def test_export_images_with_json_and_csv(capsys, generated, tmp_path) -> None:
    ids = [str(e["id"]) for e in generated[:2]]
    cli_json(capsys, "history", "export", *ids, "--to", str(tmp_path / "json"))
    data = json.loads((tmp_path / "json" / "settings.json").read_text())
    assert [row["seed"] for row in data] == [10, 11]
    assert all((tmp_path / "json" / Path(row["path"]).name).is_file() for row in data)
    cli_json(capsys, "history", "export", *ids, "--to", str(tmp_path / "csv"), "--format", "csv")
    with (tmp_path / "csv" / "settings.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["seed"] for row in rows] == ["10", "11"]
    assert json.loads(rows[0]["request"])["prompt"] == "a lighthouse on a cliff"


def test_rebuild_after_the_database_is_deleted(capsys, generated) -> None:
    paths = AppPaths.default()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{paths.history_db}{suffix}").unlink(missing_ok=True)
    code, out, _ = cli(capsys, "history", "rebuild", "--json")
    assert code == 0
    notice, *_, done = events(out)
    assert "missing or empty" in notice["message"] and "4 images restored" in notice["message"]
    assert done == {"event": "done", "added": 0, "already": 4, "skipped": 0}
    listing = cli_json(capsys, "history", "list")
    assert sorted(e["seed"] for e in listing["entries"]) == [10, 11, 12, 99]
    assert sorted(e["path"] for e in listing["entries"]) == sorted(e["path"] for e in generated)


def test_rebuild_reports_unreadable_files(capsys, tmp_path) -> None:
    (tmp_path / "junk.png").write_text("not an image")
    code, out, _ = cli(capsys, "history", "rebuild", str(tmp_path), "--json")
    assert code == 0
    skipped = [e for e in events(out) if e["event"] == "skipped"]
    assert len(skipped) == 1 and "not an image" in skipped[0]["reason"]
    code, _, err = cli(capsys, "history", "rebuild", str(tmp_path / "nowhere"))
    assert code == 1 and "does not exist" in err


def test_outputs_folder_setting(capsys, tiny_model, tmp_path) -> None:
    chosen = tmp_path / "My Pictures"
    assert cli_json(capsys, "settings", "outputs_dir", str(chosen)) == {"outputs_dir": str(chosen)}
    code, out, _ = cli(
        capsys,
        "generate",
        "--model",
        str(tiny_model),
        "--prompt",
        "x",
        "--steps",
        "1",
        "--width",
        "64",
        "--height",
        "64",
        "--json",
    )
    [image] = [e for e in events(out) if e["event"] == "image"]
    assert Path(image["path"]).parent.parent == chosen
    code, _, err = cli(capsys, "settings", "device", "tpu")
    assert code == 2 or "device must be one of" in err


def _generate_process(model: Path, home: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "sdstudio.cli",
        "generate",
        "--model",
        str(model),
        "--prompt",
        "killed while working",
        "--steps",
        "3",
        "--width",
        "64",
        "--height",
        "64",
        "--batch",
        "40",
        "--seed",
        "1",
        "--json",
    ]
    env = {**os.environ, "SDSTUDIO_HOME": str(home)}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
    )


def _kill_after(process: subprocess.Popen, *, images: int, steps_after: int) -> None:
    seen_images = 0
    steps = 0
    assert process.stdout is not None
    for line in process.stdout:
        event = json.loads(line)
        if event["event"] == "image":
            seen_images += 1
        elif event["event"] == "step" and seen_images >= images:
            steps += 1
        if seen_images >= images and steps >= steps_after:
            break
    _kill(process)


def _kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.stdout is not None
    process.stdout.close()


@pytest.mark.slow
def test_sigkill_at_any_moment_loses_nothing(tiny_model: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    moments = [(1, 1), (2, 3), (3, 0), (4, 2), (5, 0)]
    for images, steps in moments:
        _kill_after(_generate_process(tiny_model, home), images=images, steps_after=steps)
    process = _generate_process(tiny_model, home)  # and once at an arbitrary time
    time.sleep(9)
    _kill(process)

    paths = AppPaths.under(home)
    with sqlite3.connect(paths.history_db) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with HistoryStore(paths.history_db) as store:
        rows = store.page(limit=1000)
        assert len(rows) >= sum(images for images, _ in moments)
        for row in rows:
            assert Path(row.path).is_file()
    for image in paths.outputs_dir.rglob("*.png"):
        with Image.open(image) as opened:
            opened.load()  # a partial PNG would fail here
            assert "sdstudio" in opened.text
