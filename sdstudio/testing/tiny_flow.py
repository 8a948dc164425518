"""Tiny random pipelines of the flow-matching families (FLUX.1 and its Fill model,
Chroma, SD3, Z-Image, Qwen-Image, FLUX.2 klein), built from the real diffusers and
transformers classes.

Every component is built from a config written here with a fixed torch seed,
so two builds give the same weights; the tokenizers are built offline
(:mod:`sdstudio.testing.tiny_tokenizers`, :mod:`sdstudio.testing.vocab`).
Each ``save_tiny_*`` writes a diffusers folder of a few megabytes that loads
with ``DiffusionPipeline.from_pretrained(folder, local_files_only=True)``.

The shapes keep what the app relies on from the real models: 16 latent
channels (32 for FLUX.2), a VAE scale factor of 8, the packed 2x2 latents of
FLUX, Qwen-Image and FLUX.2, the real schedulers' settings, and text encoders
of the real classes (CLIP, T5, Qwen2.5-VL, Qwen3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdstudio.testing.tiny_denoiser_files import build_tiny_denoiser
from sdstudio.testing.tiny_parts import (
    CLIP_HIDDEN,
    FLUX_VAE_SCALING,
    QWEN_HIDDEN,
    SD3_VAE_SCALING,
    TokenizerWriters,
    clip_text,
    flow_scheduler,
    in_memory,
    kl_vae,
    load_tokenizers,
    qwen3_config,
    qwen_writers,
    save,
    t5_encoder,
)
from sdstudio.testing.tiny_tokenizers import (
    QWEN3_CHAT_TEMPLATE,
    QWEN25_VL_CHAT_TEMPLATE,
    write_tiny_t5_tokenizer,
)
from sdstudio.testing.tiny_vae_files import build_tiny_flux2_vae, build_tiny_qwen_image_vae
from sdstudio.testing.vocab import write_tiny_clip_tokenizer

# --- public API --------------------------------------------------------------


def build_tiny_flux(*, guidance_embeds: bool = False, seed: int = 0) -> Any:
    """A tiny ``FluxPipeline`` in memory: ``guidance_embeds=True`` is FLUX.1 dev's
    layout (distilled guidance), ``False`` schnell's."""
    return in_memory(lambda folder: _flux(folder, guidance_embeds=guidance_embeds, seed=seed))


def save_tiny_flux(
    directory: str | Path, *, guidance_embeds: bool = False, fill: bool = False, seed: int = 0
) -> Path:
    """Save a tiny random FLUX.1 model (schnell layout, or dev with ``guidance_embeds``);
    ``fill=True`` saves a FLUX.1 Fill model (dev's layout taking the mask and the masked
    image too) as a ``FluxFillPipeline`` folder."""
    return save(
        directory,
        lambda folder: _flux(folder, guidance_embeds=guidance_embeds or fill, fill=fill, seed=seed),
    )


def build_tiny_chroma(*, seed: int = 0) -> Any:
    """A tiny ``ChromaPipeline`` in memory."""
    return in_memory(lambda folder: _chroma(folder, seed=seed))


def save_tiny_chroma(directory: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny random Chroma model (T5 alone, Chroma1-HD's scheduler)."""
    return save(directory, lambda folder: _chroma(folder, seed=seed))


def build_tiny_sd3(*, seed: int = 0) -> Any:
    """A tiny ``StableDiffusion3Pipeline`` in memory."""
    return in_memory(lambda folder: _sd3(folder, seed=seed))


def save_tiny_sd3(directory: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny random Stable Diffusion 3 model."""
    return save(directory, lambda folder: _sd3(folder, seed=seed))


def build_tiny_zimage(*, seed: int = 0) -> Any:
    """A tiny ``ZImagePipeline`` in memory."""
    return in_memory(lambda folder: _zimage(folder, seed=seed))


def save_tiny_zimage(directory: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny random Z-Image model (Turbo's scheduler)."""
    return save(directory, lambda folder: _zimage(folder, seed=seed))


def build_tiny_qwen_image(*, seed: int = 0) -> Any:
    """A tiny ``QwenImagePipeline`` in memory."""
    return in_memory(lambda folder: _qwen_image(folder, seed=seed))


def save_tiny_qwen_image(directory: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny random Qwen-Image model."""
    return save(directory, lambda folder: _qwen_image(folder, seed=seed))


def build_tiny_flux2_klein(*, distilled: bool = True, seed: int = 0) -> Any:
    """A tiny ``Flux2KleinPipeline`` in memory (``distilled=False`` is the base model,
    which applies classifier-free guidance)."""
    return in_memory(lambda folder: _flux2_klein(folder, distilled=distilled, seed=seed))


def save_tiny_flux2_klein(directory: str | Path, *, distilled: bool = True, seed: int = 0) -> Path:
    """Save a tiny random FLUX.2 klein model."""
    return save(directory, lambda folder: _flux2_klein(folder, distilled=distilled, seed=seed))


# --- the families ------------------------------------------------------------


def _flux_scheduler() -> Any:
    """FLUX.1's scheduler: a shift that grows with the image's size."""
    return flow_scheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def _flux(
    folder: Path, *, guidance_embeds: bool, seed: int, fill: bool = False
) -> tuple[Any, TokenizerWriters]:
    from diffusers import FluxFillPipeline, FluxPipeline

    writers: TokenizerWriters = {
        "tokenizer": write_tiny_clip_tokenizer,
        "tokenizer_2": write_tiny_t5_tokenizer,
    }
    tokenizers = load_tokenizers(folder, writers)
    transformer = build_tiny_denoiser(
        "flux1",
        seed=seed,
        guidance_embeds=guidance_embeds,
        # Fill adds the masked image's latents (64) and the mask's 8x8 pixels a latent (256).
        **({"in_channels": 384, "out_channels": 64} if fill else {}),
    )
    components = dict(
        scheduler=_flux_scheduler(),
        vae=kl_vae(seed, scaling=FLUX_VAE_SCALING),
        text_encoder=clip_text(seed, tokenizers["tokenizer"], hidden=CLIP_HIDDEN, projection=False),
        tokenizer=tokenizers["tokenizer"],
        text_encoder_2=t5_encoder(seed, tokenizers["tokenizer_2"]),
        tokenizer_2=tokenizers["tokenizer_2"],
        transformer=transformer,
    )
    if fill:
        return FluxFillPipeline(**components), writers
    return FluxPipeline(**components, image_encoder=None, feature_extractor=None), writers


def _chroma(folder: Path, *, seed: int) -> tuple[Any, TokenizerWriters]:
    from diffusers import ChromaPipeline

    writers: TokenizerWriters = {"tokenizer": write_tiny_t5_tokenizer}
    tokenizer = load_tokenizers(folder, writers)["tokenizer"]
    transformer = build_tiny_denoiser("chroma", seed=seed)
    pipe = ChromaPipeline(
        # Chroma1-HD's: no shift (resources/model_configs/chroma).
        scheduler=flow_scheduler(shift=1.0, use_dynamic_shifting=False),
        vae=kl_vae(seed, scaling=FLUX_VAE_SCALING),
        text_encoder=t5_encoder(seed, tokenizer),
        tokenizer=tokenizer,
        transformer=transformer,
        image_encoder=None,
        feature_extractor=None,
    )
    return pipe, writers


def _sd3(folder: Path, *, seed: int) -> tuple[Any, TokenizerWriters]:
    from diffusers import StableDiffusion3Pipeline

    writers: TokenizerWriters = {
        "tokenizer": write_tiny_clip_tokenizer,
        "tokenizer_2": write_tiny_clip_tokenizer,
        "tokenizer_3": write_tiny_t5_tokenizer,
    }
    tokenizers = load_tokenizers(folder, writers)
    # CLIP-L and CLIP-G widths differ, as in the real model; their hidden states
    # are concatenated and zero-padded to the T5 width.
    clip_l, clip_g = CLIP_HIDDEN, 2 * CLIP_HIDDEN
    t5_hidden = clip_l + clip_g + 32
    transformer = build_tiny_denoiser("sd3", seed=seed, sample_size=32)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=flow_scheduler(shift=3.0),
        vae=kl_vae(seed, scaling=SD3_VAE_SCALING),
        text_encoder=clip_text(seed, tokenizers["tokenizer"], hidden=clip_l, projection=True),
        tokenizer=tokenizers["tokenizer"],
        text_encoder_2=clip_text(
            seed + 1, tokenizers["tokenizer_2"], hidden=clip_g, projection=True
        ),
        tokenizer_2=tokenizers["tokenizer_2"],
        text_encoder_3=t5_encoder(seed, tokenizers["tokenizer_3"], hidden=t5_hidden),
        tokenizer_3=tokenizers["tokenizer_3"],
        image_encoder=None,
        feature_extractor=None,
    )
    return pipe, writers


def _zimage(folder: Path, *, seed: int) -> tuple[Any, TokenizerWriters]:
    import torch
    from diffusers import ZImagePipeline
    from transformers import Qwen3Model

    writers = qwen_writers(QWEN3_CHAT_TEMPLATE)
    tokenizer = load_tokenizers(folder, writers)["tokenizer"]
    transformer = build_tiny_denoiser("zimage", seed=seed, axes_lens=[1024, 512, 512])
    torch.manual_seed(seed)
    text_encoder = Qwen3Model(qwen3_config(tokenizer, layers=2)).eval()
    pipe = ZImagePipeline(
        scheduler=flow_scheduler(shift=3.0, use_dynamic_shifting=False),
        vae=kl_vae(seed, scaling=FLUX_VAE_SCALING),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
    return pipe, writers


def _qwen_image(folder: Path, *, seed: int) -> tuple[Any, TokenizerWriters]:
    import torch
    from diffusers import QwenImagePipeline
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    writers = qwen_writers(QWEN25_VL_CHAT_TEMPLATE)
    tokenizer = load_tokenizers(folder, writers)["tokenizer"]
    transformer = build_tiny_denoiser("qwen-image", seed=seed)
    vae = build_tiny_qwen_image_vae(seed)
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": QWEN_HIDDEN,
            "intermediate_size": 2 * QWEN_HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 2048,
            "rope_scaling": {"mrope_section": [2, 2, 4], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "tie_word_embeddings": False,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": None,
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": QWEN_HIDDEN,
            "fullatt_block_indexes": [0],
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    pipe = QwenImagePipeline(
        scheduler=flow_scheduler(
            shift=1.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=0.9,
            base_image_seq_len=256,
            max_image_seq_len=8192,
            shift_terminal=0.02,
            time_shift_type="exponential",
        ),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
    return pipe, writers


def _flux2_klein(folder: Path, *, distilled: bool, seed: int) -> tuple[Any, TokenizerWriters]:
    import torch
    from diffusers import Flux2KleinPipeline
    from transformers import Qwen3ForCausalLM

    writers = qwen_writers(QWEN3_CHAT_TEMPLATE)
    tokenizer = load_tokenizers(folder, writers)["tokenizer"]
    # The pipeline stacks the hidden states of layers 9, 18 and 27 by default
    # (of 36 in Qwen3-4B), so the text encoder keeps the real depth.
    transformer = build_tiny_denoiser("flux2-klein", seed=seed)
    vae = build_tiny_flux2_vae(seed)
    torch.manual_seed(seed)
    text_encoder = Qwen3ForCausalLM(qwen3_config(tokenizer, layers=36)).eval()
    pipe = Flux2KleinPipeline(
        scheduler=_flux_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=distilled,
    )
    return pipe, writers
