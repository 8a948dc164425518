"""Telling which transformer a file holds, from its tensor names and shapes alone, and
naming the models sdstudio recognises but does not run as a lone transformer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sdstudio.engine.errors import ModelError
from sdstudio.engine.families.flux import FILL_CHANNELS
from sdstudio.engine.parts.denoiser_configs import (
    CLASSES,
    Shapes,
    denoiser_config,
    family_and_layout,
    transformer_shapes,
)

_NAMES = {
    "flux1": "Flux.1",
    "chroma": "Chroma",
    "sd3": "SD 3.x",
    "zimage": "Z-Image",
    "qwen-image": "Qwen-Image",
    "flux2-klein": "Flux.2 Klein",
}
FLUX_CHANNELS = 64
"""A Flux.1 text-to-image transformer's input: 16 latent channels packed 2 x 2."""
DEPTH_CHANNELS = 128
"""Flux.1 Depth's and Canny's: the latents and the control image's latents."""
_SD3_NAMES = {"Medium": "SD 3 Medium", "Large": "SD 3.5 Large", "3.5 Medium": "SD 3.5 Medium"}


@dataclass(frozen=True, slots=True)
class DenoiserFile:
    """What a transformer file is, as its tensor names and shapes tell."""

    family: str
    """The family id: ``"flux1"``, ``"chroma"``, ``"sd3"``, ``"zimage"``, ``"qwen-image"``,
    ``"flux2-klein"``."""
    variant: str
    """``"dev"``, ``"schnell"`` or ``"Fill"`` (Flux.1), ``"Medium"``, ``"Large"`` or
    ``"3.5 Medium"`` (SD 3), ``"4B"`` or ``"9B"`` (Flux.2 Klein), else ``""``."""
    label: str
    """For users: ``"Flux.1 dev transformer (GGUF Q4_K)"``."""
    layout: str
    """``"original"`` or ``"diffusers"``: how its tensors are named."""
    quantization: str = ""
    """``""``, ``"fp8"`` or ``"GGUF <type>"``."""


def identify_denoiser(shapes: Shapes, *, quantization: str = "") -> DenoiserFile | None:
    """The transformer a file holds, from its tensor names and shapes (a safetensors
    header or :func:`~sdstudio.engine.parts.gguf_files.gguf_shapes`); None when it is no
    transformer of a family sdstudio runs. ``quantization`` (``"fp8"``, ``"GGUF Q4_K"``)
    is told by the caller, as shapes do not tell it."""
    inner = transformer_shapes(shapes)
    found = family_and_layout(inner)
    if found is None or found[0] not in CLASSES:
        return None
    family, layout = found
    try:
        config = denoiser_config(inner, family)
    except ModelError:
        return None
    if not runnable(family, config):
        return None
    variant = _variant(family, config)
    name = _SD3_NAMES.get(variant, _NAMES[family]) if family == "sd3" else _NAMES[family]
    if variant and family != "sd3":
        name += f" {variant}"
    label = f"{name} transformer" + (f" ({quantization})" if quantization else "")
    return DenoiserFile(family, variant, label, layout, quantization)


def runnable(family: str, config: Mapping[str, Any]) -> bool:
    """Whether sdstudio runs a transformer of ``family`` with this config: of Flux.1's
    models, the text-to-image ones and Fill, not Depth or Canny (whose control image
    no pipeline here gives)."""
    if family == "flux1":
        return config["in_channels"] in (FLUX_CHANNELS, FILL_CHANNELS)
    return True


def _variant(family: str, config: Mapping[str, Any]) -> str:
    if family == "flux1":
        if config["in_channels"] == FILL_CHANNELS:
            return "Fill"
        return "dev" if config["guidance_embeds"] else "schnell"
    if family == "sd3":
        if config["num_layers"] == 38:
            return "Large"
        if config["num_layers"] == 24:
            return "3.5 Medium" if config["dual_attention_layers"] else "Medium"
    if family == "flux2-klein":
        width = config["num_attention_heads"] * config["attention_head_dim"]
        return {3072: "4B", 4096: "9B"}.get(width, "")
    return ""


def foreign_denoiser(shapes: Shapes) -> str | None:
    """The name of a model sdstudio recognises but does not run as a lone transformer
    (``"Flux.2 dev"``, ``"Chroma Radiance"``, ``"Flux.1 Depth or Canny"`` ...), for
    messages."""
    s = transformer_shapes(shapes)
    found = family_and_layout(s)
    if found is not None:
        if found[0] in _FOREIGN_ARCHITECTURES:
            return _FOREIGN_ARCHITECTURES[found[0]]
        if found[0] == "flux1":
            width = s.get("img_in.weight", s.get("x_embedder.weight", (0, 0)))[-1]
            return "Flux.1 Depth or Canny" if width == DEPTH_CHANNELS else None
        return None
    for marker, name in _FOREIGN:
        if any(marker in key for key in s):
            return name
    return None


_FOREIGN_ARCHITECTURES = {"flux2-dev": "Flux.2 dev", "chroma-radiance": "Chroma Radiance"}
_FOREIGN = (
    ("lora_", "a LoRA"),
    (".lora.", "a LoRA"),
    ("lora_A.", "a LoRA"),
    ("lokr_w1", "a LoRA"),
    ("hada_w1", "a LoRA"),
    ("input_blocks.0.0.weight", "a Stable Diffusion UNet"),
    ("down_blocks.0.resnets.0.conv1.weight", "a Stable Diffusion UNet or VAE"),
    ("txt_in.individual_token_refiner", "HunyuanVideo"),
    ("head.modulation", "Wan"),
    ("double_stream_blocks.0.block", "HiDream"),
    ("double_layers.0.attn.w1q.weight", "AuraFlow"),
    ("layers.0.adaLN_modulation.1.weight", "Lumina 2"),
    ("adaln_single.emb", "LTX-Video or PixArt"),
    ("encoder.block.0.layer.0.SelfAttention", "a T5 text encoder"),
    ("text_model.encoder.layers.", "a CLIP text encoder"),
    ("embeddings.position_embedding.weight", "a CLIP text encoder"),
    ("self_attn.q_proj.weight", "a language-model text encoder"),
    ("decoder.up_blocks.", "a VAE"),
    ("decoder.up.", "a VAE"),
)
