"""Downloading from a fake Hugging Face Hub on 127.0.0.1: progress, cancel, resume, errors."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sdstudio.engine.errors import ModelError, StorageError
from sdstudio.engine.models import download
from sdstudio.engine.models.download import DownloadCancelled, choose_files, download_model

REPO = "org/tiny-turbo"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CODE_FILES = {
    "scheduler/evil.py": b"import os; os.system('touch /tmp/pwned')",
    "tokenizer/setup.sh": b"#!/bin/sh\ntouch /tmp/pwned",
    "feature_extractor/hook.pkl": b"\x80\x04pickle",
    "unet/custom_unet.py": b"import os",
}
"""Files in component folders that a download must never fetch."""


class FakeHub:
    """Serves one repo the way the Hub's model-info and resolve endpoints do."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[tuple[str, str, str | None]] = []
        self.drop_once: set[str] = set()
        self.gated = False
        self.lock = threading.Lock()
        self.sha = COMMIT
        self.etags: dict[str, tuple[str, str]] = {}
        """File name → (header, value) sent instead of the file's own digest."""

    def info(self) -> dict[str, Any]:
        siblings = [{"rfilename": n, "size": len(d)} for n, d in sorted(self.files.items())]
        return {"id": REPO, "modelId": REPO, "sha": self.sha, "siblings": siblings}

    def etag(self, name: str) -> tuple[str, str]:
        """As the Hub: LFS files by the SHA-256 of their bytes, the others by git's SHA-1."""
        if name in self.etags:
            return self.etags[name]
        data = self.files[name]
        if name.endswith((".safetensors", ".bin")):
            return "X-Linked-Etag", hashlib.sha256(data).hexdigest()
        return "ETag", hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: Any) -> None:
            pass

        def _error(self, status: int, code: str) -> None:
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _route(self, head: bool) -> None:
            with hub.lock:
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
            path = self.path.split("?")[0]
            if not path.startswith(f"/api/models/{REPO}/") and not path.startswith(f"/{REPO}/"):
                return self._error(404, "RepoNotFound")
            if hub.gated:
                return self._error(403, "GatedRepo")
            if path.startswith("/api/models/"):
                body = json.dumps(hub.info()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return None
            revision, _, name = path.split("/resolve/", 1)[1].partition("/")
            if revision not in ("main", hub.sha):
                return self._error(404, "RevisionNotFound")
            if name not in hub.files:
                return self._error(404, "EntryNotFound")
            return self._serve_file(name, head)

        def _serve_file(self, name: str, head: bool) -> None:
            data = hub.files[name]
            start = 0
            wanted = self.headers.get("Range")
            if wanted and not head:
                start = int(wanted.split("=")[1].split("-")[0])
            self.send_response(206 if start else 200)
            header, etag = hub.etag(name)
            self.send_header(header, f'"{etag}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if head:
                return
            if name in hub.drop_once and not start:
                hub.drop_once.discard(name)
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data[start:])

        def do_HEAD(self) -> None:
            self._route(head=True)

        def do_GET(self) -> None:
            self._route(head=False)

    return Handler


class QuietServer(ThreadingHTTPServer):
    """A server that does not print the resets of connections a test stops on purpose."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@pytest.fixture(scope="module")
def repo_files(tiny_model: Path) -> dict[str, bytes]:
    """The tiny model's files, plus files a download must leave out."""
    folder = tiny_model
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
             if p.is_file()}  # fmt: skip
    files["unet/diffusion_pytorch_model.bin"] = b"pickle" * 10
    files["tiny_turbo.safetensors"] = b"single file" * 10
    files["README.md"] = b"# tiny"
    files.update(CODE_FILES)
    return files


@pytest.fixture
def hub(repo_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A running fake hub; its ``endpoint`` is http://127.0.0.1:PORT."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    state = FakeHub(dict(repo_files))
    server = QuietServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.endpoint = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private Hugging Face cache."""
    folder = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    return folder


def _resolves(hub: Any) -> list[tuple[str, str, str | None]]:
    return [r for r in hub.requests if "/resolve/" in r[1] and r[0] == "GET"]


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
    assert all(COMMIT in r[1] for r in _resolves(hub)), "every file comes from the listed commit"


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
    gets = {r[1].split(f"/resolve/{COMMIT}/")[1]: r[2] for r in _resolves(hub)}
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
    ranged = [r for r in _resolves(hub) if big in r[1] and r[2]]
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
    assert _resolves(hub) == []


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


# A hostile server: every name it sends must stay a name inside the cache.


def _outside(tmp_path: Path, cache: Path) -> set[str]:
    """Everything under ``tmp_path`` but outside the cache (and the test's own home)."""
    return {
        p.relative_to(tmp_path).as_posix()
        for p in tmp_path.rglob("*")
        if cache not in (p, *p.parents) and p.name != "home"
    }


@pytest.mark.parametrize("header", ["ETag", "X-Linked-Etag"])
@pytest.mark.parametrize("target", ["../../../outside.desktop", "ABSOLUTE", "..", "0" * 63])
def test_an_etag_that_is_not_a_digest_is_refused_and_writes_nothing_outside(
    hub: Any, cache: Path, tmp_path: Path, header: str, target: str
) -> None:
    # blobs/../../../outside.desktop is tmp_path/outside.desktop.
    etag = str(tmp_path / "absolute.desktop") if target == "ABSOLUTE" else target
    hub.etags["scheduler/scheduler_config.json"] = (header, etag)
    with pytest.raises(ModelError) as caught:
        download_model(REPO, endpoint=hub.endpoint)
    message = str(caught.value)
    assert "scheduler/scheduler_config.json" in message and hub.endpoint in message
    assert "not a SHA-256 or git hash" in message and "\n" not in message
    assert _outside(tmp_path, cache) == set()
    assert not any(cache.rglob("*.desktop"))
    assert not any("scheduler_config" in r[1] for r in _resolves(hub))


def test_bytes_that_do_not_match_their_digest_are_deleted(
    hub: Any, cache: Path, repo_files: dict[str, bytes]
) -> None:
    name = "unet/config.json"
    other = hashlib.sha256(b"something else").hexdigest()
    hub.etags[name] = ("X-Linked-Etag", other)
    with pytest.raises(ModelError, match=f"{name} from {hub.endpoint} does not match its checksum"):
        download_model(REPO, endpoint=hub.endpoint)
    repo = cache / "models--org--tiny-turbo"
    assert not (repo / "blobs" / other).exists()
    assert not list(repo.glob("blobs/*.sdstudio-partial"))
    assert not (repo / "snapshots" / COMMIT / name).exists()
    del hub.etags[name]
    snapshot = download_model(REPO, endpoint=hub.endpoint)
    assert (snapshot / name).read_bytes() == repo_files[name]


@pytest.mark.parametrize(
    "listed",
    [
        "../outside/config.json",
        "unet/../../../outside.safetensors",
        "/tmp/outside/config.json",
        "tokenizer/..\\..\\..\\outside.json",
        "text_encoder\\..\\..\\outside.safetensors",
        "vae/C:outside.json",
        "vae//config.json",
    ],
)
def test_a_file_listing_with_unsafe_names_is_refused_before_any_download(
    hub: Any, cache: Path, tmp_path: Path, listed: str
) -> None:
    hub.files[listed] = b'{"_class_name": "x"}'
    with pytest.raises(ModelError, match="lists a file named") as caught:
        download_model(REPO, endpoint=hub.endpoint)
    assert repr(listed) in str(caught.value) and hub.endpoint in str(caught.value)
    assert _resolves(hub) == []
    assert _outside(tmp_path, cache) == set()
    assert not cache.exists() or not any(cache.rglob("*"))


@pytest.mark.parametrize("sha", ["../../../outside", "main", COMMIT.upper()])
def test_a_listed_commit_that_is_not_a_commit_id_is_refused(
    hub: Any, cache: Path, tmp_path: Path, sha: str
) -> None:
    hub.sha = sha
    with pytest.raises(ModelError, match="which is not a git commit id"):
        download_model(REPO, endpoint=hub.endpoint)
    assert _resolves(hub) == []
    assert _outside(tmp_path, cache) == set()


def test_a_revision_name_that_leaves_the_refs_folder_is_refused(
    hub: Any, cache: Path, tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match="is not a revision name"):
        download_model(REPO, revision="../../../../outside", endpoint=hub.endpoint)
    assert hub.requests == []
    assert _outside(tmp_path, cache) == set()


def test_code_in_component_folders_is_never_chosen() -> None:
    names = ["model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json",
             "tokenizer/merges.txt", "tokenizer_2/spiece.model", *CODE_FILES,
             "scheduler/run.sh", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
             "unet/pipeline.py", "tokenizer/tokenization.py"]  # fmt: skip
    chosen = set(choose_files(dict.fromkeys(names, 1)))
    assert chosen == {
        "model_index.json",
        "scheduler/scheduler_config.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "tokenizer_2/spiece.model",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    }


def test_without_symbolic_links_the_blob_is_moved_into_the_snapshot(
    hub: Any, cache: Path, repo_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    def no_links(*_args: object, **_kwargs: object) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", no_links)
    snapshot = download_model(REPO, endpoint=hub.endpoint)
    files = [p for p in snapshot.rglob("*") if p.is_file()]
    assert files and not any(p.is_symlink() for p in files)
    for path in files:
        assert path.read_bytes() == repo_files[path.relative_to(snapshot).as_posix()]
    assert not list((cache / "models--org--tiny-turbo" / "blobs").iterdir())
    assert (cache / "models--org--tiny-turbo" / "refs" / "main").read_text() == COMMIT
