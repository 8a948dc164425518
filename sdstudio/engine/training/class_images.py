"""Class images for DreamBooth's prior preservation: generated with the base model before
training, then trained on beside the subject's images.

As in diffusers' and kohya's DreamBooth, only the missing images are generated: the
images already in the class folder count, so a second run (or a run cancelled while
generating) reuses them. Each generated image has a fixed seed (the run's seed plus
its number), is written as ``class-NNNNNN.png`` with its prompt as the ``.txt``
caption, and appears whole or not at all. Generation stops between images when the
run is cancelled.
"""

from __future__ import annotations

import dataclasses
import io
from typing import TYPE_CHECKING, Any

from sdstudio.engine.fileio import write_atomically
from sdstudio.engine.training.data import TrainingData
from sdstudio.engine.training.datasets import IMAGE_SUFFIXES, scan_dataset
from sdstudio.engine.training.events import CancelFlag, EventSink, Notice

if TYPE_CHECKING:
    from pathlib import Path

    from PIL import Image

    from sdstudio.engine.training.dreambooth_options import DreamboothOptions
    from sdstudio.engine.training.model import TrainingModel

GUIDANCE = 7.0
CLASS_SEED_OFFSET = 7919
"""Added to the run's seed for the class images' batches and noise, so they are drawn
apart from the instance images'."""


def generate_image(
    model: TrainingModel,
    *,
    prompt: str,
    seed: int,
    steps: int,
    size: tuple[int, int],
    mixed_precision: str,
) -> Image.Image:
    """One image of ``prompt`` from the model as it is now, without gradients."""
    import torch

    from sdstudio.engine.training.loop import autocast_for

    width, height = size
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad(), autocast_for(model.device, mixed_precision):
        images: Any = model.pipe(
            prompt=prompt,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            width=width,
            height=height,
            generator=generator,
        ).images
    return images[0]


def image_files(folder: Path) -> list[Path]:
    """The images directly in ``folder``, by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def ensure_class_images(
    model: TrainingModel,
    options: DreamboothOptions,
    *,
    on_event: EventSink,
    cancel: CancelFlag | None = None,
) -> bool:
    """Generate the class images the class folder lacks (up to ``num_class_images``);
    ``False`` when cancelled before all were made (those made are kept)."""
    folder = options.class_data_dir
    if folder is None or options.num_class_images <= 0:
        return True
    have = len(image_files(folder))
    missing = options.num_class_images - have
    if missing <= 0:
        on_event(Notice(message=f"Using {have} class images from {folder}."))
        return True
    base = options.base
    on_event(
        Notice(
            message=f"{have} class images in {folder}; generating {missing} more "
            f"of {options.class_prompt!r}…"
        )
    )
    folder.mkdir(parents=True, exist_ok=True)
    number = 0
    for made in range(missing):
        if cancel is not None and cancel.is_set():
            return False
        while (folder / f"class-{number:06d}.png").exists():
            number += 1
        on_event(Notice(message=f"Generating class image {made + 1} of {missing}…"))
        image = generate_image(
            model,
            prompt=options.class_prompt,
            seed=base.seed + number,
            steps=base.sample_steps,
            size=base.buckets.resolution,
            mixed_precision=base.mixed_precision,
        )
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        path = folder / f"class-{number:06d}.png"
        write_atomically(path.with_suffix(".txt"), options.class_prompt.encode("utf-8"))
        write_atomically(path, buffer.getvalue())
        number += 1
    return True


def class_data(options: DreamboothOptions, *, on_event: EventSink) -> TrainingData:
    """The class images as a dataset of their own, batched like the instance images
    (the first ``num_class_images`` of the folder when that is given)."""
    assert options.class_data_dir is not None
    base = options.base
    dataset = scan_dataset(options.class_data_dir)
    for message in dataset.skipped:
        on_event(Notice(message=message))
    if options.num_class_images > 0:
        del dataset.images[options.num_class_images :]
    for index, image in enumerate(dataset.images):
        if not image.caption and options.class_prompt:
            dataset.images[index] = dataclasses.replace(image, caption=options.class_prompt)
    return TrainingData(
        dataset,
        base.buckets,
        base.captions,
        batch_size=base.train_batch_size,
        seed=base.seed + CLASS_SEED_OFFSET,
    )
