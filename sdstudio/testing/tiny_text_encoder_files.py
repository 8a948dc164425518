"""Tiny random text-encoder files in the layouts real ones have, for tests.

Each writer builds a transformers model with the real vocabulary size (CLIP 49,408,
T5 32,128, Qwen3 151,936, Qwen2.5-VL 152,064) but a tiny width, saves it as one
safetensors file the way the released files are laid out, and returns the path. The
matching ``tiny_*`` builder gives the very model a writer saves (same seed, weights
rounded to the file's dtype), so tests can compare outputs exactly.

Sizes follow the rules of :mod:`sdstudio.engine.parts.text_encoder_configs` for what
shapes cannot tell: CLIP heads 16 wide below width 64, Qwen2.5-VL text heads 16 wide
below width 1024, vision heads 8 wide, full attention in the last vision block.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CLIP_VOCAB = 49408
T5_VOCAB = 32128
QWEN3_VOCAB = 151936
QWEN25_VL_VOCAB = 152064
QWEN_IDS: dict[str, Any] = {"bos_token_id": 151643, "eos_token_id": 151645}

FP8_SKIP = ("embed", "shared", "norm", "position", "relative_attention_bias", "patch_embed")
"""Tensors ComfyUI-style fp8 files keep in their original dtype."""


def _rounded(model: Any, dtype: torch.dtype) -> Any:
    """``model`` in float32 with every weight exactly representable in ``dtype``."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.to(dtype).to(torch.float32))
    return model.eval()


def _save(state: dict[str, torch.Tensor], path: str | Path, dtype: torch.dtype) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.to(dtype).contiguous() for name, tensor in state.items()}, str(path))
    return path


def tiny_clip(
    *, width: int, layers: int = 1, seed: int = 0, dtype: torch.dtype = torch.bfloat16
) -> Any:
    """A ``CLIPTextModelWithProjection`` of ``width`` (16-wide heads below 64; quick-GELU
    up to 768, as OpenAI's CLIPs)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    heads = width // 64 if width % 64 == 0 else width // 16
    config = CLIPTextConfig(
        vocab_size=CLIP_VOCAB,
        hidden_size=width,
        intermediate_size=width * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act="quick_gelu" if width <= 768 else "gelu",
        projection_dim=width,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )
    return _rounded(CLIPTextModelWithProjection(config), dtype)


def write_tiny_clip(
    path: str | Path,
    *,
    width: int,
    layers: int = 1,
    projection: bool = True,
    seed: int = 0,
    prefix: str = "",
    dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """A CLIP text encoder in the Hugging Face layout (``text_model.…``,
    ``text_projection.weight``), every name under ``prefix``
    (``text_encoders.clip_l.transformer.`` in ComfyUI's SD3 files)."""
    state = tiny_clip(width=width, layers=layers, seed=seed, dtype=dtype).state_dict()
    if not projection:
        state.pop("text_projection.weight")
    return _save({prefix + name: tensor for name, tensor in state.items()}, path, dtype)


def tiny_t5(
    *, width: int = 96, layers: int = 2, seed: int = 0, dtype: torch.dtype = torch.bfloat16
) -> Any:
    """A T5 v1.1 (gated-GELU) ``T5EncoderModel`` with 16-wide heads."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    options: dict[str, Any] = dict(
        vocab_size=T5_VOCAB,
        d_model=width,
        d_kv=16,
        d_ff=width * 2,
        num_layers=layers,
        num_heads=width // 16,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
    )
    return _rounded(T5EncoderModel(T5Config(**options)), dtype)


def write_tiny_t5(
    path: str | Path,
    *,
    width: int = 96,
    layers: int = 2,
    seed: int = 0,
    prefix: str = "",
    dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """A T5 encoder as ComfyUI's ``t5xxl_*.safetensors``: ``shared.weight`` and
    ``encoder.…``, without the tied ``encoder.embed_tokens.weight``."""
    state = tiny_t5(width=width, layers=layers, seed=seed, dtype=dtype).state_dict()
    state.pop("encoder.embed_tokens.weight", None)
    return _save({prefix + name: tensor for name, tensor in state.items()}, path, dtype)


def tiny_qwen3(
    *,
    width: int = 32,
    layers: int = 2,
    seed: int = 0,
    lm_head: bool = False,
    dtype: torch.dtype = torch.bfloat16,
) -> Any:
    """A ``Qwen3ForCausalLM`` with 16-wide heads (2 query, 1 key-value), tied
    embeddings unless ``lm_head``."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    options: dict[str, Any] = dict(
        vocab_size=QWEN3_VOCAB,
        hidden_size=width,
        intermediate_size=width * 2,
        num_hidden_layers=layers,
        num_attention_heads=width // 16,
        num_key_value_heads=max(1, width // 32),
        head_dim=16,
        max_position_embeddings=40960,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=not lm_head,
        **QWEN_IDS,
    )
    return _rounded(Qwen3ForCausalLM(Qwen3Config(**options)), dtype)


def write_tiny_qwen3(
    path: str | Path,
    *,
    width: int = 32,
    layers: int = 2,
    seed: int = 0,
    lm_head: bool = False,
    prefix: str = "",
    dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """A Qwen3 text encoder as ComfyUI's ``qwen_3_4b.safetensors`` (``model.…``, no
    ``lm_head`` since the embeddings are tied) or, with ``lm_head``, as Qwen3 8B."""
    model = tiny_qwen3(width=width, layers=layers, seed=seed, lm_head=lm_head, dtype=dtype)
    state = model.state_dict()
    if not lm_head:
        state.pop("lm_head.weight")
    return _save({prefix + name: tensor for name, tensor in state.items()}, path, dtype)


def tiny_qwen25_vl(
    *, width: int = 32, layers: int = 2, seed: int = 0, dtype: torch.dtype = torch.bfloat16
) -> Any:
    """A ``Qwen2_5_VLForConditionalGeneration`` with 16-wide text heads and a two-block,
    16-wide vision tower."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    text = {
        "vocab_size": QWEN25_VL_VOCAB,
        "hidden_size": width,
        "intermediate_size": width * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": width // 16,
        "num_key_value_heads": 1,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 128000,
        "rope_theta": 1_000_000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "tie_word_embeddings": False,
        **QWEN_IDS,
    }
    vision = {
        "depth": 2,
        "hidden_size": 16,
        "num_heads": 2,
        "intermediate_size": 32,
        "out_hidden_size": width,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "spatial_merge_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [1],
        "tokens_per_second": 2,
    }
    options: dict[str, Any] = dict(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=False,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        **QWEN_IDS,
    )
    return _rounded(Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**options)), dtype)


def write_tiny_qwen25_vl(
    path: str | Path,
    *,
    width: int = 32,
    layers: int = 2,
    seed: int = 0,
    layout: str = "comfyui",
    prefix: str = "",
    dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """A Qwen2.5-VL text encoder with its vision tower and ``lm_head``. ``layout``
    ``"comfyui"`` names tensors as Qwen's release and ComfyUI's
    ``qwen_2.5_vl_7b.safetensors`` (``model.layers.…``, ``visual.…``); ``"transformers"``
    as transformers 5 saves them (``model.language_model.…``, ``model.visual.…``)."""
    if layout not in ("comfyui", "transformers"):
        raise ValueError(f"unknown layout {layout!r}")
    state = tiny_qwen25_vl(width=width, layers=layers, seed=seed, dtype=dtype).state_dict()
    if layout == "comfyui":
        renamed = {}
        for name, tensor in state.items():
            if name.startswith("model.language_model."):
                name = "model." + name.removeprefix("model.language_model.")
            elif name.startswith("model.visual."):
                name = name.removeprefix("model.")
            renamed[name] = tensor
        state = renamed
    return _save({prefix + name: tensor for name, tensor in state.items()}, path, dtype)


def write_fp8(src: str | Path, dst: str | Path, *, scaled: bool = False) -> Path:
    """Copy a text-encoder file with its linear weights in ``float8_e4m3fn``.

    Plain (``scaled=False``) as ``t5xxl_fp8_e4m3fn.safetensors``: weights cast to fp8.
    Scaled as ComfyUI's ``*_fp8_scaled`` files: each weight divided by a per-tensor
    ``scale_weight`` (its largest magnitude over 448) before the cast, and a
    ``scaled_fp8`` marker. Embeddings, norms and biases keep their dtype.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    state: dict[str, torch.Tensor] = {}
    with safe_open(str(src), framework="pt", device="cpu") as file:
        for name in file.keys():  # noqa: SIM118 - safe_open is not a mapping
            tensor = file.get_tensor(name)
            if (
                name.endswith(".weight")
                and tensor.dim() == 2
                and not any(s in name for s in FP8_SKIP)
            ):
                weight = tensor.to(torch.float32)
                if scaled:
                    scale = weight.abs().max().clamp(min=1e-12) / 448.0
                    state[name.removesuffix(".weight") + ".scale_weight"] = scale.reshape(())
                    weight = weight / scale
                tensor = weight.to(torch.float8_e4m3fn)
            state[name] = tensor.contiguous()
    if scaled:
        state["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dst))
    return dst
