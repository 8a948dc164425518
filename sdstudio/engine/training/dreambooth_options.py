"""What a DreamBooth run is asked to do: the shared options plus prior preservation.

DreamBooth fine-tunes the whole UNet (and, if asked, the text encoders) on a few images
of a subject. Prior preservation (Ruiz et al. 2022) trains on images of the subject's
class beside them, so the model keeps what the class looks like: ``class_prompt`` names
the class ("a photo of a dog"), and ``class_data_dir`` holds its images (kohya calls it
the regularisation folder, ``--reg-data-dir``). Missing class images are generated with
the base model before training, up to ``num_class_images``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.training.datasets import IMAGE_SUFFIXES
from sdstudio.engine.training.options import TrainingOptions, _plain

SAVE_PRECISIONS = {"fp16": "float16", "bf16": "bfloat16", "float": "float32"}
"""``--save-precision`` -> the torch dtype's name the checkpoint is written in."""


@dataclass(frozen=True, slots=True)
class DreamboothOptions:
    """A DreamBooth run: the shared options plus the class images and what is trained."""

    base: TrainingOptions
    class_prompt: str = ""
    """The prompt of the class images (and their caption)."""
    class_data_dir: Path | None = None
    """The class (regularisation) images; generated there when fewer than asked for."""
    num_class_images: int = 0
    """How many class images to train with (0: those in ``class_data_dir``)."""
    prior_loss_weight: float = 1.0
    train_text_encoder: bool = False
    text_encoder_lr: float | None = None
    """The text encoders' learning rate (default: ``learning_rate``)."""
    save_precision: str = "fp16"
    skip_memory_check: bool = False
    overwrite: bool = False
    """Replace a checkpoint of the same name in the output folder."""

    @property
    def prior_preservation(self) -> bool:
        """Whether class images are trained beside the instance images."""
        return self.class_data_dir is not None and (
            self.num_class_images > 0 or _has_images(self.class_data_dir)
        )

    @property
    def checkpoint_path(self) -> Path:
        """The finished checkpoint: ``NAME.safetensors`` in the output folder."""
        return self.base.output_dir / f"{self.base.name}.safetensors"

    def check(self) -> None:
        """Raise :class:`InvalidRequest` for a setting that cannot be trained with."""
        self.base.check()
        if self.save_precision not in SAVE_PRECISIONS:
            raise InvalidRequest(
                f"Unknown --save-precision {self.save_precision!r}; "
                f"choose {', '.join(SAVE_PRECISIONS)}."
            )
        target = self.checkpoint_path
        if target.resolve() == self.base.model.resolve():
            raise InvalidRequest(
                f"{target} is the model being trained: give the result another --name."
            )
        if target.exists() and not self.overwrite:
            raise InvalidRequest(
                f"{target} already exists: choose another --name, or --overwrite to replace it."
            )
        if self.num_class_images < 0:
            raise InvalidRequest("--num-class-images cannot be negative.")
        if self.prior_loss_weight <= 0:
            raise InvalidRequest("--prior-loss-weight must be above 0 (1 is usual).")
        if self.text_encoder_lr is not None and self.text_encoder_lr <= 0:
            raise InvalidRequest("--text-encoder-lr must be above 0.")
        if self.text_encoder_lr is not None and not self.train_text_encoder:
            raise InvalidRequest("--text-encoder-lr needs --train-text-encoder.")
        if self.num_class_images > 0 and self.class_data_dir is None:
            raise InvalidRequest(
                "--num-class-images needs --reg-data-dir, the folder the class images go in."
            )
        if self.num_class_images > 0 and not self.class_prompt.strip():
            raise InvalidRequest(
                "--num-class-images needs --class-prompt, the prompt the class images are "
                'generated from (such as "a photo of a dog").'
            )
        if self.class_data_dir is not None:
            if self.class_data_dir.exists() and not self.class_data_dir.is_dir():
                raise InvalidRequest(f"--reg-data-dir {self.class_data_dir} is not a folder.")
            if self.num_class_images == 0 and not _has_images(self.class_data_dir):
                raise InvalidRequest(
                    f"--reg-data-dir {self.class_data_dir} holds no images: give "
                    "--num-class-images and --class-prompt to generate them."
                )
            if self.class_data_dir.resolve() == self.base.data.resolve():
                raise InvalidRequest(
                    "--reg-data-dir must be another folder than --data: the class images "
                    "are not the subject's."
                )
        elif self.class_prompt.strip():
            raise InvalidRequest(
                "--class-prompt needs --reg-data-dir (and --num-class-images to generate "
                "class images there)."
            )

    def record(self) -> dict[str, Any]:
        """The options as plain JSON values (kept with a saved state, compared on resume)."""
        return _plain(dataclasses.asdict(self))


def _has_images(folder: Path) -> bool:
    """Whether ``folder`` (or a sub-folder) holds an image file."""
    if not folder.is_dir():
        return False
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*") if p.is_file())
