"""The model a run trains against: loaded as sdstudio loads it for generation, frozen,
with the noise schedule and the text conditioning of its family.

Loading goes through :class:`sdstudio.engine.pipelines.PipelineManager`, so single
files (offline, with the shipped configs) and diffusers folders load exactly as they do
for generation. The noise schedule is the model's own scheduler config turned into
DDPM's (its betas and ``prediction_type``: epsilon or v-prediction).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.training.datasets import Fitted

log = logging.getLogger(__name__)

TRAINABLE_FAMILIES = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
"""Family id -> kohya's ``ss_base_model_version``."""


@dataclass(slots=True)
class TrainingModel:
    """A loaded pipeline and what training needs to know about it."""

    pipe: Any
    family: str
    """``sd1``, ``sd2`` or ``sdxl``."""
    device: torch.device
    weight_dtype: torch.dtype
    noise_scheduler: Any
    model_name: str

    @property
    def is_sdxl(self) -> bool:
        """Whether the model takes SDXL's two text encoders and size conditioning."""
        return self.family == "sdxl"

    @property
    def base_model_version(self) -> str:
        """kohya's ``ss_base_model_version``."""
        return TRAINABLE_FAMILIES[self.family]

    @property
    def v_prediction(self) -> bool:
        """Whether the model predicts v rather than the noise."""
        return bool(self.noise_scheduler.config.prediction_type == "v_prediction")

    def text_encoders(self) -> list[tuple[str, Any, Any]]:
        """(kohya prefix, tokenizer, encoder) for each text encoder."""
        pipe = self.pipe
        if self.is_sdxl:
            return [
                ("lora_te1", pipe.tokenizer, pipe.text_encoder),
                ("lora_te2", pipe.tokenizer_2, pipe.text_encoder_2),
            ]
        return [("lora_te", pipe.tokenizer, pipe.text_encoder)]

    def encode_images(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Latents of a batch of images in [-1, 1], drawn from the VAE's distribution with
        ``generator`` (kohya samples them too), scaled for the UNet."""
        vae = self.pipe.vae
        with torch.no_grad():
            dist = vae.encode(pixels.to(self.device, vae.dtype)).latent_dist
            noise = torch.randn(dist.mean.shape, generator=generator, dtype=torch.float32)
            latents = dist.mean + dist.std * noise.to(dist.mean.device, dist.mean.dtype)
        return (latents * vae.config.scaling_factor).to(self.weight_dtype)

    def condition(
        self,
        captions: Sequence[str],
        fitted: Sequence[Fitted],
        bucket: tuple[int, int],
        *,
        clip_skip: int = 1,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """The UNet's text conditioning for ``captions``; for SDXL also its pooled text and
        size conditioning. Gradients flow into text encoders that are being trained.

        ``clip_skip`` N > 1 (SD 1.x/2.x) takes the N-th last layer's output through the
        final layer norm, as generation's clip skip and kohya's ``--clip_skip`` do."""
        states = []
        pooled = None
        for _prefix, tokenizer, encoder in self.text_encoders():
            ids = tokenizer(
                list(captions),
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(self.device)
            if not self.is_sdxl and clip_skip > 1:
                hidden_states = encoder(ids, output_hidden_states=True).hidden_states
                skipped = hidden_states[-min(clip_skip, len(hidden_states))]
                # transformers 5's CLIPTextModel has no ``text_model`` wrapper; older ones do
                states.append(getattr(encoder, "text_model", encoder).final_layer_norm(skipped))
                continue
            if not self.is_sdxl:
                states.append(encoder(ids)[0])
                continue
            out = encoder(ids, output_hidden_states=True)
            states.append(out.hidden_states[-2])
            pooled = out[0]  # the projected text embeds of the second encoder
        hidden = torch.cat(states, dim=-1) if len(states) > 1 else states[0]
        if not self.is_sdxl:
            return hidden, None
        width, height = bucket
        ids_rows = [[*f.original_size, *f.crop_top_left, height, width] for f in fitted]
        time_ids = torch.tensor(ids_rows, dtype=hidden.dtype, device=self.device)
        assert pooled is not None
        return hidden, {"text_embeds": pooled, "time_ids": time_ids}


def load_training_model(
    path: Path,
    *,
    device: str,
    mixed_precision: str,
    on_status: Callable[[str], None] | None = None,
) -> TrainingModel:
    """Load the model at ``path`` (a single file or a diffusers folder), every weight frozen.

    Raises :class:`ModelError` for a model that is not SD 1.x, SD 2.x or SDXL, and
    :class:`InvalidRequest` for a mixed precision the device cannot run.
    """
    from diffusers import DDPMScheduler

    from sdstudio.engine.devices import DeviceConfig, choose_device
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.engine.request import Mode

    chosen = choose_device(device, "float32")
    weight_dtype = _weight_dtype(mixed_precision, chosen.device)
    precision = str(weight_dtype).removeprefix("torch.")
    config = DeviceConfig(chosen.device, precision, chosen_precision=precision)
    manager = PipelineManager(config, memory_mode="fast")
    pipe = manager.pipeline(str(path), Mode.TXT2IMG, on_status)
    loaded = manager.model
    assert loaded is not None
    family = loaded.family.id
    if family not in TRAINABLE_FAMILIES or loaded.inpainting:
        kind = "an inpainting model" if loaded.inpainting else f"a {loaded.family.label} model"
        raise ModelError(
            f"{loaded.name} is {kind}; training takes SD 1.x, SD 2.x or SDXL base models."
        )
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, part, None)
        if module is not None:
            module.requires_grad_(False)
            module.eval()
    if pipe.vae.dtype != torch.float32:
        pipe.vae.to(torch.float32)  # kohya's no_half_vae: a half VAE can overflow on encode
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    log.info("Training against %s (%s) on %s", loaded.name, family, config.describe())
    return TrainingModel(
        pipe=pipe,
        family=family,
        device=torch.device(config.device),
        weight_dtype=weight_dtype,
        noise_scheduler=noise_scheduler,
        model_name=loaded.name,
    )


def _weight_dtype(mixed_precision: str, device: str) -> torch.dtype:
    """The frozen weights' dtype for ``--mixed-precision`` on ``device``."""
    if mixed_precision == "no":
        return torch.float32
    if mixed_precision == "fp16":
        if device != "cuda":
            raise InvalidRequest(
                f"--mixed-precision fp16 needs a CUDA GPU; on {device} use bf16 or no."
            )
        return torch.float16
    if device == "cuda" and not torch.cuda.is_bf16_supported():
        raise InvalidRequest("This GPU has no bfloat16: use --mixed-precision fp16 or no.")
    return torch.bfloat16
