"""A dataset as a run consumes it: buckets, batches per epoch, captions and latents per step.

Everything random here is drawn from generators seeded by the run's seed and the step
(or the epoch), never from a shared stream, so a run resumed at step ``n`` sees exactly
the batches, captions and noise the uninterrupted run saw from step ``n``. Every
trainer (LoRA now; embeddings, DreamBooth and hypernetworks use the same) takes its
images through this class.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from sdstudio.engine.training.datasets import (
    Batch,
    BucketOptions,
    CaptionOptions,
    Dataset,
    Fitted,
    choose_bucket,
    color_augment,
    epoch_batches,
    load_fitted,
    make_buckets,
    process_caption,
)

if TYPE_CHECKING:
    from sdstudio.engine.training.model import TrainingModel

log = logging.getLogger(__name__)


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU generator for ``step`` of a run seeded ``seed`` (``stream`` tells apart the
    draws of one step)."""
    return torch.Generator("cpu").manual_seed((seed * 1_000_003 + step * 7 + stream) % 2**63)


class TrainingData:
    """The images of a run, in their buckets, batched per epoch."""

    def __init__(
        self,
        dataset: Dataset,
        buckets: BucketOptions,
        captions: CaptionOptions,
        *,
        batch_size: int,
        seed: int,
    ) -> None:
        self.dataset = dataset
        self.captions = captions
        self.batch_size = batch_size
        self.seed = seed
        self.bucket_sizes = make_buckets(buckets)
        self.buckets = {
            index: choose_bucket(image.size, self.bucket_sizes)
            for index, image in enumerate(dataset.images)
        }
        self._epoch: tuple[int, list[Batch]] | None = None
        self._latents: dict[tuple[int, bool], tuple[torch.Tensor, Fitted]] = {}
        self.flip_aug = False
        """Mirror each image at half the steps, drawn per step (kohya's ``flip_aug``)."""
        self.color_aug = False
        """Vary each image's hue or gamma per step (kohya's ``color_aug``; never cached)."""

    @property
    def batches_per_epoch(self) -> int:
        """Batches (steps) in one epoch: each bucket's images times repeats, in batches."""
        return len(self.batches(0))

    def batches(self, epoch: int) -> list[Batch]:
        """The batches of ``epoch`` in their training order."""
        if self._epoch is None or self._epoch[0] != epoch:
            batches = epoch_batches(self.dataset, self.buckets, self.batch_size, self.seed, epoch)
            self._epoch = (epoch, batches)
        return self._epoch[1]

    def batch_at(self, step: int) -> Batch:
        """The batch of a step (0-based)."""
        epoch, index = divmod(step, self.batches_per_epoch)
        return self.batches(epoch)[index]

    def epoch_of(self, step: int) -> int:
        """The 0-based epoch a step falls in."""
        return step // self.batches_per_epoch

    def captions_at(self, step: int, batch: Batch) -> list[str]:
        """The batch's captions as shown at ``step`` (shuffled, dropped out)."""
        rng = random.Random(f"{self.seed}:captions:{step}")
        return [
            process_caption(self.dataset.images[index].caption, self.captions, rng)
            for index in batch.indices
        ]

    def flipped(self, step: int, batch: Batch) -> list[bool]:
        """Which of the batch's images are shown mirrored at ``step``: none without
        :attr:`flip_aug`, else each with a chance of one half from the step's own draw."""
        if not self.flip_aug:
            return [False] * len(batch.indices)
        rng = random.Random(f"{self.seed}:flip:{step}")
        return [rng.random() < 0.5 for _ in batch.indices]

    def cache_latents(
        self, model: TrainingModel, on_progress: Callable[[int, int], None] | None = None
    ) -> None:
        """Encode every image once (kohya's ``--cache-latents``): steps then skip the VAE.
        With :attr:`flip_aug` the mirrored image is encoded too, as kohya caches both."""
        total = len(self.dataset.images)
        for index in range(total):
            for flip in (False, True) if self.flip_aug else (False,):
                image = self.dataset.images[index]
                fitted = load_fitted(image, self.buckets[index], flip=flip)
                generator = step_generator(self.seed, index, stream=201 if flip else 101)
                latents = model.encode_images(fitted.pixels[None], generator)[0]
                self._latents[(index, flip)] = (latents, _without_pixels(fitted))
            if on_progress:
                on_progress(index + 1, total)

    def latents_at(
        self, step: int, batch: Batch, model: TrainingModel
    ) -> tuple[torch.Tensor, list[Fitted]]:
        """The batch's latents (cached, or encoded now with the step's generator) and
        what each image was fitted from."""
        flips = self.flipped(step, batch)
        if self._latents:
            pairs = [self._latents[key] for key in zip(batch.indices, flips, strict=True)]
            return torch.stack([latents for latents, _ in pairs]), [f for _, f in pairs]
        fitted = [
            load_fitted(self.dataset.images[i], batch.bucket, flip=flip)
            for i, flip in zip(batch.indices, flips, strict=True)
        ]
        if self.color_aug:
            rng = random.Random(f"{self.seed}:color:{step}")
            fitted = [replace(f, pixels=color_augment(f.pixels, rng)) for f in fitted]
        pixels = torch.stack([f.pixels for f in fitted])
        latents = model.encode_images(pixels, step_generator(self.seed, step, stream=1))
        return latents, fitted


def _without_pixels(fitted: Fitted) -> Fitted:
    """``fitted`` without its pixels, which a latent cache does not need to keep."""
    return Fitted(torch.empty(0), fitted.original_size, fitted.crop_top_left)
