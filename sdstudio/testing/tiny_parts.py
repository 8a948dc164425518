"""Parts shared by the tiny flow-model builders: saving and loading, tokenizers, and
the text encoders, VAE and scheduler several families use."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdstudio.testing.tiny_tokenizers import write_tiny_qwen_tokenizer

CLIP_HIDDEN = 32
T5_HIDDEN = 64
QWEN_HIDDEN = 32

# Real FLUX.1 VAE (shared by Z-Image) and SD3 VAE latent statistics.
FLUX_VAE_SCALING = (0.3611, 0.1159)
SD3_VAE_SCALING = (1.5305, 0.0609)

TokenizerWriters = dict[str, Callable[[Path], Any]]

Builder = Callable[[Path], tuple[Any, TokenizerWriters]]


def qwen_writers(chat_template: str) -> TokenizerWriters:
    """The tokenizer of a Qwen text encoder with its chat template."""
    return {"tokenizer": lambda path: write_tiny_qwen_tokenizer(path, chat_template=chat_template)}


def in_memory(build: Builder) -> Any:
    with tempfile.TemporaryDirectory(prefix="sdstudio-tiny-") as tmp:
        pipe, _ = build(Path(tmp))
        return pipe


def save(directory: str | Path, build: Builder) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sdstudio-tiny-") as tmp:
        pipe, writers = build(Path(tmp))
    pipe.save_pretrained(directory, safe_serialization=True)
    # Write each tokenizer folder from its source, so the files on disk are the
    # small, deterministic ones built here rather than a library's re-save.
    for name, write in writers.items():
        shutil.rmtree(directory / name, ignore_errors=True)
        write(directory / name)
    return directory


def load_tokenizers(folder: Path, writers: TokenizerWriters) -> dict[str, Any]:
    """Write each tokenizer under ``folder`` and load it with its pipeline's class."""
    from transformers import AutoTokenizer, CLIPTokenizer

    loaded: dict[str, Any] = {}
    for name, write in writers.items():
        path = write(folder / name)
        if (path / "vocab.json").exists():
            loaded[name] = CLIPTokenizer.from_pretrained(path, model_max_length=77)
        else:
            loaded[name] = AutoTokenizer.from_pretrained(path)
    return loaded


def flow_scheduler(**config: Any) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, **config)


def kl_vae(seed: int, *, scaling: tuple[float, float]) -> Any:
    """The FLUX.1 / SD3 VAE layout: 16 latent channels, four levels (scale factor 8)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 16, 16),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=8,
        sample_size=64,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=scaling[0],
        shift_factor=scaling[1],
    )


def clip_text(seed: int, tokenizer: Any, *, hidden: int, projection: bool) -> Any:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        projection_dim=hidden,
        hidden_act="gelu",
    )
    model_class = CLIPTextModelWithProjection if projection else CLIPTextModel
    return model_class(config).eval()


def t5_encoder(seed: int, tokenizer: Any, *, hidden: int = T5_HIDDEN) -> Any:
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=hidden,
        d_kv=16,
        d_ff=hidden,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return T5EncoderModel(config).eval()


def qwen3_config(tokenizer: Any, *, layers: int) -> Any:
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=QWEN_HIDDEN,
        intermediate_size=2 * QWEN_HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=2048,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
