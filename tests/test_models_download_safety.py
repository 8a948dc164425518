"""A hostile hub: every name it sends stays a name inside the cache, and no code is fetched."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from fake_hub import CODE_FILES, COMMIT, REPO, resolves

from sdstudio.engine.errors import ModelError
from sdstudio.engine.models.download import choose_files, download_model

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
    assert not any("scheduler_config" in r[1] for r in resolves(hub))


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
    assert resolves(hub) == []
    assert _outside(tmp_path, cache) == set()
    assert not cache.exists() or not any(cache.rglob("*"))


@pytest.mark.parametrize("sha", ["../../../outside", "main", COMMIT.upper()])
def test_a_listed_commit_that_is_not_a_commit_id_is_refused(
    hub: Any, cache: Path, tmp_path: Path, sha: str
) -> None:
    hub.sha = sha
    with pytest.raises(ModelError, match="which is not a git commit id"):
        download_model(REPO, endpoint=hub.endpoint)
    assert resolves(hub) == []
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
