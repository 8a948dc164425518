"""Where text encoders sit in a safetensors file, and the transformers configs their
tensor shapes imply.

Files name the same tensors differently: ``text_model.…`` (Hugging Face),
``cond_stage_model.transformer.text_model.…`` (SD 1.x checkpoints),
``text_encoders.clip_l.transformer.text_model.…`` (ComfyUI's SD3 files),
``model.layers.…`` and ``visual.…`` (Qwen releases and ComfyUI) or
``model.language_model.layers.…`` and ``model.visual.…`` (transformers 5). Each
encoder is found by one tensor only it has and brought to one *canonical* naming:

- CLIP: ``text_model.…`` and ``text_projection.weight`` (``CLIPTextModelWithProjection``);
- T5: ``shared.weight`` and ``encoder.…`` (``T5EncoderModel``);
- Qwen3: ``model.…`` and ``lm_head.weight`` (``Qwen3ForCausalLM``);
- Qwen2.5-VL: ``model.language_model.…``, ``model.visual.…`` and ``lm_head.weight``.

Sizes that shapes cannot tell follow the released models and these rules:

- CLIP heads are 64 wide when the width is a multiple of 64 (CLIP-L 768: 12 heads,
  CLIP-H 1024: 16, CLIP-G 1280: 20), else 16 wide (test models: 32 → 2, 48 → 3);
  widths up to 768 (OpenAI's CLIPs) use quick-GELU, wider ones (OpenCLIP's) GELU.
- Qwen3 heads are as wide as ``q_norm``. Qwen2.5-VL text heads are 128 wide when the
  width is a multiple of 128 and at least 1024 (7B: 3584 → 28 heads), else 16 wide;
  its M-RoPE sections scale with the head width ([16, 24, 24] for 128).
- The Qwen2.5-VL vision tower of width 1280 (all released sizes) has 16 heads, other
  widths 8-wide heads; full attention in every eighth block (7, 15, 23, 31), or in the
  last block of towers shallower than eight.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Shapes = Mapping[str, Sequence[int]]

CLIP_MARKER = "embeddings.token_embedding.weight"
T5_MARKER = "encoder.block.0.layer.0.SelfAttention.q.weight"
LLM_MARKER = "layers.0.self_attn.q_proj.weight"

QUANT_SUFFIXES = (".scale_weight", ".weight_scale", ".scale_input", ".input_scale", ".comfy_quant")
"""Side tensors of ComfyUI's fp8 files: scales of fp8 weights, inputs' scales, format notes."""

IGNORED_SUFFIXES = ("position_ids",)
"""Buffers some files carry that models rebuild themselves."""

QWEN_TOKEN_IDS: dict[str, Any] = {"bos_token_id": 151643, "eos_token_id": 151645}
QWEN25_VL_TOKEN_IDS: dict[str, Any] = {
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
}


class LayoutError(ValueError):
    """A tensor the config needs is missing, or shapes contradict each other."""


@dataclass(slots=True)
class EncoderLayout:
    """One text encoder in a file: its kind, the prefix its names carry, and its tensors."""

    kind: str
    """``clip``, ``t5``, ``qwen3``, ``qwen2.5-vl``, or ``""`` for a language model of
    another architecture."""
    prefix: str
    names: dict[str, str] = field(default_factory=dict)
    """Canonical tensor name → name in the file."""
    ignored: set[str] = field(default_factory=set)
    """Names in the file that belong to the encoder but are not loaded (a T5 decoder)."""

    def shapes(self, shapes: Shapes) -> dict[str, tuple[int, ...]]:
        """The shapes of this encoder's tensors under their canonical names."""
        return {canonical: tuple(shapes[name]) for canonical, name in self.names.items()}

    def claimed(self) -> set[str]:
        """Every file name this encoder accounts for."""
        return set(self.names.values()) | self.ignored


def is_side_tensor(name: str) -> bool:
    """True for quantization side tensors and markers, which are not model weights."""
    return name == "scaled_fp8" or name.endswith((".scaled_fp8", *QUANT_SUFFIXES))


def find_layouts(shapes: Shapes) -> list[EncoderLayout]:
    """Every text encoder in a file's tensors, in the order their marker tensors appear."""
    weights = {name: shape for name, shape in shapes.items() if not is_side_tensor(name)}
    found: list[EncoderLayout] = []
    for name in weights:
        for marker, build in (
            (CLIP_MARKER, _clip_layout),
            (T5_MARKER, _t5_layout),
            (LLM_MARKER, _llm_layout),
        ):
            root = name[: -len(marker)]
            if name.endswith(marker) and (not root or root.endswith(".")):
                layout = build(root, weights)
                if layout is not None:
                    found.append(layout)
    return found


def _take(names: Iterable[str], root: str, heads: tuple[str, ...], target: str) -> dict[str, str]:
    taken = {}
    for name in names:
        rest = name[len(root) :]
        if name.startswith(root) and rest.startswith(heads) and not rest.endswith(IGNORED_SUFFIXES):
            taken[target + rest] = name
    return taken


def _clip_layout(root: str, shapes: Shapes) -> EncoderLayout:
    prefix = root.removesuffix("text_model.")
    names = _take(shapes, root, ("embeddings.", "encoder.", "final_layer_norm."), "text_model.")
    if prefix + "text_projection.weight" in shapes:
        names["text_projection.weight"] = prefix + "text_projection.weight"
    ignored = {name for name in shapes if name.startswith(root) and name.endswith(IGNORED_SUFFIXES)}
    # A whole CLIP model (text and image towers) still serves as a text encoder.
    image_side = tuple(
        prefix + part for part in ("vision_model.", "visual_projection.", "logit_scale")
    )
    ignored |= {name for name in shapes if name.startswith(image_side)}
    return EncoderLayout("clip", prefix, names, ignored)


def _t5_layout(root: str, shapes: Shapes) -> EncoderLayout:
    names = _take(shapes, root, ("encoder.", "shared."), "")
    ignored = {name for name in shapes if name.startswith((root + "decoder.", root + "lm_head."))}
    return EncoderLayout("t5", root, names, ignored)


def _llm_layout(root: str, shapes: Shapes) -> EncoderLayout | None:
    if root + "embed_tokens.weight" not in shapes:
        return None  # a CLIP's encoder.layers.0.self_attn.q_proj, not a language model
    prefix = root.removesuffix("language_model.").removesuffix("model.")
    if root + "layers.0.self_attn.q_norm.weight" in shapes:
        kind, target = "qwen3", "model."
    elif root + "layers.0.self_attn.q_proj.bias" in shapes:
        kind, target = "qwen2.5-vl", "model.language_model."
    else:
        kind, target = "", "model."
    names = _take(shapes, root, ("embed_tokens.", "layers.", "norm."), target)
    if prefix + "lm_head.weight" in shapes:
        names["lm_head.weight"] = prefix + "lm_head.weight"
    for visual in (prefix + "visual.", prefix + "model.visual."):
        names |= _take(shapes, visual, ("",), "model.visual.")
    return EncoderLayout(kind, prefix, names)


def count_layers(shapes: Mapping[str, Any], stem: str) -> int:
    """How many numbered blocks ``stem<N>.…`` the tensors hold."""
    indices = {
        int(index)
        for name in shapes
        if name.startswith(stem) and (index := name[len(stem) :].split(".", 1)[0]).isdigit()
    }
    return max(indices) + 1 if indices else 0


def shape(shapes: Mapping[str, tuple[int, ...]], name: str) -> tuple[int, ...]:
    """A tensor's shape, or :class:`LayoutError` naming it when the file lacks it."""
    if name not in shapes:
        raise LayoutError(f"it has no {name}")
    return shapes[name]


def per_head(total: int, size: int, what: str) -> int:
    """``total`` rows split in parts of ``size`` (heads of a width, or the width of a
    number of heads); :class:`LayoutError` when they do not divide."""
    if size <= 0 or total % size:
        raise LayoutError(f"{what} has {total} rows, which do not split into parts of {size}")
    return total // size


def clip_heads(width: int) -> int:
    """CLIP's attention heads for a width (see the module's rules)."""
    if width % 64 == 0:
        return width // 64
    return width // 16 if width % 16 == 0 else 1


def qwen_head_dim(hidden: int) -> int:
    """Qwen2.5-VL's text head width for a hidden size (see the module's rules)."""
    if hidden % 128 == 0 and hidden >= 1024:
        return 128
    return 16 if hidden % 16 == 0 else hidden


def vision_heads(hidden: int) -> int:
    """The Qwen2.5-VL vision tower's heads for its width (see the module's rules)."""
    if hidden == 1280:
        return 16
    return hidden // 8 if hidden % 8 == 0 else 1


def clip_config(shapes: Mapping[str, tuple[int, ...]], *, projection: int | None = None) -> Any:
    """A ``CLIPTextConfig`` for canonical CLIP shapes (``projection`` overrides the
    projection width when the file has no projection)."""
    from transformers import CLIPTextConfig

    vocab, width = shape(shapes, "text_model." + CLIP_MARKER)
    positions = shape(shapes, "text_model.embeddings.position_embedding.weight")[0]
    if "text_projection.weight" in shapes:
        projection = shapes["text_projection.weight"][0]
    return CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=shape(shapes, "text_model.encoder.layers.0.mlp.fc1.weight")[0],
        num_hidden_layers=count_layers(shapes, "text_model.encoder.layers."),
        num_attention_heads=clip_heads(width),
        max_position_embeddings=positions,
        hidden_act="quick_gelu" if width <= 768 else "gelu",
        projection_dim=projection or width,
        layer_norm_eps=1e-5,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )


def t5_embedding(shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    """The (vocabulary, width) of a T5 encoder's token embedding."""
    if "shared.weight" in shapes:
        return shapes["shared.weight"]
    return shape(shapes, "encoder.embed_tokens.weight")


def t5_config(shapes: Mapping[str, tuple[int, ...]]) -> Any:
    """A ``T5Config`` (v1.1 gated-GELU, or v1.0 ReLU) for canonical T5 shapes."""
    from transformers import T5Config

    vocab, width = t5_embedding(shapes)
    attention = "encoder.block.0.layer.0.SelfAttention."
    buckets, heads = shape(shapes, attention + "relative_attention_bias.weight")
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in shapes
    feed_forward = "encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi")
    options: dict[str, Any] = dict(
        vocab_size=vocab,
        d_model=width,
        d_kv=per_head(shape(shapes, attention + "q.weight")[0], heads, "q"),
        d_ff=shape(shapes, feed_forward + ".weight")[0],
        num_layers=count_layers(shapes, "encoder.block."),
        num_heads=heads,
        relative_attention_num_buckets=buckets,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu" if gated else "relu",
        layer_norm_epsilon=1e-6,
        is_encoder_decoder=False,
        use_cache=False,
    )
    return T5Config(**options)


def qwen3_config(shapes: Mapping[str, tuple[int, ...]]) -> Any:
    """A ``Qwen3Config`` for canonical Qwen3 shapes (RoPE and norms as Qwen3 4B and 8B)."""
    from transformers import Qwen3Config

    vocab, hidden = shape(shapes, "model.embed_tokens.weight")
    attention = "model.layers.0.self_attn."
    head_dim = shape(shapes, attention + "q_norm.weight")[0]
    layers = count_layers(shapes, "model.layers.")
    options: dict[str, Any] = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=shape(shapes, "model.layers.0.mlp.gate_proj.weight")[0],
        num_hidden_layers=layers,
        num_attention_heads=per_head(
            shape(shapes, attention + "q_proj.weight")[0], head_dim, "q_proj"
        ),
        num_key_value_heads=per_head(
            shape(shapes, attention + "k_proj.weight")[0], head_dim, "k_proj"
        ),
        head_dim=head_dim,
        hidden_act="silu",
        max_position_embeddings=40960,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        attention_bias=False,
        tie_word_embeddings="lm_head.weight" not in shapes,
        use_sliding_window=False,
        max_window_layers=layers,
        **QWEN_TOKEN_IDS,
    )
    return Qwen3Config(**options)


def qwen25_vl_config(shapes: Mapping[str, tuple[int, ...]]) -> Any:
    """A ``Qwen2_5_VLConfig`` for canonical Qwen2.5-VL shapes (RoPE, norms and the
    vision tower's windows as Qwen2.5-VL 7B)."""
    from transformers import Qwen2_5_VLConfig

    text = "model.language_model."
    vocab, hidden = shape(shapes, text + "embed_tokens.weight")
    head_dim = qwen_head_dim(hidden)
    attention = text + "layers.0.self_attn."
    layers = count_layers(shapes, text + "layers.")
    text_config: dict[str, Any] = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": shape(shapes, text + "layers.0.mlp.gate_proj.weight")[0],
        "num_hidden_layers": layers,
        "num_attention_heads": per_head(
            shape(shapes, attention + "q_proj.weight")[0], head_dim, "q_proj"
        ),
        "num_key_value_heads": per_head(
            shape(shapes, attention + "k_proj.weight")[0], head_dim, "k_proj"
        ),
        "hidden_act": "silu",
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1_000_000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": mrope_section(head_dim)},
        "use_sliding_window": False,
        "sliding_window": 32768,
        "max_window_layers": layers,
        "tie_word_embeddings": "lm_head.weight" not in shapes,
        **QWEN_TOKEN_IDS,
    }
    options: dict[str, Any] = dict(
        text_config=text_config,
        vision_config=vision_config(shapes),
        tie_word_embeddings="lm_head.weight" not in shapes,
        **QWEN_TOKEN_IDS,
        **QWEN25_VL_TOKEN_IDS,
    )
    return Qwen2_5_VLConfig(**options)


def mrope_section(head_dim: int) -> list[int]:
    """Qwen2.5-VL's temporal, height and width rotary sections for a head width."""
    return [head_dim // 8, head_dim * 3 // 16, head_dim * 3 // 16]


def vision_config(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """The vision tower's config for canonical Qwen2.5-VL shapes."""
    visual = "model.visual."
    hidden, channels, temporal, patch = shape(shapes, visual + "patch_embed.proj.weight")[:4]
    depth = count_layers(shapes, visual + "blocks.")
    merged = shape(shapes, visual + "merger.mlp.0.weight")[1]
    merge = math.isqrt(merged // hidden) if hidden else 0
    if merge * merge * hidden != merged:
        raise LayoutError(f"the vision merger takes {merged} inputs, not a square of {hidden}")
    return {
        "depth": depth,
        "hidden_size": hidden,
        "num_heads": vision_heads(hidden),
        "intermediate_size": shape(shapes, visual + "blocks.0.mlp.gate_proj.weight")[0],
        "out_hidden_size": shape(shapes, visual + "merger.mlp.2.weight")[0],
        "in_channels": channels,
        "patch_size": patch,
        "temporal_patch_size": temporal,
        "spatial_merge_size": merge,
        "window_size": 112,
        "fullatt_block_indexes": [i for i in range(depth) if i % 8 == 7] or [depth - 1],
        "tokens_per_second": 2,
        "hidden_act": "silu",
    }
