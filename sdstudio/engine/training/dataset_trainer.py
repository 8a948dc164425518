"""What every trainer says about its model and dataset to the training loop (the
:class:`~sdstudio.engine.training.loop.Trainer` protocol's common part)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from sdstudio.engine.training.data import TrainingData
    from sdstudio.engine.training.model import TrainingModel


class DatasetTrainer:
    """A base of the trainers: a loaded :attr:`model` trained on :attr:`data`."""

    model: TrainingModel
    data: TrainingData

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
