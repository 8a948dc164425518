"""The training loop every trainer shares: optimizer, schedule, steps, saving, cancel.

A trainer (:class:`Trainer`) knows its model and what it trains: it gives parameter
groups, a loss for a step, its weights to save and load, a sample image and the final
file. The loop owns everything else: the optimizer and learning-rate schedule (kohya's
names), mixed precision, gradient clipping, resumable states every N steps and on
cancel, sample images, and the events that report it all.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Protocol

import torch

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.training import checkpoints
from sdstudio.engine.training.events import (
    CancelFlag,
    Cancelled,
    Checkpoint,
    Done,
    EventSink,
    Sample,
    Started,
    Step,
)
from sdstudio.engine.training.options import TrainingOptions, resume_mismatches

log = logging.getLogger(__name__)


class Trainer(Protocol):
    """What a kind of training gives the loop."""

    kind: str
    """``lora`` (later ``embedding``, ``dreambooth``, ``hypernetwork``): a saved state
    resumes only a run of its kind."""
    options: TrainingOptions

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        ...

    @property
    def batches_per_epoch(self) -> int:
        """Steps in one epoch."""
        ...

    @property
    def image_count(self) -> int:
        """Images trained on (before repeats)."""
        ...

    @property
    def skipped(self) -> list[str]:
        """Why files of the dataset are not trained on."""
        ...

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (``params`` and ``lr``)."""
        ...

    def loss(self, step: int) -> torch.Tensor:
        """The loss of ``step`` (0-based), a scalar with gradients."""
        ...

    def record(self) -> dict[str, Any]:
        """The run's options as plain values, kept with a state."""
        ...

    def weights(self) -> dict[str, torch.Tensor]:
        """The trained weights, by stable names."""
        ...

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Put saved weights back."""
        ...

    def snapshot(self, step: int) -> dict[str, bytes]:
        """Files to keep in a state folder besides the loop's (a usable network file)."""
        ...

    def sample(self, step: int, path: Path) -> None:
        """Make the sample image of ``step`` and write it to ``path``."""
        ...

    def finish(self, steps: int) -> Path:
        """Write the finished network and return its path."""
        ...


def total_steps(options: TrainingOptions, batches_per_epoch: int) -> tuple[int, int]:
    """(steps, epochs): ``--max-train-epochs`` wins over ``--max-train-steps``, as in kohya."""
    if options.max_train_epochs is not None:
        return options.max_train_epochs * batches_per_epoch, options.max_train_epochs
    assert options.max_train_steps is not None
    return options.max_train_steps, math.ceil(options.max_train_steps / batches_per_epoch)


def make_optimizer(name: str, groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """AdamW, or bitsandbytes' AdamW8bit when it is installed."""
    if name == "AdamW8bit":
        try:
            import bitsandbytes
        except ImportError:
            raise InvalidRequest(
                "--optimizer AdamW8bit needs the bitsandbytes package, which is not "
                "installed: install it, or use --optimizer AdamW."
            ) from None
        optimizer: torch.optim.Optimizer = bitsandbytes.optim.AdamW8bit(groups, lr=lr)
        return optimizer
    return torch.optim.AdamW(groups, lr=lr)


def make_schedule(options: TrainingOptions, optimizer: torch.optim.Optimizer, steps: int) -> Any:
    """The learning-rate schedule (diffusers' implementations of kohya's names)."""
    from diffusers.optimization import get_scheduler

    return get_scheduler(
        options.lr_scheduler,
        optimizer,
        num_warmup_steps=options.lr_warmup_steps,
        num_training_steps=steps,
    )


def run_training(
    trainer: Trainer,
    *,
    on_event: EventSink,
    cancel: CancelFlag | None = None,
    resume: Path | None = None,
) -> Path | None:
    """Train to the end and return the finished file, or ``None`` when cancelled (its
    state then saved and reported by a :class:`Cancelled` event)."""
    options = trainer.options
    cancel = cancel or CancelFlag()
    steps, epochs = total_steps(options, trainer.batches_per_epoch)
    params = [p for group in trainer.parameter_groups() for p in group["params"]]
    optimizer = make_optimizer(options.optimizer, trainer.parameter_groups(), options.learning_rate)
    schedule = make_schedule(options, optimizer, steps)
    fp16 = options.mixed_precision == "fp16"
    scaler = torch.amp.GradScaler(trainer.device.type, enabled=fp16)
    start = 0
    if resume is not None:
        saved = checkpoints.load_state(resume, trainer.kind)
        different = resume_mismatches(saved.options, trainer.record())
        if different:
            raise InvalidRequest(
                f"The state {saved.path} was saved by a run with other settings "
                f"({', '.join(different)}); resume with the same ones."
            )
        trainer.load_weights(saved.weights)
        optimizer.load_state_dict(saved.training["optimizer"])
        schedule.load_state_dict(saved.training["scheduler"])
        scaler.load_state_dict(saved.training["scaler"])
        checkpoints.restore_rng(saved.training)
        start = saved.step
        if start >= steps:
            raise InvalidRequest(f"The state {saved.path} is already at its last step ({steps}).")

    def save(step: int) -> Path:
        return checkpoints.save_state(
            options.state_dir,
            step=step,
            kind=trainer.kind,
            options=trainer.record(),
            weights=trainer.weights(),
            training={
                "optimizer": optimizer.state_dict(),
                "scheduler": schedule.state_dict(),
                "scaler": scaler.state_dict(),
            },
            extra_files=trainer.snapshot(step),
        )

    on_event(
        Started(
            steps=steps,
            start_step=start,
            epochs=epochs,
            images=trainer.image_count,
            skipped=list(trainer.skipped),
            device=str(trainer.device),
        )
    )
    began = time.perf_counter()
    for step in range(start, steps):
        if cancel.is_set():
            path = save(step)
            on_event(Cancelled(path=str(path), step=step))
            return None
        lr = float(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(trainer.device, options.mixed_precision):
            loss = trainer.loss(step)
        if not torch.isfinite(loss):
            raise InvalidRequest(
                f"The loss became {loss.item()} at step {step + 1}: lower the learning rate, "
                "or use --mixed-precision bf16 or no."
            )
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        if options.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, options.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        done = step + 1
        rate = (done - start) / max(time.perf_counter() - began, 1e-9)
        on_event(
            Step(
                step=done,
                steps=steps,
                loss=float(loss.item()),
                lr=lr,
                it_s=round(rate, 4),
                eta_s=round((steps - done) / rate, 1),
            )
        )
        if options.save_every_n_steps and done % options.save_every_n_steps == 0 and done < steps:
            on_event(Checkpoint(path=str(save(done)), step=done))
        if options.sample_every_n_steps and done % options.sample_every_n_steps == 0:
            sample = options.state_dir / "samples" / f"{options.name}-step{done:06d}.png"
            trainer.sample(done, sample)
            on_event(Sample(path=str(sample), step=done))
    path = trainer.finish(steps)
    on_event(Done(path=str(path), steps=steps))
    return path


def autocast_for(device: torch.device, mixed_precision: str) -> AbstractContextManager[Any]:
    """Autocast for ``--mixed-precision`` (nothing for ``no``)."""
    if mixed_precision == "no":
        return nullcontext()
    dtype = torch.float16 if mixed_precision == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)
