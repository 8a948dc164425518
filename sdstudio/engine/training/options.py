"""What a training run is asked to do: one frozen record per run, with kohya's names.

The options shared by every kind of training (data, schedule, precision, saving) live
in :class:`TrainingOptions`; a trainer adds its own (LoRA's rank and alpha) in a
record of its own that holds these. Checking happens once, here, with sentences a
user can act on.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.training.datasets import BucketOptions, CaptionOptions

LR_SCHEDULERS = ("constant", "constant_with_warmup", "cosine", "linear")
OPTIMIZERS = ("AdamW", "AdamW8bit")
MIXED_PRECISIONS = ("no", "fp16", "bf16")


@dataclass(frozen=True, slots=True)
class TrainingOptions:
    """Options every trainer shares."""

    model: Path
    data: Path
    name: str
    output_dir: Path
    """Where the finished file goes (the LoRA folder)."""
    state_dir: Path
    """Where resumable states and sample images go."""
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    max_train_steps: int | None = 1600
    max_train_epochs: int | None = None
    train_batch_size: int = 1
    seed: int = 0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    cache_latents: bool = False
    optimizer: str = "AdamW"
    min_snr_gamma: float | None = None
    noise_offset: float = 0.0
    max_grad_norm: float = 1.0
    save_every_n_steps: int | None = None
    sample_every_n_steps: int | None = None
    sample_prompt: str = ""
    sample_steps: int = 20
    device: str = "auto"
    buckets: BucketOptions = field(default_factory=BucketOptions)
    captions: CaptionOptions = field(default_factory=CaptionOptions)

    def check(self) -> None:
        """Raise :class:`InvalidRequest` for a setting that cannot be trained with."""
        if not self.name or any(c in self.name for c in '/\\:*?"<>|') or self.name in (".", ".."):
            raise InvalidRequest(
                f"--name {self.name!r} must be a plain file name (no slashes or wildcards)."
            )
        if self.learning_rate <= 0:
            raise InvalidRequest("--learning-rate must be above 0.")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise InvalidRequest(
                f"Unknown --lr-scheduler {self.lr_scheduler!r}; choose {', '.join(LR_SCHEDULERS)}."
            )
        if self.optimizer not in OPTIMIZERS:
            raise InvalidRequest(
                f"Unknown --optimizer {self.optimizer!r}; choose {', '.join(OPTIMIZERS)}."
            )
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise InvalidRequest(
                f"Unknown --mixed-precision {self.mixed_precision!r}; "
                f"choose {', '.join(MIXED_PRECISIONS)}."
            )
        if self.optimizer == "AdamW8bit" and importlib.util.find_spec("bitsandbytes") is None:
            raise InvalidRequest(
                "--optimizer AdamW8bit needs the bitsandbytes package, which is not "
                "installed: install it, or use --optimizer AdamW."
            )
        _positive("--train-batch-size", self.train_batch_size)
        _positive("--max-train-steps", self.max_train_steps)
        _positive("--max-train-epochs", self.max_train_epochs)
        _positive("--save-every-n-steps", self.save_every_n_steps)
        _positive("--sample-every-n-steps", self.sample_every_n_steps)
        _positive("--sample-steps", self.sample_steps)
        if self.max_train_steps is None and self.max_train_epochs is None:
            raise InvalidRequest("Give --max-train-steps or --max-train-epochs.")
        if self.lr_warmup_steps < 0:
            raise InvalidRequest("--lr-warmup-steps cannot be negative.")
        if self.min_snr_gamma is not None and self.min_snr_gamma <= 0:
            raise InvalidRequest("--min-snr-gamma must be above 0 (kohya recommends 5).")
        if not 0 <= self.noise_offset <= 1:
            raise InvalidRequest("--noise-offset must be between 0 and 1 (0.05 to 0.1 is usual).")
        if not 0 <= self.captions.caption_dropout_rate <= 1:
            raise InvalidRequest("--caption-dropout-rate must be between 0 and 1.")
        if self.captions.keep_tokens < 0:
            raise InvalidRequest("--keep-tokens cannot be negative.")
        if self.sample_every_n_steps and not self.sample_prompt.strip():
            raise InvalidRequest("--sample-every-n-steps needs a --sample-prompt.")
        self.buckets.check()


@dataclass(frozen=True, slots=True)
class LoraOptions:
    """A LoRA run: the shared options plus the network's own."""

    base: TrainingOptions
    network_dim: int = 16
    network_alpha: float = 1.0
    unet_lr: float | None = None
    """The UNet's learning rate (default: ``learning_rate``)."""
    text_encoder_lr: float | None = None
    """The text encoders' learning rate (default: ``learning_rate``)."""
    train_text_encoder: bool = False
    conv_dim: int | None = None
    """kohya's ``network_args conv_dim``: also adapt the resnets' 3 x 3 convolutions
    (LoCon) at this rank."""
    conv_alpha: float = 1.0
    clip_skip: int = 1
    """Condition on the text encoder's N-th last layer (SD 1.x/2.x), as generation does."""
    flip_aug: bool = False
    """Show each image mirrored at random steps (kohya's ``--flip_aug``)."""
    color_aug: bool = False
    """Shift hue or gamma at random steps (kohya's ``--color_aug``; not with cached latents)."""

    def check(self) -> None:
        """Raise :class:`InvalidRequest` for a setting that cannot be trained with."""
        self.base.check()
        if self.conv_dim is not None and not 1 <= self.conv_dim <= 1024:
            raise InvalidRequest("--network-args conv_dim must be between 1 and 1024.")
        if self.conv_alpha <= 0:
            raise InvalidRequest("--network-args conv_alpha must be above 0 (kohya: 1).")
        if not 1 <= self.clip_skip <= 12:
            raise InvalidRequest("--clip-skip must be between 1 (the last layer) and 12.")
        if self.color_aug and self.base.cache_latents:
            raise InvalidRequest(
                "--color-aug changes the pixels at every step, so their latents cannot be "
                "cached: leave out --cache-latents or --color-aug."
            )
        if not 1 <= self.network_dim <= 1024:
            raise InvalidRequest("--network-dim (the LoRA rank) must be between 1 and 1024.")
        if self.network_alpha <= 0:
            raise InvalidRequest("--network-alpha must be above 0 (kohya's default is 1).")
        for flag, value in (
            ("--unet-lr", self.unet_lr),
            ("--text-encoder-lr", self.text_encoder_lr),
        ):
            if value is not None and value <= 0:
                raise InvalidRequest(f"{flag} must be above 0.")
        if self.text_encoder_lr is not None and not self.train_text_encoder:
            raise InvalidRequest("--text-encoder-lr needs --train-text-encoder.")

    def record(self) -> dict[str, Any]:
        """The options as plain JSON values (kept with a saved state, compared on resume)."""
        return _plain(dataclasses.asdict(self))


RESUME_MUST_MATCH = (
    "network_dim",
    "network_alpha",
    "train_text_encoder",
    "conv_dim",
    "conv_alpha",
    "clip_skip",
    "flip_aug",
    "color_aug",
    "base.model",
    "base.data",
    "base.seed",
    "base.train_batch_size",
    "base.max_train_steps",
    "base.max_train_epochs",
    "base.buckets",
    "base.captions",
    "base.cache_latents",
    "base.lr_scheduler",
    "base.lr_warmup_steps",
    "base.optimizer",
    "num_vectors",
    "init_text",
    "template_lines",
    "dreamartist",
    "dreamartist_cfg",
    "dreamartist_rec_weight",
    "layer_structure",
    "activation",
    "layer_norm",
    "dropout",
    "weight_init",
    "sizes",
    "class_prompt",
    "class_data_dir",
    "num_class_images",
    "prior_loss_weight",
)
"""What a resumed run must share with the run it continues to give the same result."""


def resume_mismatches(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The options (dotted names) whose values differ between a saved run and this one."""
    found = []
    missing = object()
    for name in RESUME_MUST_MATCH:
        a: Any = saved
        b: Any = current
        for part in name.split("."):
            a = a.get(part, missing) if isinstance(a, dict) else missing
            b = b.get(part) if isinstance(b, dict) else None
        if a is missing and (b is None or (name in _LATER_OPTIONS and _LATER_OPTIONS[name] == b)):
            continue  # not an option of this kind, or one added since, at its default
        if a is missing or a != b:
            found.append(name.rsplit(".", 1)[-1])
    return found


_LATER_OPTIONS: dict[str, Any] = {
    "conv_dim": None,
    "conv_alpha": 1.0,
    "clip_skip": 1,
    "flip_aug": False,
    "color_aug": False,
}
"""Options added after states were first saved, with their defaults: a state saved
before them resumes when they are left at these values."""


def _positive(flag: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise InvalidRequest(f"{flag} must be at least 1.")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value
