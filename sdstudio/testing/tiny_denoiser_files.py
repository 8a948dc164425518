"""Tiny random transformer files of the flow families, in the layouts users have them:
the original layout (Black Forest Labs', Stability AI's, Tongyi's, as ComfyUI keeps
them, optionally under ``model.diffusion_model.``), diffusers' layout, fp8 weights
(plain or ComfyUI's scaled fp8) and city96-style GGUF files (F16, BF16, Q8_0).

The models are the real diffusers classes with the widths of
:mod:`sdstudio.testing.tiny_flow` (so they fit its tiny text encoders), built with a
fixed seed; where a config value cannot be read from shapes they follow the rules of
:mod:`sdstudio.engine.parts.denoiser_configs` (SD 3's ``sample_size`` 128, Z-Image's
``axes_lens``). The original layout comes from :mod:`sdstudio.testing.original_layouts`,
written independently of the loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdstudio.testing.original_layouts import to_original_layout
from sdstudio.testing.tiny_parts import CLIP_HIDDEN, QWEN_HIDDEN, T5_HIDDEN

FAMILIES = ("flux1", "chroma", "sd3", "zimage", "qwen-image", "flux2-klein")

GGUF_ARCHITECTURES = {
    "flux1": "flux",
    "chroma": "flux",
    "sd3": "sd3",
    "zimage": "lumina2",
    "qwen-image": "qwen_image",
    "flux2-klein": "flux2",
}
"""The ``general.architecture`` of city96's (and QuantStack's) GGUF files (city96's
converter files Chroma as Flux)."""

_SD3_T5 = 3 * CLIP_HIDDEN + 32
_CONFIGS: dict[str, dict[str, Any]] = {
    "flux1": dict(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_HIDDEN,
        pooled_projection_dim=CLIP_HIDDEN,
        guidance_embeds=False,
        axes_dims_rope=(4, 6, 6),
    ),
    "chroma": dict(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_HIDDEN,
        axes_dims_rope=(4, 6, 6),
        approximator_num_channels=16,
        approximator_hidden_dim=32,
        approximator_layers=2,
    ),
    "sd3": dict(
        sample_size=128,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=_SD3_T5,
        caption_projection_dim=32,
        pooled_projection_dim=3 * CLIP_HIDDEN,
        pos_embed_max_size=64,
    ),
    "zimage": dict(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        norm_eps=1e-5,
        qk_norm=True,
        cap_feat_dim=QWEN_HIDDEN,
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[8, 4, 4],
        axes_lens=[1536, 512, 512],
    ),
    "qwen-image": dict(
        patch_size=2,
        in_channels=64,
        out_channels=16,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=QWEN_HIDDEN,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    ),
    "flux2-klein": dict(
        patch_size=1,
        in_channels=128,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=3 * QWEN_HIDDEN,
        timestep_guidance_channels=256,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
    ),
}
SD35_OPTIONS: dict[str, Any] = {"qk_norm": "rms_norm", "dual_attention_layers": (0,)}
"""SD 3.5 Medium's extras: query/key norms and a second attention in the first block."""


def tiny_denoiser_config(family: str, **overrides: Any) -> dict[str, Any]:
    """The arguments of a tiny transformer of ``family`` (``overrides`` on top)."""
    return {**_CONFIGS[family], **overrides}


def build_tiny_denoiser(family: str, *, seed: int = 0, **overrides: Any) -> Any:
    """A tiny random diffusers transformer of ``family``, the same for the same seed."""
    import diffusers

    from sdstudio.engine.parts.denoiser_configs import CLASSES

    torch.manual_seed(seed)
    model = getattr(diffusers, CLASSES[family])(**tiny_denoiser_config(family, **overrides))
    if family == "zimage":  # its pad tokens start as torch.empty
        with torch.no_grad():
            for pad in (model.x_pad_token, model.cap_pad_token):
                pad.copy_(torch.linspace(-1, 1, pad.numel()).view_as(pad))
    return model.eval()


def tiny_denoiser_output(model: Any, family: str, *, seed: int = 0) -> torch.Tensor:
    """The output of one forward pass of a tiny transformer on fixed random inputs
    (a 16 x 16 latent, 7 text tokens), computed in the model's dtype."""
    config = model.config
    dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
    if getattr(model, "hf_quantizer", None) is not None:
        dtype = model.hf_quantizer.quantization_config.compute_dtype
    generator = torch.Generator().manual_seed(seed)

    def noise(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(dtype)

    tokens, timestep = 7, torch.tensor([500.0]).to(dtype)
    with torch.no_grad():
        if family in ("flux1", "chroma", "flux2-klein"):
            axes = len(config.axes_dims_rope)
            ids = torch.zeros(64, axes)
            ids[:, -2], ids[:, -1] = torch.arange(64) // 8, torch.arange(64) % 8
            arguments: dict[str, Any] = {
                "hidden_states": noise(1, 64, config.in_channels),
                "encoder_hidden_states": noise(1, tokens, config.joint_attention_dim),
                "timestep": timestep / 1000,
                "img_ids": ids,
                "txt_ids": torch.zeros(tokens, axes),
            }
            if family == "flux1":
                arguments["pooled_projections"] = noise(1, config.pooled_projection_dim)
            if config.get("guidance_embeds"):
                arguments["guidance"] = torch.tensor([3.5]).to(dtype)
            return model(**arguments).sample
        if family == "sd3":
            return model(
                hidden_states=noise(1, config.in_channels, 16, 16),
                encoder_hidden_states=noise(1, tokens, config.joint_attention_dim),
                pooled_projections=noise(1, config.pooled_projection_dim),
                timestep=timestep,
            ).sample
        if family == "qwen-image":
            return model(
                hidden_states=noise(1, 64, config.in_channels),
                encoder_hidden_states=noise(1, tokens, config.joint_attention_dim),
                encoder_hidden_states_mask=torch.ones(1, tokens, dtype=torch.long),
                timestep=timestep / 1000,
                img_shapes=[[(1, 8, 8)]],
            ).sample
        latents = [noise(config.in_channels, 1, 16, 16)]
        output = model(latents, timestep / 1000, [noise(tokens, config.cap_feat_dim)]).sample
        return torch.stack(list(output))


def write_denoiser_file(
    path: Path,
    family: str,
    model: Any,
    *,
    layout: str = "original",
    prefix: str = "",
    fp8: str = "",
    dtype: torch.dtype | None = None,
) -> Path:
    """Save ``model`` as a lone transformer file: ``layout`` ``"original"`` or
    ``"diffusers"``, names under ``prefix`` (``"model.diffusion_model."``), tensors in
    ``dtype``; ``fp8="plain"`` stores linear weights as float8_e4m3fn, ``fp8="scaled"``
    as ComfyUI's scaled fp8 (each over its ``scale_weight``, a ``scaled_fp8`` marker)."""
    from safetensors.torch import save_file

    tensors = {key: value.detach() for key, value in model.state_dict().items()}
    if dtype is not None:
        tensors = {key: value.to(dtype) for key, value in tensors.items()}
    if layout == "original":
        tensors = to_original_layout(family, tensors)
    if fp8:
        tensors = _to_fp8(tensors, scaled=fp8 == "scaled")
    stored = {prefix + key: value.contiguous() for key, value in tensors.items()}
    save_file(stored, str(path), metadata={"format": "pt"})
    return path


def fp8_rounded(model: Any, *, scaled: bool = False) -> Any:
    """``model`` with its linear weights rounded through float8_e4m3fn as
    :func:`write_denoiser_file` stores them (a reference for an fp8 file's outputs)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2 and name.endswith(".weight"):
                scale = _fp8_scale(parameter) if scaled else torch.tensor(1.0)
                rounded = (parameter / scale).to(torch.float8_e4m3fn).to(parameter.dtype) * scale
                parameter.copy_(rounded)
    return model


def _fp8_scale(weight: torch.Tensor) -> torch.Tensor:
    return (weight.detach().abs().max().float() / 448.0).clamp(min=1e-12)


def _to_fp8(tensors: dict[str, torch.Tensor], *, scaled: bool) -> dict[str, torch.Tensor]:
    stored: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if value.dim() != 2 or not key.endswith(".weight"):
            stored[key] = value
        elif scaled:
            scale = _fp8_scale(value)
            stored[key] = (value.float() / scale).to(torch.float8_e4m3fn)
            stored[key.removesuffix(".weight") + ".scale_weight"] = scale.reshape(())
        else:
            stored[key] = value.to(torch.float8_e4m3fn)
    if scaled:
        stored["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return stored


def write_denoiser_gguf(path: Path, family: str, model: Any, *, kind: str = "F16") -> Path:
    """Save ``model`` as city96's GGUF files are made: the original layout, vectors and
    small tensors in F32, the other matrices in ``kind`` (``"F16"``, ``"BF16"`` or
    ``"Q8_0"``; a Q8_0 file keeps the input and output layers and matrices whose rows do
    not fill 32-value blocks in F16)."""
    import gguf

    types = gguf.GGMLQuantizationType
    tensors = to_original_layout(family, dict(model.state_dict()))
    writer = gguf.GGUFWriter(str(path), arch=GGUF_ARCHITECTURES[family])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    kept = ("img_in.", "txt_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer.")
    for key, value in tensors.items():
        data = value.detach().float().numpy()
        target = types[kind]
        if data.ndim == 1 or data.size <= 1024:
            target = types.F32
        elif kind == "Q8_0" and (key.startswith(kept) or data.shape[-1] % 32):
            target = types.F16
        stored = gguf.quants.quantize(np.ascontiguousarray(data), target)
        writer.add_tensor(key, stored, raw_dtype=target)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
