"""DreamBooth for SD 1.x, SD 2.x and SDXL: the whole UNet (and, if asked, the text
encoders) fine-tuned on a subject, written as one checkpoint: :func:`train_dreambooth`.

Each step predicts the noise (or v) added to the subject's latents, as LoRA training
does, with the same Min-SNR weighting and noise offset. With prior preservation a
batch of class images goes beside it, through the same model, and the loss is the
subject's loss plus ``prior_loss_weight`` times the class images' loss (diffusers'
``train_dreambooth`` semantics). The trained weights stay in float32 whatever the
mixed precision; the finished checkpoint is written at ``--save-precision``.

Every random draw comes from generators seeded by the run's seed and the step, so a
run resumed from a saved state ends with the weights of the uninterrupted run.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import torch

from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.fileio import write_atomically
from sdstudio.engine.training.class_images import (
    CLASS_SEED_OFFSET,
    class_data,
    ensure_class_images,
    generate_image,
)
from sdstudio.engine.training.data import TrainingData
from sdstudio.engine.training.dataset_trainer import DatasetTrainer
from sdstudio.engine.training.dreambooth_options import SAVE_PRECISIONS, DreamboothOptions
from sdstudio.engine.training.events import CancelFlag, EventSink, Notice
from sdstudio.engine.training.loop import run_training, total_steps
from sdstudio.engine.training.memory_check import check_dreambooth_memory
from sdstudio.engine.training.model import TrainingModel
from sdstudio.engine.training.original_layout import write_checkpoint


class DreamboothTrainer(DatasetTrainer):
    """Loads the model and the data (generating missing class images), unfreezes what is
    trained, and gives the loop what it asks."""

    kind = "dreambooth"

    def __init__(
        self,
        dreambooth: DreamboothOptions,
        *,
        on_event: EventSink,
        cancel: CancelFlag | None = None,
        model: TrainingModel | None = None,
    ) -> None:
        """``model``: one already loaded (as :func:`load_training_model` gives it); without
        it the options' model is loaded. A ``cancel`` while class images are generated
        leaves :attr:`class_data` unset: the loop then saves a state at step 0 at once."""
        dreambooth.check()
        self.dreambooth = dreambooth
        self.options = base = dreambooth.base
        self._load(base, on_event, model)
        self._check_prediction("DreamBooth")
        self.class_data: TrainingData | None = None
        if dreambooth.prior_preservation and ensure_class_images(
            self.model, dreambooth, on_event=on_event, cancel=cancel
        ):
            self.class_data = class_data(dreambooth, on_event=on_event)
        unet = self.model.pipe.unet
        if unet.dtype != torch.float32:
            unet.to(torch.float32)  # an optimizer cannot step half-precision weights well
        unet.requires_grad_(True)
        unet.train()
        if base.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        if dreambooth.train_text_encoder:
            for _prefix, _tokenizer, encoder in self.model.text_encoders():
                if encoder.dtype != torch.float32:
                    encoder.to(torch.float32)
                encoder.requires_grad_(True)
                encoder.train()
                if base.gradient_checkpointing:
                    encoder.gradient_checkpointing_enable()
        if base.cache_latents:
            on_event(Notice(message=f"Caching the latents of {self.image_count} images…"))
            self.data.cache_latents(self.model)
            if self.class_data is not None:
                self.class_data.cache_latents(self.model)
        self.started_at = time.time()
        self.steps, self.epochs = total_steps(base, self.data.batches_per_epoch)

    def _trained(self) -> dict[str, Any]:
        """The trained modules by the prefix their weights are saved under."""
        pipe = self.model.pipe
        modules: dict[str, Any] = {"unet": pipe.unet}
        if self.dreambooth.train_text_encoder:
            modules["text_encoder"] = pipe.text_encoder
            if self.model.is_sdxl:
                modules["text_encoder_2"] = pipe.text_encoder_2
        return modules

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The UNet at ``--learning-rate``, the text encoders at ``--text-encoder-lr``."""
        base_lr = self.options.learning_rate
        modules = self._trained()
        groups = [{"params": list(modules.pop("unet").parameters()), "lr": base_lr}]
        text = [p for module in modules.values() for p in module.parameters()]
        if text:
            groups.append({"params": text, "lr": self.dreambooth.text_encoder_lr or base_lr})
        return groups

    def loss(self, step: int) -> torch.Tensor:
        """The subject's denoising loss, plus the class images' times the prior weight
        (their noise drawn from generators of their own)."""
        train_text = self.dreambooth.train_text_encoder
        loss = self.denoising_loss(step, train_text=train_text)
        if self.class_data is not None:
            seed = self.options.seed + CLASS_SEED_OFFSET
            prior = self.denoising_loss(
                step, data=self.class_data, seed=seed, train_text=train_text
            )
            loss = loss + self.dreambooth.prior_loss_weight * prior
        return loss

    def record(self) -> dict[str, Any]:
        """The options as plain values, kept with a state."""
        return self.dreambooth.record()

    def weights(self) -> dict[str, torch.Tensor]:
        """Every trained weight in float32, as ``unet.…`` and ``text_encoder.…``."""
        return {
            f"{prefix}.{name}": tensor.detach()
            for prefix, module in self._trained().items()
            for name, tensor in module.state_dict().items()
        }

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Put saved weights back (all of them: a state of another model is refused)."""
        for prefix, module in self._trained().items():
            part = {
                name.removeprefix(f"{prefix}."): tensor
                for name, tensor in weights.items()
                if name.startswith(f"{prefix}.")
            }
            try:
                module.load_state_dict(part, strict=True)
            except RuntimeError as error:
                raise ModelError(
                    f"The saved state's {prefix} weights do not fit this model: "
                    f"{str(error).splitlines()[0]}"
                ) from None

    def snapshot(self, step: int) -> dict[str, bytes]:
        """Nothing besides the loop's files: the state's weights are the model itself."""
        return {}

    def sample(self, step: int, path: Path) -> None:
        """An image of ``--sample-prompt`` from the model as it is, from a fixed seed."""
        base = self.options
        image = generate_image(
            self.model,
            prompt=base.sample_prompt,
            seed=base.seed,
            steps=base.sample_steps,
            size=base.buckets.resolution,
            mixed_precision=base.mixed_precision,
        )
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        write_atomically(path, buffer.getvalue())

    def finish(self, steps: int) -> Path:
        """Write ``NAME.safetensors`` (the whole pipeline) into the output folder."""
        options, base = self.dreambooth, self.options
        dtype = getattr(torch, SAVE_PRECISIONS[options.save_precision])
        facts = {
            "sdstudio.dreambooth.base_model": self.model.model_name,
            "sdstudio.dreambooth.steps": str(steps),
            "sdstudio.dreambooth.instance_images": str(self.image_count),
            "sdstudio.dreambooth.class_prompt": options.class_prompt,
            "sdstudio.dreambooth.class_images": str(
                len(self.class_data.dataset.images) if self.class_data else 0
            ),
            "sdstudio.dreambooth.prior_loss_weight": str(options.prior_loss_weight),
            "sdstudio.dreambooth.train_text_encoder": str(options.train_text_encoder).lower(),
            "sdstudio.dreambooth.learning_rate": str(base.learning_rate),
            "sdstudio.dreambooth.resolution": "x".join(map(str, base.buckets.resolution)),
            "sdstudio.dreambooth.seed": str(base.seed),
            "sdstudio.dreambooth.started_at": str(int(self.started_at)),
        }
        return write_checkpoint(
            self.model.pipe,
            options.checkpoint_path,
            dtype=dtype,
            metadata=facts,
            family=self.model.family,
        )


def train_dreambooth(
    options: DreamboothOptions,
    *,
    on_event: EventSink,
    cancel: CancelFlag | None = None,
    resume: Path | None = None,
) -> Path | None:
    """Check the memory (unless ``skip_memory_check``), then fine-tune; returns the written
    checkpoint, or ``None`` when cancelled (its state saved)."""
    options.check()
    verdict = check_dreambooth_memory(options)
    on_event(Notice(message=verdict.message))
    if not verdict.enough and not options.skip_memory_check:
        raise InvalidRequest(verdict.message)
    trainer = DreamboothTrainer(options, on_event=on_event, cancel=cancel)
    return run_training(trainer, on_event=on_event, cancel=cancel, resume=resume)
