"""What every trainer does with its model and dataset: loading them, telling the
training loop about them (the :class:`~sdstudio.engine.training.loop.Trainer`
protocol's common part), and noising a step's batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdstudio.engine.errors import ModelError
from sdstudio.engine.training.data import TrainingData, step_generator
from sdstudio.engine.training.datasets import scan_dataset
from sdstudio.engine.training.events import EventSink, Notice
from sdstudio.engine.training.model import TrainingModel, load_training_model

if TYPE_CHECKING:
    import torch

    from sdstudio.engine.training.options import TrainingOptions


@dataclass(frozen=True, slots=True)
class NoisedBatch:
    """A step's batch with the noise the step adds to its latents."""

    batch: Any
    latents: torch.Tensor
    fitted: Any
    """The batch's images as fitted to their bucket (SDXL's size conditioning reads them)."""
    noise: torch.Tensor
    timesteps: torch.Tensor
    noisy: torch.Tensor


class DatasetTrainer:
    """A base of the trainers: a loaded :attr:`model` trained on :attr:`data`."""

    model: TrainingModel
    data: TrainingData
    options: TrainingOptions

    def _load(
        self, base: TrainingOptions, on_event: EventSink, model: TrainingModel | None
    ) -> None:
        """Read the dataset (each file left out is a notice) and load the model (unless
        ``model`` is one already loaded)."""
        dataset = scan_dataset(base.data)
        for message in dataset.skipped:
            on_event(Notice(message=message))
        self.data = TrainingData(
            dataset, base.buckets, base.captions, batch_size=base.train_batch_size, seed=base.seed
        )
        self.model = model or load_training_model(
            base.model,
            device=base.device,
            mixed_precision=base.mixed_precision,
            on_status=lambda message: on_event(Notice(message=message)),
        )

    def _check_prediction(self, what: str) -> None:
        """Refuse a model that predicts neither the noise nor v."""
        prediction = self.model.noise_scheduler.config.prediction_type
        if prediction not in ("epsilon", "v_prediction"):
            raise ModelError(
                f"{self.model.model_name} predicts {prediction!r}; {what} training takes "
                "models that predict the noise (epsilon) or v."
            )

    def noised(self, step: int) -> NoisedBatch:
        """The step's batch, its noise (with the offset) and timesteps, drawn from the
        step's own generator, and its latents noised with them."""
        import torch

        model, base = self.model, self.options
        batch = self.data.batch_at(step)
        latents, fitted = self.data.latents_at(step, batch, model)
        generator = step_generator(base.seed, step, stream=2)
        noise = torch.randn(latents.shape, generator=generator)
        if base.noise_offset:
            shape = (latents.shape[0], latents.shape[1], 1, 1)
            noise = noise + base.noise_offset * torch.randn(shape, generator=generator)
        scheduler = model.noise_scheduler
        count = scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, count, (latents.shape[0],), generator=generator)
        noise = noise.to(model.device, latents.dtype)
        timesteps = timesteps.to(model.device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        return NoisedBatch(batch, latents, fitted, noise, timesteps, noisy)

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return self.model.device

    @property
    def batches_per_epoch(self) -> int:
        """Steps in one epoch."""
        return self.data.batches_per_epoch

    @property
    def image_count(self) -> int:
        """Images trained on (before repeats)."""
        return len(self.data.dataset.images)

    @property
    def skipped(self) -> list[str]:
        """Why files of the dataset are not trained on."""
        return self.data.dataset.skipped
