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

    def noised(
        self, step: int, data: TrainingData | None = None, seed: int | None = None
    ) -> NoisedBatch:
        """The step's batch of ``data`` (the run's dataset by default), its noise (with the
        offset) and timesteps, drawn from the generator of ``seed`` (the run's) and the
        step, and its latents noised with them."""
        import torch

        model, base = self.model, self.options
        data = self.data if data is None else data
        batch = data.batch_at(step)
        latents, fitted = data.latents_at(step, batch, model)
        generator = step_generator(base.seed if seed is None else seed, step, stream=2)
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

    def denoising_loss(
        self,
        step: int,
        *,
        data: TrainingData | None = None,
        seed: int | None = None,
        train_text: bool = False,
        clip_skip: int = 1,
        hidden_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """The UNet's loss predicting the noise (or v) of :meth:`noised`'s batch, with
        Min-SNR-γ weights when asked; gradients reach the text encoders when
        ``train_text``."""
        import torch

        model = self.model
        noised = self.noised(step, data, seed)
        latents, noise, timesteps = noised.latents, noised.noise, noised.timesteps
        captions = (self.data if data is None else data).captions_at(step, noised.batch)
        with torch.set_grad_enabled(train_text):
            hidden, added = model.condition(
                captions, noised.fitted, noised.batch.bucket, clip_skip=clip_skip
            )
        if hidden_dtype is not None:
            hidden = hidden.to(hidden_dtype)
        prediction = model.pipe.unet(
            noised.noisy, timesteps, hidden, added_cond_kwargs=added
        ).sample
        scheduler = model.noise_scheduler
        target = scheduler.get_velocity(latents, noise, timesteps) if model.v_prediction else noise
        loss = torch.nn.functional.mse_loss(prediction.float(), target.float(), reduction="none")
        loss = loss.mean(dim=[1, 2, 3])
        if self.options.min_snr_gamma is not None:
            loss = loss * self._snr_weights(timesteps)
        return loss.mean()

    def _snr_weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Min-SNR-γ weights (Hang et al. 2023, as kohya applies them)."""
        import torch

        alphas = self.model.noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
        snr = alphas / (1 - alphas)
        gamma = torch.full_like(snr, float(self.options.min_snr_gamma or 0))
        clipped = torch.minimum(snr, gamma)
        return (clipped / (snr + 1) if self.model.v_prediction else clipped / snr).float()

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
