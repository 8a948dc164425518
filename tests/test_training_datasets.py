"""Training datasets: kohya folders, captions, unusable images, buckets and batches."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from hostile_images import PNG_SIGNATURE, chunk
from PIL import Image

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.training.datasets import (
    BucketOptions,
    CaptionOptions,
    choose_bucket,
    epoch_batches,
    fit_to_bucket,
    make_buckets,
    process_caption,
    scan_dataset,
)


def picture(path: Path, size: tuple[int, int], caption: str | None = None, **save: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path, **save)  # type: ignore[arg-type]
    if caption is not None:
        path.with_suffix(".txt").write_text(caption, "utf-8")
    return path


def test_scan_reads_repeats_captions_and_reports_what_it_skips(tmp_path: Path) -> None:
    root = tmp_path / "data"
    picture(root / "top.png", (64, 64), "top image")
    picture(root / "10_cat" / "a.png", (96, 64), "cat,  red\n, sitting")
    other = picture(root / "10_cat" / "b.jpg", (64, 96))
    other.with_suffix(".caption").write_text("cat, blue", "utf-8")
    picture(root / "10_cat" / "c.webp", (64, 64))  # no caption: trained with an empty one
    (root / "10_cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 9000, 9000, 8, 0, 0, 0, 0))
    (root / "10_cat" / "bomb.png").write_bytes(PNG_SIGNATURE + header + chunk(b"IEND", b""))
    picture(root / "10_cat" / "old.bmp", (8, 8))
    (root / "10_cat" / "notes.json").write_text("{}", "utf-8")
    picture(root / "misc" / "x.png", (8, 8))

    dataset = scan_dataset(root)

    found = {image.path.name: image for image in dataset.images}
    assert sorted(found) == ["a.png", "b.jpg", "c.webp", "top.png"]
    assert found["a.png"].caption == "cat, red , sitting"
    assert found["b.jpg"].caption == "cat, blue"
    assert found["c.webp"].caption == ""
    assert (found["a.png"].repeats, found["a.png"].folder) == (10, "cat")
    assert (found["top.png"].repeats, found["top.png"].folder) == (1, "data")
    assert found["b.jpg"].size == (64, 96)
    assert dataset.folders == {"data": (1, 1), "cat": (10, 3)}
    assert dataset.steps_per_epoch_images == 31
    skipped = "\n".join(dataset.skipped)
    assert "broken.png" in skipped and "damaged" in skipped
    assert "bomb.png" in skipped and "megapixels" in skipped
    assert "old.bmp" in skipped and "PNG, JPEG or WebP" in skipped
    assert "misc" in skipped and "N_name" in skipped
    assert "notes.json" not in skipped
    assert dataset.tag_frequency()["cat"] == {"cat": 2, "red": 1, "sitting": 1, "blue": 1}


def test_exif_orientation_gives_the_upright_size_and_pixels(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the stored 80x40 image is 40x80 upright
    image = Image.new("RGB", (80, 40), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 40, 40))
    path = tmp_path / "data" / "photo.jpg"
    path.parent.mkdir()
    image.save(path, exif=exif, quality=95)

    [item] = scan_dataset(tmp_path / "data").images
    assert item.size == (40, 80)
    from sdstudio.engine.training.datasets import load_fitted

    fitted = load_fitted(item, (64, 128))
    assert tuple(fitted.pixels.shape) == (3, 128, 64)
    top, bottom = fitted.pixels[:, 10, 32], fitted.pixels[:, 118, 32]
    assert top[0] > 0.5 and top[2] < -0.5  # the red half is on top once upright
    assert bottom[2] > 0.5 and bottom[0] < -0.5


def test_a_folder_without_usable_images_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="does not exist"):
        scan_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "bad.png").write_bytes(b"nope")
    with pytest.raises(InvalidRequest, match=r"no image to train on.*bad\.png"):
        scan_dataset(tmp_path / "empty")


def test_buckets_follow_kohya() -> None:
    buckets = make_buckets(BucketOptions((512, 512), 256, 1024, 64))
    assert (512, 512) in buckets and (256, 1024) in buckets and (1024, 256) in buckets
    assert (704, 320) in buckets and (320, 768) in buckets
    for width, height in buckets:
        assert width % 64 == 0 and height % 64 == 0
        assert width * height <= 512 * 512
        assert min(width, height) >= 256 and max(width, height) <= 1024
        assert (height, width) in buckets
    assert choose_bucket((1000, 500), buckets) == (704, 320)
    assert choose_bucket((300, 300), buckets) == (512, 512)
    assert make_buckets(BucketOptions((512, 512), enable_bucket=False)) == [(512, 512)]
    with pytest.raises(InvalidRequest, match="multiple of 8"):
        BucketOptions((512, 512), bucket_reso_steps=12).check()


def test_images_are_scaled_to_cover_their_bucket_and_centre_cropped() -> None:
    image = Image.new("RGB", (200, 100), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 100))  # a white strip on the left edge
    fitted = fit_to_bucket(image, (128, 64))
    assert tuple(fitted.pixels.shape) == (3, 64, 128)
    assert fitted.original_size == (100, 200)
    assert fitted.crop_top_left == (0, 0)  # 200x100 -> 128x64 exactly
    assert float(fitted.pixels[0, 32, 2]) > 0.9
    square = fit_to_bucket(Image.new("RGB", (100, 200)), (64, 64))
    assert square.crop_top_left == (32, 0)  # 64x128 cropped to its middle 64 rows


def test_caption_shuffle_keeps_tokens_and_dropout_empties() -> None:
    caption = "sks person, smiling, outdoors, red hat, night"
    shuffle = CaptionOptions(shuffle_caption=True, keep_tokens=1)
    seen = {process_caption(caption, shuffle, random.Random(seed)) for seed in range(20)}
    assert len(seen) > 5
    for text in seen:
        tags = text.split(", ")
        assert tags[0] == "sks person"
        assert sorted(tags) == sorted(caption.split(", "))
    plain = CaptionOptions()
    assert process_caption(caption, plain, random.Random(0)) == caption
    dropped = CaptionOptions(caption_dropout_rate=1.0)
    assert process_caption(caption, dropped, random.Random(0)) == ""
    half = CaptionOptions(caption_dropout_rate=0.5)
    rng = random.Random(3)
    empty = sum(process_caption(caption, half, rng) == "" for _ in range(400))
    assert 140 < empty < 260


def test_epoch_batches_hold_one_bucket_and_every_repeat(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for i in range(3):
        picture(root / "2_wide" / f"w{i}.png", (128, 64), "wide")
    picture(root / "3_tall" / "t.png", (64, 128), "tall")
    dataset = scan_dataset(root)
    sizes = make_buckets(BucketOptions((64, 64), 64, 128, 64))
    assert sizes == [(64, 64)]  # an area of 64x64 leaves one bucket at this step
    sizes = make_buckets(BucketOptions((96, 96), 64, 192, 32))
    buckets = {i: choose_bucket(image.size, sizes) for i, image in enumerate(dataset.images)}
    batches = epoch_batches(dataset, buckets, 2, seed=5, epoch=0)
    counts: dict[int, int] = {}
    for batch in batches:
        assert {buckets[i] for i in batch.indices} == {batch.bucket}
        for index in batch.indices:
            counts[index] = counts.get(index, 0) + 1
    assert counts == {i: image.repeats for i, image in enumerate(dataset.images)}
    assert batches == epoch_batches(dataset, buckets, 2, seed=5, epoch=0)
    others = [epoch_batches(dataset, buckets, 2, seed=5, epoch=e) for e in range(1, 6)]
    assert any(batches != other for other in others)
