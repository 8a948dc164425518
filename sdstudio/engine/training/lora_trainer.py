"""LoRA training for SD 1.x, SD 2.x and SDXL: the trainer :func:`train_lora` runs.

The model's weights stay frozen; peft LoRA layers where kohya's ``networks.lora`` puts
them (the UNet's transformer blocks; with ``conv_dim`` its resnets; with
``--train-text-encoder`` the text encoders' attention and MLP, see
:mod:`.lora_network`) learn to predict the noise, or v for a v-prediction model, added
to the dataset's latents at a random timestep of the model's own noise schedule.
Optional kohya refinements: Min-SNR weighting (``--min-snr-gamma``), a noise offset
(``--noise-offset``), clip skip, and flip and colour augmentation.

Every random draw of a step (batch order, caption variation, flips, VAE sample, noise,
timesteps) comes from a generator seeded by the run's seed and the step, so on the
CPU a run is reproducible, and a run resumed from a saved state ends with the weights
of the uninterrupted run.
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path
from typing import Any

import torch

from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.fileio import write_atomically
from sdstudio.engine.training.dataset_trainer import DatasetTrainer
from sdstudio.engine.training.events import CancelFlag, EventSink, Notice
from sdstudio.engine.training.loop import autocast_for, run_training, total_steps
from sdstudio.engine.training.lora_file import (
    RunFacts,
    lora_bytes,
    lora_metadata,
    new_session_id,
    write_lora,
)
from sdstudio.engine.training.lora_network import LoraNetwork, add_lora
from sdstudio.engine.training.model import TrainingModel
from sdstudio.engine.training.options import LoraOptions

log = logging.getLogger(__name__)

SAMPLE_GUIDANCE = 7.0


class LoraTrainer(DatasetTrainer):
    """Loads the model and the data, adds the LoRA layers, and gives the loop what it asks."""

    kind = "lora"

    def __init__(
        self, lora: LoraOptions, *, on_event: EventSink, model: TrainingModel | None = None
    ) -> None:
        """``model``: one already loaded (frozen, as :func:`load_training_model` gives it);
        without it the options' model is loaded."""
        lora.check()
        self.lora = lora
        self.options = lora.base
        base = lora.base
        self._load(base, on_event, model)
        self._check_prediction("LoRA")
        if lora.clip_skip > 1 and self.model.is_sdxl:
            raise InvalidRequest(
                "SDXL models have no clip skip (they always read the penultimate layer): "
                "leave out --clip-skip."
            )
        self.network: LoraNetwork = add_lora(
            self.model,
            rank=lora.network_dim,
            alpha=lora.network_alpha,
            train_text_encoder=lora.train_text_encoder,
            seed=base.seed,
            conv_dim=lora.conv_dim,
            conv_alpha=lora.conv_alpha,
        )
        self.data.flip_aug = lora.flip_aug
        self.data.color_aug = lora.color_aug
        if base.gradient_checkpointing:
            self.model.pipe.unet.enable_gradient_checkpointing()
        if lora.train_text_encoder:
            for _prefix, _tokenizer, encoder in self.model.text_encoders():
                if base.gradient_checkpointing:
                    encoder.gradient_checkpointing_enable()
                encoder.train()  # CLIP checkpoints only in training mode (its dropout is 0)
        if base.cache_latents:
            on_event(
                Notice(message=f"Caching the latents of {len(self.data.dataset.images)} images…")
            )
            self.data.cache_latents(self.model)
        steps, epochs = total_steps(base, self.data.batches_per_epoch)
        self.facts = RunFacts(
            base_model_version=self.model.base_model_version,
            model_name=self.model.model_name,
            started_at=time.time(),
            batches_per_epoch=self.data.batches_per_epoch,
            epochs=epochs,
            steps=steps,
            session_id=new_session_id(),
        )

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The UNet's layers at ``--unet-lr``, the text encoders' at ``--text-encoder-lr``
        (each ``--learning-rate`` by default)."""
        base_lr = self.options.learning_rate
        groups = [{"params": self.network.parameters("unet"), "lr": self.lora.unet_lr or base_lr}]
        text = self.network.parameters("text")
        if text:
            groups.append({"params": text, "lr": self.lora.text_encoder_lr or base_lr})
        return groups

    def loss(self, step: int) -> torch.Tensor:
        """The denoising loss of the step's batch."""
        return self.denoising_loss(
            step,
            train_text=self.lora.train_text_encoder,
            clip_skip=self.lora.clip_skip,
            hidden_dtype=self.model.weight_dtype,
        )

    def record(self) -> dict[str, Any]:
        """The options as plain values, kept with a state."""
        return self.lora.record()

    def weights(self) -> dict[str, torch.Tensor]:
        """The LoRA weights in float32, by kohya name."""
        return {name: p.detach().clone() for name, p in self.network.named_parameters().items()}

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Put saved LoRA weights back."""
        try:
            self.network.load_parameters(weights)
        except KeyError as error:
            raise ModelError(
                f"The saved state lacks the weight {error.args[0]!r}: it is of another network."
            ) from None

    def _file_bytes(self, steps_done: int) -> bytes:
        metadata = lora_metadata(
            self.lora,
            self.facts,
            self.data.dataset,
            self.data.buckets,
            steps_done=steps_done,
            epoch=self.data.epoch_of(max(steps_done - 1, 0)) + 1,
        )
        return lora_bytes(self.network.kohya_tensors(), metadata)

    def snapshot(self, step: int) -> dict[str, bytes]:
        """The LoRA file as it stands, kept in the state folder (usable as it is)."""
        return {f"{self.options.name}.safetensors": self._file_bytes(step)}

    def sample(self, step: int, path: Path) -> None:
        """An image of ``--sample-prompt`` with the LoRA as it is, from a fixed seed."""
        width, height = self.options.buckets.resolution
        pipe = self.model.pipe
        generator = torch.Generator("cpu").manual_seed(self.options.seed)
        with torch.no_grad(), autocast_for(self.device, self.options.mixed_precision):
            image = pipe(
                prompt=self.options.sample_prompt,
                num_inference_steps=self.options.sample_steps,
                guidance_scale=SAMPLE_GUIDANCE,
                width=width,
                height=height,
                generator=generator,
            ).images[0]
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        write_atomically(path, buffer.getvalue())

    def finish(self, steps: int) -> Path:
        """Write ``NAME.safetensors`` into the LoRA folder."""
        metadata = lora_metadata(
            self.lora,
            self.facts,
            self.data.dataset,
            self.data.buckets,
            steps_done=steps,
            epoch=self.facts.epochs,
        )
        path = self.options.output_dir / f"{self.options.name}.safetensors"
        return write_lora(path, self.network.kohya_tensors(), metadata)


def train_lora(
    options: LoraOptions,
    *,
    on_event: EventSink,
    cancel: CancelFlag | None = None,
    resume: Path | None = None,
) -> Path | None:
    """Train a LoRA; returns the written file, or ``None`` when cancelled (its state saved)."""
    trainer = LoraTrainer(options, on_event=on_event)
    return run_training(trainer, on_event=on_event, cancel=cancel, resume=resume)
