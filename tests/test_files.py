"""Atomic writes, outputs naming, input images and the hash cache."""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from sdstudio.engine import fileio
from sdstudio.engine.errors import ImageInputError, StorageError
from sdstudio.engine.fileio import current_umask, write_atomically
from sdstudio.engine.generation import GeneratedImage
from sdstudio.engine.hashing import HashCache
from sdstudio.engine.images import MAX_PIXELS, input_path, open_image, open_mask, store_input
from sdstudio.engine.metadata import ImageRecord, read_image_settings
from sdstudio.engine.outputs import OutputWriter
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.settings import Settings, save_settings


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.bin"
    write_atomically(target, b"one")
    write_atomically(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(target.parent) == ["file.bin"]


def test_no_overwrite_mode_refuses_existing_files(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    write_atomically(target, b"first", overwrite=False)
    with pytest.raises(FileExistsError):
        write_atomically(target, b"second", overwrite=False)
    assert target.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_full_disk_gives_a_clear_error_and_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match="The disk is full"):
        write_atomically(tmp_path / "image.png", b"x" * 1000)
    assert os.listdir(tmp_path) == []


def test_unwritable_folder_gives_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    with pytest.raises(StorageError, match="Could not write"):
        write_atomically(blocker / "image.png", b"x")


def _result(seed: int) -> GeneratedImage:
    request = GenerationRequest(model="m", prompt="p", seed=seed)
    return GeneratedImage(Image.new("RGB", (64, 64), (9, 9, 9)), ImageRecord(request=request))


def test_outputs_are_named_by_time_and_seed_in_date_folders(tmp_path: Path) -> None:
    writer = OutputWriter(tmp_path)
    now = datetime(2026, 11, 22, 17, 33, 28, 512000)
    first = writer.write(_result(1234), now=now)
    second = writer.write(_result(1234), now=now)
    assert first == tmp_path / "2026-11-22" / "20261122-173328-512_1234.png"
    assert second == tmp_path / "2026-11-22" / "20261122-173328-512_1234-1.png"
    assert read_image_settings(second).request.seed == 1234


def test_open_image_refuses_bad_files_clearly(tmp_path: Path) -> None:
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    with pytest.raises(ImageInputError, match="is not an image file sdstudio can read"):
        open_image(not_image, what="init image")
    good = tmp_path / "good.png"
    Image.new("RGB", (256, 256), (1, 2, 3)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:120])
    with pytest.raises(ImageInputError, match="damaged or truncated"):
        open_image(truncated)
    with pytest.raises(ImageInputError, match="does not exist"):
        open_image(tmp_path / "missing.png")
    with pytest.raises(ImageInputError, match="is not a file"):
        open_image(tmp_path)


def test_huge_images_are_refused_before_decoding(tmp_path: Path) -> None:
    side = int(MAX_PIXELS**0.5) + 8
    huge = tmp_path / "huge.png"
    # A 1-bit image of this size is a small file but a huge decode.
    Image.new("1", (side, side)).save(huge)
    with pytest.raises(ImageInputError, match="megapixels"):
        open_image(huge)


def test_images_are_made_upright_rgb(tmp_path: Path) -> None:
    path = tmp_path / "rgba.png"
    Image.new("RGBA", (10, 20), (255, 0, 0, 128)).save(path)
    image = open_image(path)
    assert (image.mode, image.size) == ("RGB", (10, 20))


def test_masks_are_greyscale_and_resized(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    Image.new("RGB", (40, 30), (255, 255, 255)).save(path)
    mask, original = open_mask(path, (64, 64))
    assert (mask.mode, mask.size, original) == ("L", (64, 64), (40, 30))
    layer = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    layer.putpixel((1, 1), (255, 0, 0, 255))
    layer.save(path)
    mask, _ = open_mask(path, (8, 8))
    assert mask.getpixel((1, 1)) == 255 and mask.getpixel((0, 0)) == 0


def test_store_input_is_content_addressed(tmp_path: Path) -> None:
    image = Image.new("RGB", (8, 8), (5, 6, 7))
    first = store_input(image, tmp_path)
    assert input_path(image, tmp_path) == first  # known before anything is written
    written = first.stat().st_mtime_ns
    assert store_input(image.copy(), tmp_path) == first
    assert first.stat().st_mtime_ns == written  # the same content is not written again
    assert store_input(Image.new("RGB", (8, 8)), tmp_path) != first
    with Image.open(first) as stored:
        assert stored.tobytes() == image.tobytes()
    assert open_image(first).tobytes() == image.tobytes()


def test_hash_cache_gives_a1111_hash_and_notices_changes(tmp_path: Path) -> None:
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"weights")
    cache = HashCache(tmp_path / "hashes.json")
    import hashlib

    assert cache.short_hash(model) == hashlib.sha256(b"weights").hexdigest()[:10]
    assert (
        HashCache(tmp_path / "hashes.json").sha256(model) == hashlib.sha256(b"weights").hexdigest()
    )
    model.write_bytes(b"other weights")
    assert cache.sha256(model) == hashlib.sha256(b"other weights").hexdigest()


@pytest.fixture
def set_umask(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Sets the process's umask for one test, and puts the old one back."""
    previous = os.umask(0o022)
    os.umask(previous)

    def apply(mask: int) -> None:
        os.umask(mask)
        # Where /proc cannot tell, the umask read at import stands for the process's.
        monkeypatch.setattr(fileio, "_UMASK_AT_START", mask)

    yield apply
    os.umask(previous)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize(
    ("umask", "mode"),
    [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)],
    ids=["umask-022", "umask-077", "umask-002"],
)
def test_written_files_get_the_permissions_the_umask_allows(
    tmp_path: Path, set_umask, umask: int, mode: int
) -> None:
    set_umask(umask)
    image = OutputWriter(tmp_path / "outputs").write(_result(7))
    paths = AppPaths.under(tmp_path / "home")
    save_settings(paths, Settings(theme="dark"))
    save_settings(paths, Settings(theme="light"))  # replacing a file, too
    for written in (image, paths.settings_file):
        assert stat.S_IMODE(written.stat().st_mode) == mode, written


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/status")
def test_the_umask_is_read_without_changing_it(set_umask) -> None:
    for mask in (0o027, 0o002):
        os.umask(mask)
        assert current_umask() == mask
