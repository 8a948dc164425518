"""Training images as kohya's sd-scripts users keep them.

A dataset folder holds images (PNG, JPEG or WebP) with captions in same-name ``.txt``
or ``.caption`` files, and may hold ``N_name`` sub-folders whose images are seen ``N``
times per epoch (kohya's "repeats"). Every image is opened at scan time through
:func:`sdstudio.engine.images.open_image` (safe formats, size limit, EXIF orientation),
so one that cannot be used is reported by name and skipped before training starts,
not minutes into it.

Images are grouped into aspect-ratio buckets as kohya makes them: sizes whose area is
at most the training resolution's, sides from ``min_bucket_reso`` to ``max_bucket_reso``
in steps of ``bucket_reso_steps``; each image goes to the bucket nearest its aspect
ratio and is scaled to cover it, then centre-cropped.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from sdstudio.engine.errors import ImageInputError, InvalidRequest

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
"""What sdstudio opens; other picture files are reported, not trained on."""
OTHER_PICTURES = (".bmp", ".gif", ".tif", ".tiff", ".avif", ".jxl", ".heic")
CAPTION_SUFFIXES = (".txt", ".caption")
_REPEATS_FOLDER = re.compile(r"^(\d+)_(.+)$")


@dataclass(frozen=True, slots=True)
class TrainingImage:
    """One image of a dataset, with its caption and where it goes."""

    path: Path
    caption: str
    repeats: int
    folder: str
    """The name of the folder it came from (the ``name`` of ``N_name``)."""
    size: tuple[int, int]
    """Width and height, upright (EXIF orientation applied)."""


@dataclass(slots=True)
class Dataset:
    """The images found in a dataset folder and the ones skipped, with why."""

    root: Path
    images: list[TrainingImage] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """One sentence per file or folder that is not trained on."""
    folders: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Folder name -> (repeats, image count), kohya's ``ss_dataset_dirs``."""

    @property
    def steps_per_epoch_images(self) -> int:
        """Images seen per epoch: each image times its folder's repeats."""
        return sum(image.repeats for image in self.images)

    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """Folder name -> tag -> how many captions hold it (kohya's ``ss_tag_frequency``)."""
        found: dict[str, Counter[str]] = {}
        for image in self.images:
            counter = found.setdefault(image.folder, Counter())
            counter.update({tag for tag in split_tags(image.caption) if tag})
        return {folder: dict(counts) for folder, counts in found.items()}


def scan_dataset(root: str | Path) -> Dataset:
    """The images of ``root`` and its ``N_name`` sub-folders.

    Raises :class:`InvalidRequest` when the folder does not exist or holds no usable
    image; unusable files are listed in :attr:`Dataset.skipped`.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InvalidRequest(f"The dataset folder {root} does not exist or is not a folder.")
    dataset = Dataset(root)
    _scan_folder(dataset, root, repeats=1, name=root.name)
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        match = _REPEATS_FOLDER.match(sub.name)
        if match is None:
            dataset.skipped.append(
                f"The folder {sub} is not trained on: its name does not start with a number "
                "of repeats (kohya's N_name, for example 10_cat)."
            )
            continue
        repeats = int(match.group(1))
        if repeats < 1:
            dataset.skipped.append(f"The folder {sub} is not trained on: it has 0 repeats.")
            continue
        _scan_folder(dataset, sub, repeats=repeats, name=match.group(2))
    if not dataset.images:
        detail = f" ({dataset.skipped[0]})" if dataset.skipped else ""
        raise InvalidRequest(
            f"The dataset folder {root} holds no image to train on: PNG, JPEG or WebP files, "
            f"directly or in N_name sub-folders{detail}."
        )
    return dataset


def _scan_folder(dataset: Dataset, folder: Path, *, repeats: int, name: str) -> None:
    count = 0
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        suffix = path.suffix.lower()
        if suffix in OTHER_PICTURES:
            dataset.skipped.append(
                f"The image {path} is skipped: sdstudio trains on PNG, JPEG or WebP files."
            )
            continue
        if suffix not in IMAGE_SUFFIXES:
            continue
        try:
            size = _upright_size(path)
        except ImageInputError as error:
            dataset.skipped.append(f"Skipped: {error}")
            continue
        dataset.images.append(TrainingImage(path, read_caption(path), repeats, name, size))
        count += 1
    if count:
        previous = dataset.folders.get(name, (repeats, 0))
        dataset.folders[name] = (repeats, previous[1] + count)


def _upright_size(path: Path) -> tuple[int, int]:
    """The image's upright size, after decoding it whole once (a damaged file is caught
    here, not during training)."""
    from sdstudio.engine.images import open_image

    image = open_image(path, what="training image")
    try:
        return image.size
    finally:
        image.close()


def read_caption(image: Path) -> str:
    """The caption beside ``image`` (``.txt``, else ``.caption``); empty when there is none."""
    for suffix in CAPTION_SUFFIXES:
        caption = image.with_suffix(suffix)
        if caption.is_file():
            text = caption.read_text("utf-8", errors="replace")
            return " ".join(text.split())
    return ""


def split_tags(caption: str) -> list[str]:
    """A caption's comma-separated tags, stripped."""
    return [tag.strip() for tag in caption.split(",")]


@dataclass(frozen=True, slots=True)
class CaptionOptions:
    """How captions are varied while training (kohya's options of the same names)."""

    shuffle_caption: bool = False
    keep_tokens: int = 0
    """With shuffling, the first N tags stay in place (a trigger word, for example)."""
    caption_dropout_rate: float = 0.0
    """The share of steps an image is shown with an empty caption."""


def process_caption(caption: str, options: CaptionOptions, rng: random.Random) -> str:
    """The caption an image is shown with at one step."""
    if options.caption_dropout_rate > 0 and rng.random() < options.caption_dropout_rate:
        return ""
    if not options.shuffle_caption or "," not in caption:
        return caption
    tags = [tag for tag in split_tags(caption) if tag]
    kept, rest = tags[: options.keep_tokens], tags[options.keep_tokens :]
    rng.shuffle(rest)
    return ", ".join(kept + rest)


@dataclass(frozen=True, slots=True)
class BucketOptions:
    """kohya's aspect-ratio bucketing: the training resolution and the bucket limits."""

    resolution: tuple[int, int] = (512, 512)
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    enable_bucket: bool = True

    def check(self) -> None:
        """Refuse sizes that cannot make a bucket."""
        step = self.bucket_reso_steps
        width, height = self.resolution
        if step < 8 or step % 8:
            raise InvalidRequest("--bucket-reso-steps must be a multiple of 8 (kohya uses 64).")
        if width < step or height < step or width % 8 or height % 8:
            raise InvalidRequest(
                f"--resolution {width},{height} must be multiples of 8, at least "
                f"--bucket-reso-steps ({step})."
            )
        if self.enable_bucket and not step <= self.min_bucket_reso <= self.max_bucket_reso:
            raise InvalidRequest(
                "--min-bucket-reso must be at least --bucket-reso-steps and at most "
                "--max-bucket-reso."
            )


def make_buckets(options: BucketOptions) -> list[tuple[int, int]]:
    """kohya's bucket sizes: every (width, height) on the step grid whose area is at most
    the resolution's, within the limits, plus the square of that area. Sorted."""
    width, height = options.resolution
    if not options.enable_bucket:
        return [(width, height)]
    step = options.bucket_reso_steps
    area = width * height
    side = int(math.sqrt(area) // step) * step
    sizes = {(side, side)}
    low, high = options.min_bucket_reso, options.max_bucket_reso
    for w in range(low, high + 1, step):
        h = min(high, (area // w) // step * step)
        if h >= low:
            sizes.add((w, h))
            sizes.add((h, w))
    return sorted(sizes)


def choose_bucket(size: tuple[int, int], buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest the image's."""
    ratio = size[0] / size[1]
    return min(buckets, key=lambda bucket: abs(bucket[0] / bucket[1] - ratio))


@dataclass(frozen=True, slots=True)
class Fitted:
    """An image scaled and cropped into its bucket, with what SDXL is told about it."""

    pixels: torch.Tensor
    """3 x H x W in [-1, 1]."""
    original_size: tuple[int, int]
    """Height and width of the source (SDXL's ``original_size``)."""
    crop_top_left: tuple[int, int]


def fit_to_bucket(image: Image.Image, bucket: tuple[int, int], *, flip: bool = False) -> Fitted:
    """Scale ``image`` to cover ``bucket`` (width, height) and centre-crop it, as kohya does;
    ``flip`` mirrors the crop left to right (kohya's ``flip_aug``), and SDXL's crop
    position is then measured from the mirrored image's left edge, as kohya measures it."""
    import numpy as np
    import torch

    width, height = image.size
    target_w, target_h = bucket
    scale = target_h / height if width / height > target_w / target_h else target_w / width
    resized = (max(target_w, int(width * scale + 0.5)), max(target_h, int(height * scale + 0.5)))
    if resized != image.size:
        image = image.resize(resized, Image.Resampling.LANCZOS)
    left = (resized[0] - target_w) // 2
    top = (resized[1] - target_h) // 2
    image = image.crop((left, top, left + target_w, top + target_h))
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    if flip:
        array = array[:, ::-1]
        left = resized[0] - target_w - left
    pixels = torch.from_numpy(array.copy()).permute(2, 0, 1)
    return Fitted(pixels, (height, width), (top, left))


def load_fitted(image: TrainingImage, bucket: tuple[int, int], *, flip: bool = False) -> Fitted:
    """Open ``image`` (upright, RGB) and fit it to ``bucket`` (mirrored with ``flip``)."""
    from sdstudio.engine.images import open_image

    opened = open_image(image.path, what="training image")
    try:
        return fit_to_bucket(opened, bucket, flip=flip)
    finally:
        opened.close()


def color_augment(pixels: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """kohya's ``color_aug`` on a 3 x H x W image in [-1, 1]: a third of the time, either
    the hue shifted by up to 8 of OpenCV's 180 degrees or a gamma of 0.95 to 1.05 applied
    to the 0-255 values (clipped, as kohya does); otherwise the image as it is."""
    import numpy as np
    import torch

    if rng.random() > 0.33:
        return pixels
    rgb: Any = ((pixels.permute(1, 2, 0).numpy() + 1.0) * 127.5).round().clip(0, 255)
    rgb = rgb.astype(np.uint8)
    if rng.random() > 0.5:
        import cv2

        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        shift = rng.uniform(-8, 8) % 180
        hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.float32) + shift) % 180).astype(np.uint8)
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    else:
        gamma = rng.uniform(0.95, 1.05)
        rgb = np.clip(rgb.astype(np.float32) ** gamma, 0, 255).astype(np.uint8)
    array = rgb.astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


@dataclass(frozen=True, slots=True)
class Batch:
    """The images of one training step: all in one bucket."""

    bucket: tuple[int, int]
    indices: tuple[int, ...]
    """Indices into :attr:`Dataset.images`."""


def epoch_batches(
    dataset: Dataset, buckets: dict[int, tuple[int, int]], batch_size: int, seed: int, epoch: int
) -> list[Batch]:
    """The batches of one epoch, a pure function of the seed and the epoch (so a resumed
    run sees the same ones): each image ``repeats`` times, shuffled within its bucket,
    cut into batches, and the batches shuffled."""
    rng = random.Random(f"{seed}:epoch:{epoch}")
    by_bucket: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(dataset.images):
        by_bucket.setdefault(buckets[index], []).extend([index] * image.repeats)
    batches = []
    for bucket in sorted(by_bucket):
        members = by_bucket[bucket]
        rng.shuffle(members)
        for start in range(0, len(members), batch_size):
            batches.append(Batch(bucket, tuple(members[start : start + batch_size])))
    rng.shuffle(batches)
    return batches


def bucket_info(dataset: Dataset, buckets: dict[int, tuple[int, int]]) -> dict[str, object]:
    """kohya's ``ss_bucket_info``: each bucket's size and how many images it holds."""
    counts: Counter[tuple[int, int]] = Counter()
    errors = []
    for index, image in enumerate(dataset.images):
        bucket = buckets[index]
        counts[bucket] += image.repeats
        errors.append(abs(bucket[0] / bucket[1] - image.size[0] / image.size[1]))
    sizes = sorted(counts)
    return {
        "buckets": {
            str(i): {"resolution": list(size), "count": counts[size]}
            for i, size in enumerate(sizes)
        },
        "mean_img_ar_error": sum(errors) / max(1, len(errors)),
    }
