"""The finished LoRA file: kohya's tensors and kohya's ``ss_*`` training metadata.

Metadata values are strings, as kohya's sd-scripts write them (``str()`` of the value,
JSON for the dataset records), so tools that show training details (A1111's and
ComfyUI's LoRA info, civitai) read sdstudio's files as they read kohya's.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdstudio.engine.fileio import write_atomically
from sdstudio.engine.training.datasets import Dataset, bucket_info
from sdstudio.engine.training.options import LoraOptions

NETWORK_MODULE = "networks.lora"


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What the metadata records beyond the options."""

    base_model_version: str
    model_name: str
    started_at: float
    batches_per_epoch: int
    epochs: int
    steps: int
    session_id: str = ""


def new_session_id() -> str:
    """kohya's ``ss_session_id``: a random number identifying one run."""
    return str(uuid.uuid4().int % 2**31)


def lora_metadata(
    options: LoraOptions,
    facts: RunFacts,
    dataset: Dataset,
    buckets: dict[int, tuple[int, int]],
    *,
    steps_done: int,
    epoch: int,
) -> dict[str, str]:
    """The ``ss_*`` metadata of a LoRA file (kohya's names and string forms)."""
    base = options.base
    text_lr = options.text_encoder_lr if options.train_text_encoder else None
    values: dict[str, Any] = {
        "ss_session_id": facts.session_id,
        "ss_training_started_at": facts.started_at,
        "ss_training_finished_at": time.time(),
        "ss_output_name": base.name,
        "ss_learning_rate": base.learning_rate,
        "ss_text_encoder_lr": text_lr,
        "ss_unet_lr": options.unet_lr,
        "ss_num_train_images": dataset.steps_per_epoch_images,
        "ss_num_reg_images": 0,
        "ss_num_batches_per_epoch": facts.batches_per_epoch,
        "ss_num_epochs": facts.epochs,
        "ss_batch_size_per_device": base.train_batch_size,
        "ss_total_batch_size": base.train_batch_size,
        "ss_gradient_checkpointing": base.gradient_checkpointing,
        "ss_gradient_accumulation_steps": 1,
        "ss_max_train_steps": facts.steps,
        "ss_lr_warmup_steps": base.lr_warmup_steps,
        "ss_lr_scheduler": base.lr_scheduler,
        "ss_network_module": NETWORK_MODULE,
        "ss_network_dim": options.network_dim,
        "ss_network_alpha": options.network_alpha,
        "ss_network_dropout": None,
        "ss_mixed_precision": base.mixed_precision,
        "ss_full_fp16": False,
        "ss_v2": facts.base_model_version == "sd_v2",
        "ss_base_model_version": facts.base_model_version,
        "ss_clip_skip": options.clip_skip if options.clip_skip > 1 else None,
        "ss_max_token_length": None,
        "ss_cache_latents": base.cache_latents,
        "ss_seed": base.seed,
        "ss_noise_offset": base.noise_offset or None,
        "ss_min_snr_gamma": base.min_snr_gamma,
        "ss_optimizer": _optimizer_name(base.optimizer),
        "ss_max_grad_norm": base.max_grad_norm,
        "ss_caption_dropout_rate": base.captions.caption_dropout_rate,
        "ss_prior_loss_weight": 1.0,
        "ss_resolution": tuple(base.buckets.resolution),
        "ss_color_aug": options.color_aug,
        "ss_flip_aug": options.flip_aug,
        "ss_random_crop": False,
        "ss_shuffle_caption": base.captions.shuffle_caption,
        "ss_enable_bucket": base.buckets.enable_bucket,
        "ss_bucket_no_upscale": False,
        "ss_min_bucket_reso": base.buckets.min_bucket_reso,
        "ss_max_bucket_reso": base.buckets.max_bucket_reso,
        "ss_keep_tokens": base.captions.keep_tokens,
        "ss_sd_model_name": facts.model_name,
        "ss_steps": steps_done,
        "ss_epoch": epoch,
    }
    metadata = {key: str(value) for key, value in values.items()}
    if options.conv_dim is not None:
        # kohya records --network_args as given: each value a string
        metadata["ss_network_args"] = json.dumps(
            {"conv_dim": str(options.conv_dim), "conv_alpha": f"{options.conv_alpha:g}"}
        )
    metadata["ss_dataset_dirs"] = json.dumps(
        {
            folder: {"n_repeats": repeats, "img_count": count}
            for folder, (repeats, count) in dataset.folders.items()
        }
    )
    metadata["ss_reg_dataset_dirs"] = json.dumps({})
    metadata["ss_tag_frequency"] = json.dumps(dataset.tag_frequency())
    metadata["ss_bucket_info"] = json.dumps(bucket_info(dataset, buckets))
    return metadata


def lora_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A safetensors file's bytes."""
    from safetensors.torch import save

    return bytes(save(tensors, metadata=metadata))


def write_lora(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write the file atomically (it appears whole or not at all) and return its path."""
    return write_atomically(path, lora_bytes(tensors, metadata))


def _optimizer_name(name: str) -> str:
    return (
        "bitsandbytes.optim.adamw.AdamW8bit" if name == "AdamW8bit" else "torch.optim.adamw.AdamW"
    )
