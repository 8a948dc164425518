"""Tiny Stable Diffusion pipelines with random weights.

They run the same diffusers code paths as real models in a fraction of a
second, need no download, and are used by the tests, the benchmarks and the
app's self-test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdstudio.testing.vocab import write_tiny_clip_tokenizer

TINY_TEXT_HIDDEN = 32


def build_tiny_pipeline(*, inpainting: bool = False, seed: int = 0) -> Any:
    """Build a tiny SD 1.x pipeline (or a 9-channel inpainting one) in memory.

    Returns a ``StableDiffusionPipeline`` or ``StableDiffusionInpaintPipeline``.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sdstudio-tiny-") as tmp:
        return _build(Path(tmp), inpainting=inpainting, seed=seed)


def save_tiny_model(directory: str | Path, *, inpainting: bool = False, seed: int = 0) -> Path:
    """Build a tiny random SD 1.x model and save it as a diffusers folder.

    Returns the folder, which loads with
    ``StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)``.
    """
    directory = Path(directory)
    pipe = _build(directory / "tokenizer-src", inpainting=inpainting, seed=seed)
    pipe.save_pretrained(directory, safe_serialization=True)
    # save_pretrained writes only tokenizer.json under transformers 5; keep
    # the slow-tokenizer files too so every loader finds what it expects.
    write_tiny_clip_tokenizer(directory / "tokenizer")
    _remove_tree(directory / "tokenizer-src")
    return directory


def _build(tokenizer_dir: Path, *, inpainting: bool, seed: int) -> Any:
    import torch
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    write_tiny_clip_tokenizer(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77)

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=9 if inpainting else 4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TINY_TEXT_HIDDEN,
        attention_head_dim=4,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=128,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=TINY_TEXT_HIDDEN,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            projection_dim=32,
        )
    )
    scheduler = DPMSolverMultistepScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    pipeline_class = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
    return pipeline_class(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
