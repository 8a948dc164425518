"""Tiny LoRA files for the tiny Flux.1 and Z-Image models, in the layouts trainers write.

Random low-rank weights are drawn for the real modules of a tiny transformer (and of
Flux.1's CLIP text encoder). Each :class:`Layer` is one module of the *original* model
(Black Forest Labs' ``double_blocks.0.img_attn.qkv``, Tongyi's
``layers.0.attention.qkv``), which diffusers splits into several modules
(``attn.to_q``, ``attn.to_k``, ``attn.to_v``): written split, the parts share the down
matrix and take their rows of the up matrix, so every layout holds the same LoRA.

Flux.1 layouts (:data:`FLUX_LAYOUTS`):

- ``diffusers`` (diffusers' trainers, ai-toolkit):
  ``transformer.transformer_blocks.0.attn.to_q.lora_A.weight`` and
  ``text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight``;
- ``kohya`` (sd-scripts): ``lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight``,
  ``.lora_up.weight``, ``.alpha`` and ``lora_te1_text_model_encoder_layers_0_...``;
- ``bfl`` (ComfyUI, original names): ``diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight``
  and ``.alpha``, the text encoder under ``text_encoders.clip_l.transformer.``;
- ``xlabs``: ``double_blocks.0.processor.qkv_lora1.down.weight`` (image stream ``1``,
  text stream ``2``; double-block attention only, :data:`XLABS_MODULES`).

Z-Image layouts (:data:`ZIMAGE_LAYOUTS`):

- ``diffusers``: ``transformer.layers.0.attention.to_q.lora_A.weight``;
- ``ai-toolkit``: the same names under ``diffusion_model.``;
- ``kohya`` (musubi-tuner): ``lora_unet_layers_0_attention_to_q.lora_down.weight``, ``.alpha``;
- ``original``: ``diffusion_model.layers.0.attention.qkv.lora_A.weight`` (fused query,
  key and value, ``attention.out``), names that diffusers does not convert.

Layouts without an ``alpha`` entry hold the ``alpha / rank`` scale in the up matrix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FLUX_LAYOUTS = ("diffusers", "kohya", "bfl", "xlabs")
ZIMAGE_LAYOUTS = ("diffusers", "ai-toolkit", "kohya", "original")

FLUX_MODULES = r"(?!single_blocks\.\d+\.linear1$).*"
"""Every Flux.1 module but the single blocks' ``linear1``: diffusers' kohya converter
splits that one at Flux.1's real widths (3 x 3072 + 12288), which a tiny model lacks."""
XLABS_MODULES = r"(double_blocks\.\d+)\.(img|txt)_attn\.(qkv|proj)"
"""The modules XLabs' LoRAs hold."""
ZIMAGE_MODULES = r"(layers|noise_refiner|context_refiner)\.\d+\..*"
"""The Z-Image blocks' attention, feed-forward and modulation layers."""

TEXT_ENCODER = "text_encoder."
"""The key prefix of a text-encoder layer in a tiny LoRA (Flux.1's CLIP-L)."""

_CLIP = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")
_CLIP_MLP = ("mlp.fc1", "mlp.fc2")


@dataclass(frozen=True)
class Layer:
    """One original module's LoRA: ``up @ down`` times ``alpha / rank`` is its change."""

    down: torch.Tensor
    """(rank, in features)."""
    up: torch.Tensor
    """(out features, rank): the parts' rows one after the other."""
    alpha: float
    parts: tuple[tuple[str, int], ...]
    """diffusers' module names for this module and the rows of ``up`` each takes."""

    @property
    def scale(self) -> float:
        """``alpha / rank``."""
        return self.alpha / self.down.shape[0]

    def split(self) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """(diffusers module, down, up rows) for each part."""
        out, start = [], 0
        for name, rows in self.parts:
            out.append((name, self.down, self.up[start : start + rows]))
            start += rows
        return out


def flux_lora(
    transformer: Any,
    text_encoder: Any = None,
    *,
    rank: int = 4,
    alpha: float | None = None,
    seed: int = 0,
    modules: str = FLUX_MODULES,
) -> dict[str, Layer]:
    """Random LoRA layers for a ``FluxTransformer2DModel`` (and, given, its CLIP text
    encoder), keyed by original module name (``double_blocks.0.img_attn.qkv``; text
    encoder layers ``text_encoder.text_model.encoder.layers.0.self_attn.q_proj``).
    ``modules`` is a regular expression the transformer's original names must match."""
    units: dict[str, list[str]] = {}
    for i in range(len(transformer.transformer_blocks)):
        b, o = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        units[o + "img_attn.qkv"] = [b + "attn.to_q", b + "attn.to_k", b + "attn.to_v"]
        units[o + "img_attn.proj"] = [b + "attn.to_out.0"]
        units[o + "txt_attn.qkv"] = [
            b + "attn.add_q_proj",
            b + "attn.add_k_proj",
            b + "attn.add_v_proj",
        ]
        units[o + "txt_attn.proj"] = [b + "attn.to_add_out"]
        units[o + "img_mlp.0"] = [b + "ff.net.0.proj"]
        units[o + "img_mlp.2"] = [b + "ff.net.2"]
        units[o + "txt_mlp.0"] = [b + "ff_context.net.0.proj"]
        units[o + "txt_mlp.2"] = [b + "ff_context.net.2"]
        units[o + "img_mod.lin"] = [b + "norm1.linear"]
        units[o + "txt_mod.lin"] = [b + "norm1_context.linear"]
    for i in range(len(transformer.single_transformer_blocks)):
        b, o = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        units[o + "linear1"] = [b + "attn.to_q", b + "attn.to_k", b + "attn.to_v", b + "proj_mlp"]
        units[o + "linear2"] = [b + "proj_out"]
        units[o + "modulation.lin"] = [b + "norm.linear"]
    chosen = {name: parts for name, parts in units.items() if re.fullmatch(modules, name)}
    generator = torch.Generator().manual_seed(seed)
    layers = _draw(transformer, chosen, rank, alpha, generator)
    if text_encoder is not None:
        clip = {}
        for i in range(len(text_encoder.encoder.layers)):
            for module in (*_CLIP, *_CLIP_MLP):
                clip[f"text_model.encoder.layers.{i}.{module}"] = [f"encoder.layers.{i}.{module}"]
        for name, layer in _draw(text_encoder, clip, rank, alpha, generator).items():
            layers[TEXT_ENCODER + name] = layer
    return layers


def zimage_lora(
    transformer: Any,
    *,
    rank: int = 4,
    alpha: float | None = None,
    seed: int = 0,
    modules: str = ZIMAGE_MODULES,
) -> dict[str, Layer]:
    """Random LoRA layers for a ``ZImageTransformer2DModel``, keyed by original module
    name (``layers.0.attention.qkv``, ``layers.0.feed_forward.w1``); ``modules`` is a
    regular expression those names must match."""
    units: dict[str, list[str]] = {}
    for name, module in transformer.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if name.endswith(".attention.to_q"):
            block = name.removesuffix("to_q")
            units[block + "qkv"] = [block + "to_q", block + "to_k", block + "to_v"]
        elif name.endswith(".attention.to_out.0"):
            units[name.removesuffix("to_out.0") + "out"] = [name]
        elif not name.endswith((".attention.to_k", ".attention.to_v")):
            units[name] = [name]
    chosen = {name: parts for name, parts in units.items() if re.fullmatch(modules, name)}
    return _draw(transformer, chosen, rank, alpha, torch.Generator().manual_seed(seed))


def write_flux_lora(path: str | Path, layers: dict[str, Layer], layout: str) -> Path:
    """Save :func:`flux_lora`'s layers as a ``.safetensors`` file in ``layout``."""
    tensors: dict[str, torch.Tensor] = {}
    for name, layer in layers.items():
        encoder = name.startswith(TEXT_ENCODER)
        module = name.removeprefix(TEXT_ENCODER)
        if layout == "diffusers":
            prefix = "text_encoder." if encoder else "transformer."
            parts = [(module, layer.down, layer.up)] if encoder else layer.split()
            for part, down, up in parts:
                _lora_ab(tensors, prefix + part, down, up * layer.scale)
        elif layout == "kohya":
            prefix = "lora_te1_" if encoder else "lora_unet_"
            _lora_down_up(tensors, prefix + module.replace(".", "_"), layer)
        elif layout == "bfl":
            prefix = "text_encoders.clip_l.transformer." if encoder else "diffusion_model."
            _lora_ab(tensors, prefix + module, layer.down, layer.up)
            tensors[f"{prefix}{module}.alpha"] = torch.tensor(layer.alpha)
        elif layout == "xlabs":
            found = re.fullmatch(XLABS_MODULES, module)
            if encoder or found is None:
                raise ValueError(f"XLabs LoRAs hold double-block attention only, not {name}")
            block, stream, kind = found.groups()
            base = f"{block}.processor.{kind}_lora{1 if stream == 'img' else 2}"
            tensors[f"{base}.down.weight"] = layer.down.contiguous()
            tensors[f"{base}.up.weight"] = (layer.up * layer.scale).contiguous()
        else:
            raise ValueError(f"unknown Flux.1 LoRA layout {layout!r}")
    return _save(path, tensors)


def write_zimage_lora(path: str | Path, layers: dict[str, Layer], layout: str) -> Path:
    """Save :func:`zimage_lora`'s layers as a ``.safetensors`` file in ``layout``."""
    tensors: dict[str, torch.Tensor] = {}
    for name, layer in layers.items():
        if layout in ("diffusers", "ai-toolkit"):
            prefix = "transformer." if layout == "diffusers" else "diffusion_model."
            for part, down, up in layer.split():
                _lora_ab(tensors, prefix + part, down, up * layer.scale)
        elif layout == "kohya":
            for part, down, up in layer.split():
                split = Layer(down, up, layer.alpha, ((part, up.shape[0]),))
                _lora_down_up(tensors, "lora_unet_" + part.replace(".", "_"), split)
        elif layout == "original":
            _lora_ab(tensors, "diffusion_model." + name, layer.down, layer.up * layer.scale)
        else:
            raise ValueError(f"unknown Z-Image LoRA layout {layout!r}")
    return _save(path, tensors)


def _draw(
    model: Any,
    units: dict[str, list[str]],
    rank: int,
    alpha: float | None,
    generator: torch.Generator,
) -> dict[str, Layer]:
    """Random down and up matrices sized from ``model``'s modules, in a fixed order."""
    layers = {}
    for name in sorted(units):
        modules = [model.get_submodule(part) for part in units[name]]
        features = modules[0].in_features
        rows = tuple((part, m.out_features) for part, m in zip(units[name], modules, strict=True))
        down = torch.randn(rank, features, generator=generator) / features**0.5
        up = torch.randn(sum(r for _, r in rows), rank, generator=generator) / rank**0.5
        layers[name] = Layer(down, up, float(alpha if alpha is not None else rank), rows)
    return layers


def _lora_ab(tensors: dict[str, torch.Tensor], base: str, down: Any, up: Any) -> None:
    tensors[f"{base}.lora_A.weight"] = down.clone()
    tensors[f"{base}.lora_B.weight"] = up.clone()


def _lora_down_up(tensors: dict[str, torch.Tensor], base: str, layer: Layer) -> None:
    tensors[f"{base}.lora_down.weight"] = layer.down.clone()
    tensors[f"{base}.lora_up.weight"] = layer.up.clone()
    tensors[f"{base}.alpha"] = torch.tensor(layer.alpha)


def _save(path: str | Path, tensors: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path
