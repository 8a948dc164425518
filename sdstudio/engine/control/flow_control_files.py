"""ControlNet files of the transformer families (Flux.1, SD 3.x, Qwen-Image, Z-Image):
their family from tensor names and shapes or a folder's config, and loading them offline.

A diffusers folder names its class in ``config.json`` and loads with
``from_pretrained(local_files_only=True)``. A single file with diffusers' key names
(InstantX's and Shakker's Flux ControlNets, Union ones included, kept as one file by
ComfyUI users) has its config read from its shapes: widths, block counts, attention head
size (from the query norm), the number of Union modes; what no weight tells (the rotary
axes, SD 3's position grid) comes from the model's own transformer config. Stability
AI's SD 3.5 Large ControlNets (blur, canny, depth) keep the original MMDiT names
(``attn.qkv``, ``mlp.fc1``, ``adaLN_modulation``), which are renamed to diffusers' here.
XLabs' Flux ControlNets keep Black Forest Labs' layout (``double_blocks``), which no
maintained converter reads, and are refused by name. Nothing is ever downloaded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import ModelError

FLOW_LABELS = {"flux1": "Flux.1", "sd3": "SD 3.x", "qwen-image": "Qwen-Image", "zimage": "Z-Image"}
"""The transformer families whose ControlNets run, and their labels."""

CLASSES = {
    "flux1": "FluxControlNetModel",
    "sd3": "SD3ControlNetModel",
    "qwen-image": "QwenImageControlNetModel",
    "zimage": "ZImageControlNetModel",
}
"""Each family's diffusers ControlNet class."""

_FAMILY_OF_CLASS = {name: family for family, name in CLASSES.items()}


def flow_file_family(keys: list[str], name: str) -> tuple[str, str] | None:
    """``(family, label)`` of a transformer-family ControlNet from its tensor names
    (``None``: not one); :class:`ModelError` for a layout that cannot run."""
    family = _family_of_keys(keys)
    original = any(k.startswith("double_blocks.") for k in keys)
    if (
        family is None
        and original
        and any(k.startswith(("controlnet_blocks.", "input_hint_block.")) for k in keys)
    ):
        raise ModelError(
            f"{name} is an XLabs Flux ControlNet in Black Forest Labs' original layout "
            "(double_blocks), which sdstudio cannot read; use a Flux ControlNet in "
            "diffusers' layout (InstantX, Shakker Union, or a diffusers folder)."
        )
    if family is None:
        return None
    return family, FLOW_LABELS[family]


def flow_folder_family(config: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(family, label)`` of a diffusers ControlNet folder's config (``None``: not a
    transformer family's)."""
    family = _FAMILY_OF_CLASS.get(str(config.get("_class_name", "")))
    return None if family is None else (family, FLOW_LABELS[family])


def _family_of_keys(keys: list[str]) -> str | None:
    marks = set(keys)
    if "controlnet_x_embedder.weight" in marks and "context_embedder.weight" in marks:
        return "flux1"
    if "controlnet_x_embedder.weight" in marks and "txt_in.weight" in marks:
        return "qwen-image"
    if "pos_embed_input.proj.weight" in marks and any(
        k.startswith("controlnet_blocks.") for k in keys
    ):
        return "sd3"
    if any(k.startswith(("control_all_x_embedder.", "control_layers.")) for k in keys):
        return "zimage"
    return None


def load_flow_controlnet(
    path: Path, family: str, *, folder: bool, dtype: Any, base: Mapping[str, Any] | None
) -> Any:
    """The diffusers ControlNet of ``family`` at ``path`` in ``dtype``; ``base`` is the
    model's transformer config (what the weights cannot tell)."""
    import diffusers

    cls = getattr(diffusers, CLASSES[family])
    if folder:
        return cls.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
    if family == "zimage":
        raise ModelError(
            f"The Z-Image ControlNet {path.name} is a single file; sdstudio runs Z-Image "
            "ControlNets as diffusers folders (with their config.json)."
        )
    state = _state_dict(path)
    if family == "sd3" and any(".attn.qkv." in key for key in state):
        state = sd3_original_to_diffusers(state)
    config = flow_config(family, {k: tuple(v.shape) for k, v in state.items()}, base or {})
    model = cls.from_config(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        names = ", ".join([*missing, *unexpected][:3])
        raise ModelError(f"The ControlNet {path.name} does not load ({names}).")
    return model.to(dtype)


def flow_config(
    family: str, shapes: Mapping[str, tuple[int, ...]], base: Mapping[str, Any]
) -> dict[str, Any]:
    """A ControlNet config of ``family`` read from tensor shapes (diffusers' names)."""
    if family == "flux1":
        return _flux_config(shapes, base)
    if family == "sd3":
        return _sd3_config(shapes, base)
    return _qwen_config(shapes, base)


def _count(shapes: Mapping[str, Any], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for key in shapes if (m := pattern.match(key))}
    return max(found) + 1 if found else 0


def _head_dim(shapes: Mapping[str, tuple[int, ...]], prefixes: tuple[str, ...]) -> int | None:
    for prefix in prefixes:
        shape = shapes.get(f"{prefix}0.attn.norm_q.weight")
        if shape:
            return int(shape[0])
    return None


def _flux_config(shapes: Mapping[str, tuple[int, ...]], base: Mapping[str, Any]) -> dict[str, Any]:
    inner, in_channels = shapes["x_embedder.weight"]
    head = _head_dim(shapes, ("transformer_blocks.", "single_transformer_blocks."))
    head = head or int(base.get("attention_head_dim", 128))
    config: dict[str, Any] = {
        "patch_size": int(base.get("patch_size", 1)),
        "in_channels": int(in_channels),
        "num_layers": _count(shapes, "transformer_blocks."),
        "num_single_layers": _count(shapes, "single_transformer_blocks."),
        "attention_head_dim": head,
        "num_attention_heads": int(inner) // head,
        "joint_attention_dim": int(shapes["context_embedder.weight"][1]),
        "pooled_projection_dim": int(shapes["time_text_embed.text_embedder.linear_1.weight"][1]),
        "guidance_embeds": any(k.startswith("time_text_embed.guidance_embedder.") for k in shapes),
        "axes_dims_rope": list(base.get("axes_dims_rope", (16, 56, 56))),
    }
    if "controlnet_mode_embedder.weight" in shapes:
        config["num_mode"] = int(shapes["controlnet_mode_embedder.weight"][0])
    if "input_hint_block.conv_out.weight" in shapes:
        config["conditioning_embedding_channels"] = int(
            shapes["input_hint_block.conv_out.weight"][0]
        )
    return config


def _sd3_config(shapes: Mapping[str, tuple[int, ...]], base: Mapping[str, Any]) -> dict[str, Any]:
    inner, channels, patch, _ = shapes["pos_embed_input.proj.weight"]
    positions = shapes.get("pos_embed.pos_embed")
    own_positions = "pos_embed.proj.weight" in shapes
    in_channels = int(shapes["pos_embed.proj.weight"][1]) if own_positions else 16
    head = _head_dim(shapes, ("transformer_blocks.",))
    context = shapes.get("context_embedder.weight")
    config: dict[str, Any] = {
        "sample_size": int(base.get("sample_size", 128)),
        "patch_size": int(patch),
        "in_channels": in_channels,
        "out_channels": in_channels,
        "num_layers": _count(shapes, "transformer_blocks."),
        "attention_head_dim": head or int(base.get("attention_head_dim", 64)),
        "num_attention_heads": int(inner) // (head or int(base.get("attention_head_dim", 64))),
        "joint_attention_dim": int(context[1]) if context else None,
        "caption_projection_dim": int(context[0]) if context else int(inner),
        "pooled_projection_dim": int(shapes["time_text_embed.text_embedder.linear_1.weight"][1]),
        "extra_conditioning_channels": int(channels) - in_channels,
        "dual_attention_layers": sorted(
            {
                int(k.split(".")[1])
                for k in shapes
                if re.match(r"transformer_blocks\.\d+\.attn2\.", k)
            }
        ),
        "qk_norm": "rms_norm" if head else None,
        "use_pos_embed": own_positions,
        "pos_embed_type": "sincos" if own_positions else None,
        "pos_embed_max_size": round(positions[1] ** 0.5) if positions else None,
        # Stability's files (no context embedder) were trained with the real pooled text.
        "force_zeros_for_pooled_projection": context is not None,
    }
    return config


def _qwen_config(shapes: Mapping[str, tuple[int, ...]], base: Mapping[str, Any]) -> dict[str, Any]:
    inner, in_channels = shapes["img_in.weight"]
    head = _head_dim(shapes, ("transformer_blocks.",)) or int(base.get("attention_head_dim", 128))
    extra = int(shapes["controlnet_x_embedder.weight"][1]) - int(in_channels)
    return {
        "patch_size": int(base.get("patch_size", 2)),
        "in_channels": int(in_channels),
        "out_channels": int(base.get("out_channels") or 16),
        "num_layers": _count(shapes, "transformer_blocks."),
        "attention_head_dim": head,
        "num_attention_heads": int(inner) // head,
        "joint_attention_dim": int(shapes["txt_in.weight"][1]),
        "axes_dims_rope": list(base.get("axes_dims_rope", (16, 56, 56))),
        "extra_condition_channels": extra,
    }


def sd3_original_to_diffusers(state: Mapping[str, Any]) -> dict[str, Any]:
    """Stability AI's SD 3.5 ControlNet names renamed to diffusers' (the fused query, key
    and value split in three)."""
    renames = (
        (".attn.proj.", ".attn.to_out.0."),
        (".mlp.fc1.", ".ff.net.0.proj."),
        (".mlp.fc2.", ".ff.net.2."),
        (".adaLN_modulation.1.", ".norm1.linear."),
    )
    out: dict[str, Any] = {}
    for key, value in state.items():
        if ".attn.qkv." in key:
            for part, chunk in zip(("to_q", "to_k", "to_v"), value.chunk(3, dim=0), strict=True):
                out[key.replace(".attn.qkv.", f".attn.{part}.")] = chunk.contiguous()
            continue
        for old, new in renames:
            key = key.replace(old, new)
        out[key] = value
    return out


def _state_dict(path: Path) -> dict[str, Any]:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    from sdstudio.engine.models.loading import load_pickle_state_dict

    return load_pickle_state_dict(path)
