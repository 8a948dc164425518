"""Downloading from a fake Hugging Face Hub on 127.0.0.1: progress, cancel, resume, errors."""

from __future__ import annotations

import argparse
import io
import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fake_hub import CODE_FILES, COMMIT, REPO, resolves

from sdstudio.engine.errors import ModelError, StorageError
from sdstudio.engine.models import download
from sdstudio.engine.models.download import DownloadCancelled, choose_files, download_model


def test_choose_files_prefers_fp16_safetensors_and_leaves_out_pickles() -> None:
    sizes = dict.fromkeys(
        [
            "model_index.json",
            "README.md",
            "sd_turbo.safetensors",
            "scheduler/scheduler_config.json",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "text_encoder/config.json",
            "text_encoder/model.safetensors",
            "text_encoder/model.fp16.safetensors",
            "text_encoder/pytorch_model.bin",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.non_ema.safetensors",
            "unet/diffusion_pytorch_model.bin",
            "vae/config.json",
            "vae/diffusion_pytorch_model.bin",
            "vae/diffusion_pytorch_model.ckpt",
        ],
        1,
    )
    chosen = choose_files(sizes)
    assert chosen[-1] == "model_index.json"
    assert set(chosen) == {
        "model_index.json",
        "scheduler/scheduler_config.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "text_encoder/config.json",
        "text_encoder/model.fp16.safetensors",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.bin",
    }
    sharded = choose_files(
        dict.fromkeys(
            [
                "model_index.json",
                "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
                "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
                "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
                "unet/diffusion_pytorch_model.safetensors",
            ],
            1,
        )
    )
    assert "unet/diffusion_pytorch_model.safetensors" not in sharded
    assert "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors" in sharded
    with pytest.raises(ModelError, match="not a diffusers model"):
        choose_files({"model.safetensors": 1})


def test_download_reports_progress_to_total_and_fetches_only_needed_files(
    hub: Any, cache: Path, repo_files: dict[str, bytes]
) -> None:
    seen: list[tuple[int, int]] = []
    snapshot = download_model(
        REPO, endpoint=hub.endpoint, progress=lambda d, t: seen.append((d, t))
    )
    assert snapshot == cache / "models--org--tiny-turbo" / "snapshots" / COMMIT
    assert (cache / "models--org--tiny-turbo" / "refs" / "main").read_text() == COMMIT
    wanted = {n for n in repo_files if "/" in n and not n.endswith(".bin")} - CODE_FILES.keys()
    wanted.add("model_index.json")
    fetched = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}
    assert fetched == wanted
    for name in wanted:
        assert (snapshot / name).read_bytes() == repo_files[name]
    total = sum(len(repo_files[n]) for n in wanted)
    assert seen[-1] == (total, total)
    assert all(t == total for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert all(".bin" not in r[1] and "README" not in r[1] for r in hub.requests)
    assert not [r for r in hub.requests if any(name in r[1] for name in CODE_FILES)]
    assert all(COMMIT in r[1] for r in resolves(hub)), "every file comes from the listed commit"


def test_downloaded_model_is_listed_by_the_catalog(hub: Any, cache: Path) -> None:
    from sdstudio.engine.models.catalog import scan_hf_cache

    snapshot = download_model(REPO, endpoint=hub.endpoint)
    entries = scan_hf_cache(cache).entries
    assert [(e.name, e.path, e.format, e.source) for e in entries] == [
        (REPO, str(snapshot), "diffusers", "huggingface")
    ]
    assert entries[0].few_step


def test_cancel_stops_and_leaves_no_usable_snapshot_then_resumes(
    hub: Any, cache: Path, repo_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from sdstudio.engine.models.catalog import scan_hf_cache

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    cancel = threading.Event()
    big = "unet/diffusion_pytorch_model.safetensors"
    before = sum(len(d) for n, d in repo_files.items() if n.startswith(("scheduler", "text_enc")))

    def stop_in_the_unet(done: int, total: int) -> None:
        if done > before + 1_000_000:
            cancel.set()

    with pytest.raises(DownloadCancelled):
        download_model(REPO, endpoint=hub.endpoint, progress=stop_in_the_unet, cancel=cancel)
    repo = cache / "models--org--tiny-turbo"
    snapshot = repo / "snapshots" / COMMIT
    assert not (snapshot / "model_index.json").exists()
    assert not (snapshot / big).exists()
    assert scan_hf_cache(cache).entries == []
    done_before = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}
    assert "text_encoder/model.safetensors" in done_before
    (partial,) = repo.glob("blobs/*.sdstudio-partial")
    kept = partial.stat().st_size
    assert 500_000 < kept < len(repo_files[big])

    hub.requests.clear()
    seen: list[tuple[int, int]] = []
    download_model(REPO, endpoint=hub.endpoint, progress=lambda d, t: seen.append((d, t)))
    gets = {r[1].split(f"/resolve/{COMMIT}/")[1]: r[2] for r in resolves(hub)}
    assert not gets.keys() & done_before, "files completed before the cancel are not fetched again"
    assert gets[big] == f"bytes={kept}-", "the partial file is continued with a Range request"
    assert (snapshot / big).read_bytes() == repo_files[big]
    assert (snapshot / "model_index.json").is_file()
    assert not list(repo.glob("blobs/*.sdstudio-partial"))
    assert seen[-1][0] == seen[-1][1]
    complete = sum(len(repo_files[name]) for name in done_before)
    assert seen[0][0] == complete, "progress starts from what is already on disk"
    assert seen[1][0] == complete + kept
    assert [e.name for e in scan_hf_cache(cache).entries] == [REPO]


@pytest.mark.slow
def test_dropped_connection_resumes_with_a_range_request(
    hub: Any, cache: Path, repo_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    # huggingface_hub resumes from the last whole chunk it wrote (10 MB by default).
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    big = "unet/diffusion_pytorch_model.safetensors"
    hub.drop_once.add(big)
    seen: list[tuple[int, int]] = []
    snapshot = download_model(
        REPO, endpoint=hub.endpoint, progress=lambda d, t: seen.append((d, t))
    )
    ranged = [r for r in resolves(hub) if big in r[1] and r[2]]
    assert len(ranged) == 1
    start = int(ranged[0][2].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= len(repo_files[big]) // 2
    assert (snapshot / big).read_bytes() == repo_files[big]
    assert seen[-1][0] == seen[-1][1]


def test_too_little_disk_space_is_reported_before_any_file_request(
    hub: Any, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        download.shutil, "disk_usage", lambda _p: SimpleNamespace(total=10, used=10, free=1000)
    )
    with pytest.raises(StorageError, match="Not enough disk space"):
        download_model(REPO, endpoint=hub.endpoint)
    assert resolves(hub) == []


def test_unknown_gated_and_offline_give_clear_errors(hub: Any, cache: Path) -> None:
    with pytest.raises(ModelError, match="was not found"):
        download_model("org/missing", endpoint=hub.endpoint)
    hub.gated = True
    with pytest.raises(ModelError, match="is gated"):
        download_model(REPO, endpoint=hub.endpoint)
    with pytest.raises(ModelError, match="Cannot reach the Hugging Face Hub"):
        download_model(REPO, endpoint="http://127.0.0.1:9")


def test_offline_mode_is_reported(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="offline mode"):
        download_model(REPO, endpoint="http://127.0.0.1:9")


def test_cli_download_prints_json_progress(hub: Any, cache: Path) -> None:
    from sdstudio.cli import models
    from sdstudio.cli.report import Reporter
    from sdstudio.engine.paths import AppPaths
    from sdstudio.engine.settings import Settings

    parser = argparse.ArgumentParser()
    models.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "download", REPO, "--json", "--endpoint", hub.endpoint])
    out = io.StringIO()
    context = SimpleNamespace(
        paths=AppPaths.default(), settings=Settings(), reporter=Reporter(True, out, io.StringIO())
    )
    assert models.run(args, context) == 0
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and progress[-1]["done"] == progress[-1]["total"] > 0
    assert events[-1]["event"] == "done"
    assert events[-1]["path"].endswith(COMMIT)


def test_cli_ctrl_c_cancels_the_download(
    hub: Any, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import _thread

    from huggingface_hub import constants

    from sdstudio.cli import models
    from sdstudio.cli.report import Reporter
    from sdstudio.engine.paths import AppPaths
    from sdstudio.engine.settings import Settings

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    parser = argparse.ArgumentParser()
    models.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "download", REPO, "--json", "--endpoint", hub.endpoint])
    out = io.StringIO()
    cancel = threading.Event()

    class Interrupting(Reporter):
        pressed = False

        def event(self, kind: str, text: str | None = None, **fields: Any) -> None:
            super().event(kind, text, **fields)
            if kind == "progress" and fields["done"] > 1_000_000 and not self.pressed:
                self.pressed = True
                _thread.interrupt_main()  # Ctrl+C, delivered to the main thread
                # The download thread goes on until the main thread has handled it,
                # however long a busy machine takes to get there.
                assert cancel.wait(60), "Ctrl+C was not handled"

    context = SimpleNamespace(
        paths=AppPaths.default(),
        settings=Settings(),
        reporter=Interrupting(True, out, out),
        cancel=cancel,
    )
    assert models.run(args, context) == models.EXIT_CANCELLED
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events[-1] == "cancelled"
    assert not (
        cache / "models--org--tiny-turbo" / "snapshots" / COMMIT / "model_index.json"
    ).exists()
