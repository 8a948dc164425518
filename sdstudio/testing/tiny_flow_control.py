"""Tiny ControlNets for the tiny Flux.1, SD 3 and Qwen-Image models of
:mod:`sdstudio.testing.tiny_flow`.

A ControlNet made from a transformer (diffusers' ``from_transformer``) starts with its
control input and output projections at zero, so it would change nothing; they are
randomised here (with a fixed seed) so that it guides the picture. Each is saved as a
diffusers folder or as one ``.safetensors`` file: with diffusers' key names (as InstantX
and Shakker publish Flux ControlNets), or for SD 3 in Stability AI's original layout of
its SD 3.5 Large ControlNets (fused ``attn.qkv``, ``mlp.fc1``, ``adaLN_modulation``, no
text stream of its own).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FLUX_UNION_MODES = 7
"""InstantX's Flux Union ControlNet reads 7 control modes."""


def _randomise(model: Any, prefixes: tuple[str, ...], seed: int, scale: float = 0.3) -> Any:
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(prefixes):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return model.eval()


def build_tiny_flux_controlnet(model_folder: Path, *, union: bool = False, seed: int = 1) -> Any:
    """A ``FluxControlNetModel`` made from the transformer of the tiny Flux.1 model saved
    in ``model_folder`` (a Union one with ``union``)."""
    from diffusers import FluxControlNetModel, FluxTransformer2DModel

    transformer = FluxTransformer2DModel.from_pretrained(
        model_folder / "transformer", local_files_only=True
    )
    config = dict(transformer.config)
    if union:
        config["num_mode"] = FLUX_UNION_MODES
    controlnet = FluxControlNetModel.from_config(config)
    for part in ("pos_embed", "time_text_embed", "context_embedder", "x_embedder"):
        getattr(controlnet, part).load_state_dict(getattr(transformer, part).state_dict())
    controlnet.transformer_blocks.load_state_dict(transformer.transformer_blocks.state_dict())
    controlnet.single_transformer_blocks.load_state_dict(
        transformer.single_transformer_blocks.state_dict()
    )
    zeroed = ("controlnet_x_embedder", "controlnet_blocks", "controlnet_single_blocks")
    if union:  # a strong mode embedding, so that each mode guides its own way
        _randomise(controlnet, ("controlnet_mode_embedder",), seed + 1, scale=4.0)
    return _randomise(controlnet, zeroed, seed)


def build_tiny_sd3_controlnet(model_folder: Path, *, original: bool = False, seed: int = 1) -> Any:
    """An ``SD3ControlNetModel`` made from the transformer of the tiny SD 3 model saved in
    ``model_folder``; ``original`` makes one shaped as Stability AI's SD 3.5 Large
    ControlNets (image stream only, the model's position embedding)."""
    from diffusers import SD3ControlNetModel, SD3Transformer2DModel

    transformer = SD3Transformer2DModel.from_pretrained(
        model_folder / "transformer", local_files_only=True
    )
    config = {**dict(transformer.config), "num_layers": 1, "extra_conditioning_channels": 0}
    if original:
        config |= {
            "joint_attention_dim": None,
            "use_pos_embed": False,
            "pos_embed_type": None,
            "force_zeros_for_pooled_projection": False,
        }
    controlnet = SD3ControlNetModel.from_config(config)
    controlnet.time_text_embed.load_state_dict(transformer.time_text_embed.state_dict())
    if not original:
        controlnet.pos_embed.load_state_dict(transformer.pos_embed.state_dict())
        controlnet.context_embedder.load_state_dict(transformer.context_embedder.state_dict())
        controlnet.transformer_blocks.load_state_dict(
            transformer.transformer_blocks.state_dict(), strict=False
        )
    zeroed = ("pos_embed_input", "controlnet_blocks")
    zeroed += ("transformer_blocks",) if original else ()
    return _randomise(controlnet, zeroed, seed)


def build_tiny_qwen_image_controlnet(model_folder: Path, *, seed: int = 1) -> Any:
    """A ``QwenImageControlNetModel`` made from the transformer of the tiny Qwen-Image
    model saved in ``model_folder``."""
    from diffusers import QwenImageControlNetModel, QwenImageTransformer2DModel

    transformer = QwenImageTransformer2DModel.from_pretrained(
        model_folder / "transformer", local_files_only=True
    )
    config = transformer.config
    controlnet = QwenImageControlNetModel.from_transformer(
        transformer,
        num_layers=1,
        attention_head_dim=config.attention_head_dim,
        num_attention_heads=config.num_attention_heads,
    )
    return _randomise(controlnet, ("controlnet_x_embedder", "controlnet_blocks"), seed)


def save_tiny_qwen_image_controlnet(model_folder: Path, directory: Path, *, seed: int = 1) -> Path:
    """Save a tiny Qwen-Image ControlNet as a diffusers folder."""
    build_tiny_qwen_image_controlnet(model_folder, seed=seed).save_pretrained(directory)
    return directory


def save_tiny_zimage_controlnet(model_folder: Path, directory: Path, *, seed: int = 1) -> Path:
    """Save a tiny Z-Image ControlNet (the control blocks of Z-Image Turbo Fun's Union,
    which borrows the model's embedders when its pipeline is built) as a diffusers folder,
    with the widths of the tiny Z-Image model saved in ``model_folder``."""
    import json

    from diffusers import ZImageControlNetModel

    own = json.loads((model_folder / "transformer" / "config.json").read_text("utf-8"))
    keys = ("all_patch_size", "all_f_patch_size", "dim", "n_heads", "n_kv_heads", "norm_eps")
    config = {key: own[key] for key in (*keys, "qk_norm", "n_refiner_layers")}
    import torch

    torch.manual_seed(seed)
    controlnet = ZImageControlNetModel(
        control_layers_places=[0],
        control_in_dim=own["in_channels"],
        **config,
    )
    _randomise(controlnet, ("control_layers",), seed)
    controlnet.save_pretrained(directory)
    return directory


def save_tiny_flux_controlnet(
    model_folder: Path, directory: Path, *, union: bool = False, seed: int = 1
) -> Path:
    """Save a tiny Flux.1 ControlNet as a diffusers folder."""
    build_tiny_flux_controlnet(model_folder, union=union, seed=seed).save_pretrained(directory)
    return directory


def save_tiny_sd3_controlnet(
    model_folder: Path, directory: Path, *, original: bool = False, seed: int = 1
) -> Path:
    """Save a tiny SD 3 ControlNet as a diffusers folder."""
    controlnet = build_tiny_sd3_controlnet(model_folder, original=original, seed=seed)
    controlnet.save_pretrained(directory)
    return directory


def save_flow_controlnet_file(folder: Path, path: Path, *, original: bool = False) -> Path:
    """Save the ControlNet of a diffusers ``folder`` as one ``.safetensors`` file, with
    diffusers' key names or (``original``, SD 3 only) Stability AI's."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    if original:
        tensors = to_sd3_original_layout(tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def to_sd3_original_layout(tensors: dict[str, Any]) -> dict[str, Any]:
    """Diffusers SD 3 ControlNet keys in Stability AI's SD 3.5 ControlNet layout (query,
    key and value fused in ``attn.qkv``)."""
    import torch

    names = (
        (".attn.to_out.0.", ".attn.proj."),
        (".ff.net.0.proj.", ".mlp.fc1."),
        (".ff.net.2.", ".mlp.fc2."),
        (".norm1.linear.", ".adaLN_modulation.1."),
    )
    out: dict[str, Any] = {}
    for key, value in tensors.items():
        if ".attn.to_q." in key:
            parts = [tensors[key.replace(".to_q.", f".{p}.")] for p in ("to_q", "to_k", "to_v")]
            out[key.replace(".attn.to_q.", ".attn.qkv.")] = torch.cat(parts, dim=0)
            continue
        if ".attn.to_k." in key or ".attn.to_v." in key:
            continue
        for new, old in names:
            key = key.replace(new, old)
        out[key] = value
    return out
