"""Textual-inversion embeddings for SD 1.x, SD 2.x and SDXL, and DreamArtist's pairs.

A new prompt word, the embedding's name, gets ``--num-vectors`` vectors of its own in
each text encoder, started from the token embeddings of ``--init-text`` as A1111 starts
them. Only those vectors learn; every weight of the model stays frozen. The vectors live
beside the encoder's token embedding (:class:`TokenVectors`) rather than as new rows of
it, so the encoder's own rows cannot change at all (diffusers' example trains the whole
matrix and copies the old rows back after each step) and the optimizer's state holds the
new vectors only. The tokenizer learns the words as diffusers loads an embedding of ``n``
vectors: ``name``, ``name_1`` … ``name_{n-1}``, so a caption is spelled out as generation
spells out a prompt.

Captions come from prompt templates (``[name]``, ``[filewords]``: the image's caption).
DreamArtist mode (``--dreamartist``, Dong et al. 2022, "DreamArtist: Towards Controllable
One-Shot Text-to-Image Generation via Contrastive Prompt-Tuning") trains a negative
embedding ``NAME-neg`` with the positive one: the UNet predicts once with the caption
and once with the caption naming ``NAME-neg``, the two are combined with classifier-free
guidance at ``--dreamartist-cfg``, and the loss is taken on the combined prediction;
optionally an L1 reconstruction loss between the training image and the VAE-decoded
prediction of the clean latents is added, as the authors' implementation does.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.fileio import write_atomically
from sdstudio.engine.prompting.embedding_tokens import expand_embedding_tokens
from sdstudio.engine.training.dataset_trainer import DatasetTrainer
from sdstudio.engine.training.datasets import load_fitted
from sdstudio.engine.training.embedding_file import (
    check_free,
    embedding_bytes,
    initial_vectors,
    write_embedding,
)
from sdstudio.engine.training.embedding_options import EmbeddingOptions, caption_from
from sdstudio.engine.training.events import CancelFlag, EventSink, Notice
from sdstudio.engine.training.loop import autocast_for, run_training
from sdstudio.engine.training.model import TrainingModel

log = logging.getLogger(__name__)

SAMPLE_GUIDANCE = 7.0
NEGATIVE_INIT_NOISE = 1e-3
"""DreamArtist starts the negative embedding from the init text plus this much noise."""


class TokenVectors(torch.nn.Module):
    """A text encoder's token embedding with trained vectors for the ids past its end."""

    def __init__(self, original: torch.nn.Embedding, vectors: torch.Tensor) -> None:
        super().__init__()
        self.original = original
        self.first_id = original.num_embeddings
        self.vectors = torch.nn.Parameter(vectors.to(original.weight.device, torch.float32))

    @property
    def weight(self) -> torch.Tensor:
        """The encoder's own rows (read by code that asks the embedding for its dtype)."""
        return self.original.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Each id's vector: the encoder's own row, or a trained vector."""
        base = self.original(ids.clamp(max=self.first_id - 1))
        new = ids >= self.first_id
        index = (ids - self.first_id).clamp(min=0, max=self.vectors.shape[0] - 1)
        return torch.where(new[..., None], self.vectors.to(base.dtype)[index], base)


class EmbeddingTrainer(DatasetTrainer):
    """Loads the model and the data, adds the embedding's words, and gives the loop what
    it asks."""

    kind = "embedding"

    def __init__(
        self,
        embedding: EmbeddingOptions,
        *,
        on_event: EventSink,
        model: TrainingModel | None = None,
    ) -> None:
        """``model``: one already loaded (frozen, as :func:`load_training_model` gives it);
        without it the options' model is loaded. Its tokenizers and text encoders gain the
        embedding's words."""
        embedding.check()
        base = embedding.base
        check_free(embedding.names, base.output_dir, embedding.embedding_dirs, embedding.overwrite)
        self.embedding = embedding
        self.options = base
        self.on_event = on_event
        self.templates = embedding.templates()
        self._load(base, on_event, model)
        self._check_prediction("embedding")
        self.vectors = self._add_words()
        if base.gradient_checkpointing:
            self.model.pipe.unet.enable_gradient_checkpointing()
            for _prefix, _tokenizer, encoder in self.model.text_encoders():
                encoder.gradient_checkpointing_enable()
                encoder.train()  # CLIP checkpoints only in training mode (its dropout is 0)
        if base.cache_latents:
            on_event(
                Notice(message=f"Caching the latents of {len(self.data.dataset.images)} images…")
            )
            self.data.cache_latents(self.model)

    def _add_words(self) -> list[TokenVectors]:
        """Teach each tokenizer the embedding's words and give each encoder their vectors."""
        count = self.embedding.num_vectors
        generator = torch.Generator("cpu").manual_seed(self.options.seed)
        added = []
        for _prefix, tokenizer, encoder in self.model.text_encoders():
            original = encoder.get_input_embeddings()
            words = [w for name in self.embedding.names for w in _words(name.lower(), count)]
            taken = [w for w in words if w in tokenizer.get_vocab()]
            if taken:
                raise InvalidRequest(
                    f"The tokenizer already has the word {taken[0]!r}: choose another --name."
                )
            tokenizer.add_tokens(words)
            ids = tokenizer.convert_tokens_to_ids(words)
            first = original.num_embeddings
            if ids != list(range(first, first + len(words))):
                raise ModelError(
                    f"The tokenizer of {self.model.model_name} has {len(tokenizer) - len(words)} "
                    f"words but its text encoder {first} embeddings; it cannot learn new words."
                )
            start = initial_vectors(tokenizer, original, self.embedding.init_text, count)
            parts = [start]
            if self.embedding.dreamartist:
                noise = torch.randn(start.shape, generator=generator) * NEGATIVE_INIT_NOISE
                parts.append(start + noise)
            vectors = TokenVectors(original, torch.cat(parts))
            encoder.set_input_embeddings(vectors)
            added.append(vectors)
        return added

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The new vectors of every text encoder, at ``--learning-rate``."""
        return [{"params": [v.vectors for v in self.vectors], "lr": self.options.learning_rate}]

    def captions_at(self, step: int) -> list[str]:
        """The step's prompts: a template per image with the embedding's name and the
        image's caption, spelled out for the tokenizer. In DreamArtist mode the negative
        prompts (the same naming ``NAME-neg``) come first, as the guided batch is
        [negative, positive]."""
        batch = self.data.batch_at(step)
        filewords = self.data.captions_at(step, batch)
        rng = random.Random(f"{self.options.seed}:template:{step}")
        chosen = [rng.choice(self.templates) for _ in filewords]
        tokenizer = self.model.text_encoders()[0][1]
        by_name = [
            [
                expand_embedding_tokens(tokenizer, caption_from(template, name, words))
                for template, words in zip(chosen, filewords, strict=True)
            ]
            for name in self.embedding.names
        ]
        return by_name[1] + by_name[0] if self.embedding.dreamartist else by_name[0]

    def loss(self, step: int) -> torch.Tensor:
        """The denoising loss of the step's batch (on the guided prediction for DreamArtist)."""
        model, base = self.model, self.options
        noised = self.noised(step)
        batch, latents, fitted = noised.batch, noised.latents, noised.fitted
        noise, timesteps, noisy = noised.noise, noised.timesteps, noised.noisy
        prompts = self.captions_at(step)
        scheduler = model.noise_scheduler
        copies = 2 if self.embedding.dreamartist else 1
        hidden, added = model.condition(prompts, list(fitted) * copies, batch.bucket)
        prediction = model.pipe.unet(
            torch.cat([noisy] * copies),
            torch.cat([timesteps] * copies),
            hidden.to(model.weight_dtype),
            added_cond_kwargs=added,
        ).sample
        if self.embedding.dreamartist:
            uncond, cond = prediction.chunk(2)
            prediction = uncond + self.embedding.dreamartist_cfg * (cond - uncond)
        target = scheduler.get_velocity(latents, noise, timesteps) if model.v_prediction else noise
        loss = torch.nn.functional.mse_loss(prediction.float(), target.float(), reduction="none")
        loss = loss.mean(dim=[1, 2, 3])
        if base.min_snr_gamma is not None:
            loss = loss * snr_weights(model, base.min_snr_gamma, timesteps)
        loss = loss.mean()
        if self.embedding.dreamartist_rec_weight:
            loss = loss + self.embedding.dreamartist_rec_weight * self._reconstruction(
                batch.indices, batch.bucket, noisy, prediction, timesteps
            )
        return loss

    def _reconstruction(
        self,
        indices: Sequence[int],
        bucket: tuple[int, int],
        noisy: torch.Tensor,
        prediction: torch.Tensor,
        timesteps: torch.Tensor,
    ) -> torch.Tensor:
        """L1 between the images and the decoded prediction of their clean latents."""
        model = self.model
        alphas = model.noise_scheduler.alphas_cumprod.to(model.device)[timesteps]
        a = alphas.sqrt().view(-1, 1, 1, 1)
        s = (1 - alphas).sqrt().view(-1, 1, 1, 1)
        noisy, prediction = noisy.float(), prediction.float()
        clean = a * noisy - s * prediction if model.v_prediction else (noisy - s * prediction) / a
        vae = model.pipe.vae
        decoded = vae.decode(clean.to(vae.dtype) / vae.config.scaling_factor).sample
        images = self.data.dataset.images
        pixels = torch.stack([load_fitted(images[i], bucket).pixels for i in indices])
        return torch.nn.functional.l1_loss(decoded.float(), pixels.to(decoded.device).float())

    def record(self) -> dict[str, Any]:
        """The options as plain values, kept with a state."""
        return self.embedding.record()

    def weights(self) -> dict[str, torch.Tensor]:
        """The vectors of each text encoder (``te0``, ``te1``), float32."""
        return {f"te{i}": v.vectors.detach().clone() for i, v in enumerate(self.vectors)}

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Put saved vectors back."""
        for index, vectors in enumerate(self.vectors):
            saved = weights.get(f"te{index}")
            if saved is None or saved.shape != vectors.vectors.shape:
                raise ModelError(
                    "The saved state holds other vectors than this run trains "
                    "(another model family or number of vectors)."
                )
            with torch.no_grad():
                vectors.vectors.copy_(saved)

    def _files(self, step: int) -> dict[str, bytes]:
        count = self.embedding.num_vectors
        files = {}
        for index, name in enumerate(self.embedding.names):
            rows = [v.vectors[index * count : (index + 1) * count] for v in self.vectors]
            data = embedding_bytes(rows, name=name, step=step, model_name=self.model.model_name)
            files[f"{name}.safetensors"] = data
        return files

    def snapshot(self, step: int) -> dict[str, bytes]:
        """The embedding files as they stand, kept in the state folder (usable as they are)."""
        return self._files(step)

    def sample(self, step: int, path: Path) -> None:
        """An image of ``--sample-prompt`` with the embedding as it is, from a fixed seed;
        in DreamArtist mode with ``NAME-neg`` as the negative prompt at its guidance."""
        width, height = self.options.buckets.resolution
        dreamartist = self.embedding.dreamartist
        generator = torch.Generator("cpu").manual_seed(self.options.seed)
        with torch.no_grad(), autocast_for(self.device, self.options.mixed_precision):
            image = self.model.pipe(
                prompt=self.options.sample_prompt,
                negative_prompt=self.embedding.names[-1] if dreamartist else None,
                num_inference_steps=self.options.sample_steps,
                guidance_scale=self.embedding.dreamartist_cfg if dreamartist else SAMPLE_GUIDANCE,
                width=width,
                height=height,
                generator=generator,
            ).images[0]
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        write_atomically(path, buffer.getvalue())

    def finish(self, steps: int) -> Path:
        """Write ``NAME.safetensors`` (and ``NAME-neg.safetensors``) into the output folder."""
        written = [
            write_embedding(self.options.output_dir / file_name, data)
            for file_name, data in self._files(steps).items()
        ]
        for path in written[1:]:
            self.on_event(Notice(message=f"Wrote the negative embedding {path}"))
        return written[0]


def snr_weights(model: TrainingModel, gamma: float, timesteps: torch.Tensor) -> torch.Tensor:
    """Min-SNR-γ weights (Hang et al. 2023, as kohya applies them)."""
    alphas = model.noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    snr = alphas / (1 - alphas)
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    return (clipped / (snr + 1) if model.v_prediction else clipped / snr).float()


def _words(name: str, count: int) -> list[str]:
    """The tokenizer words of an embedding of ``count`` vectors, named as diffusers names them."""
    return [name] + [f"{name}_{index}" for index in range(1, count)]


def train_embedding(
    options: EmbeddingOptions,
    *,
    on_event: EventSink,
    cancel: CancelFlag | None = None,
    resume: Path | None = None,
) -> Path | None:
    """Train an embedding (with ``--dreamartist`` also ``NAME-neg``); returns the written
    file, or ``None`` when cancelled (its state saved)."""
    trainer = EmbeddingTrainer(options, on_event=on_event)
    return run_training(trainer, on_event=on_event, cancel=cancel, resume=resume)
