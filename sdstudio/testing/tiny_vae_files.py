"""Tiny random VAE files of the flow families, in the layouts users have them.

Each ``build_tiny_*_vae(seed)`` gives the VAE that :mod:`sdstudio.testing.tiny_flow`
builds for its families with the same seed (same config, same weights), and each
``write_tiny_*_vae(path, seed)`` saves it as one safetensors file:

- ``layout="original"``: as ComfyUI keeps them in ``models/vae`` (Black Forest Labs'
  ``ae.safetensors`` and ``flux2-vae.safetensors``, the LDM layout of SD VAEs and
  ``first_stage_model.`` in SD 3.5 checkpoints, Wan 2.1's layout for Qwen-Image);
- ``layout="diffusers"``: the diffusers names, as in a model's ``vae`` folder.

The original names are written here from the diffusers ones (the inverse of what
:mod:`sdstudio.engine.parts.vae_files` reads).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sdstudio.testing.tiny_parts import FLUX_VAE_SCALING, kl_vae

LAYOUTS = ("original", "diffusers")


# --- models ---------------------------------------------------------------------


def build_tiny_kl16_vae(seed: int = 0, *, scaling: tuple[float, float] = FLUX_VAE_SCALING) -> Any:
    """The tiny 16-channel ``AutoencoderKL`` of the Flux.1, SD3 and Z-Image pipelines."""
    return kl_vae(seed, scaling=scaling).eval()


def build_tiny_flux2_vae(seed: int = 0) -> Any:
    """The tiny ``AutoencoderKLFlux2`` of the Flux.2 Klein pipeline."""
    import torch
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(seed)
    vae: Any = AutoencoderKLFlux2(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 16, 16),
        layers_per_block=1,
        latent_channels=32,
        norm_num_groups=8,
        sample_size=64,
    )
    return vae.eval()


def build_tiny_qwen_image_vae(seed: int = 0, *, num_res_blocks: int = 1) -> Any:
    """The tiny ``AutoencoderKLQwenImage`` of the Qwen-Image pipeline (``num_res_blocks=2``
    is the real model's depth)."""
    import torch
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(seed)
    vae: Any = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=16,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=num_res_blocks,
        temperal_downsample=[False, True, True],
    )
    return vae.eval()


def build_tiny_sd_vae(seed: int = 0) -> Any:
    """A tiny 4-channel SD 1.x / SDXL ``AutoencoderKL`` (with quant convolutions)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae: Any = AutoencoderKL(
        block_out_channels=(32, 32, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=128,
    )
    return vae.eval()


# --- files ----------------------------------------------------------------------


def write_tiny_kl16_vae(
    path: str | Path,
    seed: int = 0,
    *,
    layout: str = "original",
    prefix: str = "",
    scaling: tuple[float, float] = FLUX_VAE_SCALING,
) -> Path:
    """Save the tiny 16-channel VAE (``ae.safetensors``); ``prefix="first_stage_model."``
    writes it as SD 3.5 checkpoints carry it."""
    vae = build_tiny_kl16_vae(seed, scaling=scaling)
    return _save(path, _layout(vae, layout, kl_to_original), prefix)


def write_tiny_flux2_vae(path: str | Path, seed: int = 0, *, layout: str = "original") -> Path:
    """Save the tiny Flux.2 VAE (``flux2-vae.safetensors``)."""
    vae = build_tiny_flux2_vae(seed)
    state = _layout(vae, layout, lambda s: kl_to_original(s, nested_quant=True))
    return _save(path, state)


def write_tiny_qwen_image_vae(
    path: str | Path, seed: int = 0, *, layout: str = "original", num_res_blocks: int = 1
) -> Path:
    """Save the tiny Qwen-Image VAE (``qwen_image_vae.safetensors``, Wan 2.1's layout)."""
    vae = build_tiny_qwen_image_vae(seed, num_res_blocks=num_res_blocks)
    state = _layout(vae, layout, lambda s: wan_to_original(s, num_res_blocks=num_res_blocks))
    return _save(path, state)


def write_tiny_sd_vae(path: str | Path, seed: int = 0, *, layout: str = "original") -> Path:
    """Save a tiny SD 1.x / SDXL VAE (4 latent channels)."""
    return _save(path, _layout(build_tiny_sd_vae(seed), layout, kl_to_original))


def write_tiny_vae(kind: str, path: str | Path, seed: int = 0, *, layout: str = "original") -> Path:
    """Save the tiny VAE of ``kind`` (``kl16``, ``flux2``, ``qwen-image``, ``kl4``)."""
    writers = {
        "kl16": write_tiny_kl16_vae,
        "flux2": write_tiny_flux2_vae,
        "qwen-image": write_tiny_qwen_image_vae,
        "kl4": write_tiny_sd_vae,
    }
    return writers[kind](path, seed, layout=layout)


def _layout(vae: Any, layout: str, to_original: Any) -> dict[str, Any]:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    state = {key: value.detach() for key, value in vae.state_dict().items()}
    return to_original(state) if layout == "original" else state


def _save(path: str | Path, state: dict[str, Any], prefix: str = "") -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({prefix + key: value.contiguous() for key, value in state.items()}, str(path))
    return path


# --- diffusers names -> original names --------------------------------------------

_KL_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def kl_to_original(state: dict[str, Any], *, nested_quant: bool = False) -> dict[str, Any]:
    """A diffusers ``AutoencoderKL`` / ``AutoencoderKLFlux2`` state in the LDM / Black
    Forest Labs layout: attention projections as 1x1 convolutions; ``nested_quant`` puts
    the quant convolutions inside the encoder and decoder (Flux.2) and leaves out the
    batch norm's step count."""
    ups = 1 + max(int(m[1]) for k in state if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k)))
    out: dict[str, Any] = {}
    for key, value in state.items():
        if nested_quant and key == "bn.num_batches_tracked":
            continue
        attention = re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(\w+)", key)
        if attention:
            side, layer, kind = attention.groups()
            if layer != "group_norm" and kind == "weight":
                value = value[:, :, None, None]
            out[f"{side}.mid.attn_1.{_KL_ATTENTION[layer]}.{kind}"] = value
            continue
        new = key.replace(".conv_shortcut.", ".nin_shortcut.")
        new = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", new)
        new = re.sub(
            r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new
        )
        new = re.sub(
            r"^decoder\.up_blocks\.(\d+)\.resnets\.",
            lambda m: f"decoder.up.{ups - 1 - int(m[1])}.block.",
            new,
        )
        new = re.sub(
            r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
            lambda m: f"decoder.up.{ups - 1 - int(m[1])}.upsample.",
            new,
        )
        new = re.sub(r"\.mid_block\.resnets\.(\d)\.", lambda m: f".mid.block_{int(m[1]) + 1}.", new)
        new = re.sub(r"\.conv_norm_out\.", ".norm_out.", new)
        if nested_quant:
            new = re.sub(r"^quant_conv\.", "encoder.quant_conv.", new)
            new = re.sub(r"^post_quant_conv\.", "decoder.post_quant_conv.", new)
        out[new] = value
    return out


_WAN_RESIDUAL = {
    "norm1.gamma": "residual.0.gamma",
    "conv1.weight": "residual.2.weight",
    "conv1.bias": "residual.2.bias",
    "norm2.gamma": "residual.3.gamma",
    "conv2.weight": "residual.6.weight",
    "conv2.bias": "residual.6.bias",
    "conv_shortcut.weight": "shortcut.weight",
    "conv_shortcut.bias": "shortcut.bias",
}


def wan_to_original(state: dict[str, Any], *, num_res_blocks: int) -> dict[str, Any]:
    """A diffusers ``AutoencoderKLQwenImage`` state in Wan 2.1's original layout (flat
    ``downsamples`` / ``upsamples`` lists, ``residual`` sequences, ``head``)."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        out[_wan_original_name(key, num_res_blocks)] = value
    return out


def _wan_original_name(key: str, num_res_blocks: int) -> str:
    for old, new in (("quant_conv.", "conv1."), ("post_quant_conv.", "conv2.")):
        if key.startswith(old):
            return new + key[len(old) :]
    side, _, rest = key.partition(".")
    for old, new in (("conv_in.", "conv1."), ("norm_out.", "head.0."), ("conv_out.", "head.2.")):
        if rest.startswith(old):
            return f"{side}.{new}{rest[len(old) :]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d)\.(.+)", rest):
        return f"{side}.middle.{2 * int(m[1])}.{_WAN_RESIDUAL[m[2]]}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest):
        return f"{side}.middle.1.{m[1]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(.+)", rest):
        return f"{side}.downsamples.{m[1]}.{_WAN_RESIDUAL.get(m[2], m[2])}"
    stride = num_res_blocks + 2
    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        index = int(m[1]) * stride + int(m[2])
        return f"{side}.upsamples.{index}.{_WAN_RESIDUAL[m[3]]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", rest):
        return f"{side}.upsamples.{int(m[1]) * stride + num_res_blocks + 1}.{m[2]}"
    raise ValueError(f"no Wan name for {key}")
