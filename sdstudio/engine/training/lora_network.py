"""A LoRA network added to a model with peft, and written in kohya's key layout.

peft's LoRA layers (``lora_A`` = kohya's ``lora_down``, ``lora_B`` = ``lora_up``,
scale ``alpha / rank`` as kohya's) are injected into the UNet's attention projections
and, with ``--train-text-encoder``, the CLIP attention projections. The file written
names each layer as kohya's sd-scripts do, so A1111, ComfyUI and sdstudio's loader
(diffusers' kohya conversion) read it as is:

- SD 1.x/2.x UNet: diffusers module names, dots as underscores
  (``lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q``);
- SDXL UNet: the original (SGM) block names kohya's SDXL scripts use
  (``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``);
- text encoders: ``lora_te_`` (``lora_te1_``/``lora_te2_`` for SDXL's two) and the
  transformers module name (``text_model_encoder_layers_0_self_attn_q_proj``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

ADAPTER = "default"
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
"""The UNet's attention projections (self- and cross-attention)."""
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
"""CLIP's attention projections."""


@dataclass(slots=True)
class LoraLayer:
    """One adapted layer: its kohya name and its peft module."""

    kohya_name: str
    module: Any
    part: str
    """``unet`` or a text encoder's kohya prefix."""

    @property
    def down(self) -> torch.nn.Parameter:
        """The ``lora_down`` (peft ``lora_A``) weight."""
        weight: torch.nn.Parameter = self.module.lora_A[ADAPTER].weight
        return weight

    @property
    def up(self) -> torch.nn.Parameter:
        """The ``lora_up`` (peft ``lora_B``) weight."""
        weight: torch.nn.Parameter = self.module.lora_B[ADAPTER].weight
        return weight


class LoraNetwork:
    """The LoRA layers of one model, their parameters, and the kohya file's tensors."""

    def __init__(self, layers: list[LoraLayer], rank: int, alpha: float) -> None:
        self.layers = layers
        self.rank = rank
        self.alpha = alpha

    def parameters(self, part: str | None = None) -> list[torch.nn.Parameter]:
        """The trainable weights (of ``part``: ``unet`` or ``text``; all without it)."""
        found = []
        for layer in self.layers:
            is_unet = layer.part == "unet"
            if part is None or (part == "unet") == is_unet:
                found += [layer.down, layer.up]
        return found

    def named_parameters(self) -> dict[str, torch.nn.Parameter]:
        """kohya name + ``.lora_down.weight``/``.lora_up.weight`` -> parameter."""
        named = {}
        for layer in self.layers:
            named[f"{layer.kohya_name}.lora_down.weight"] = layer.down
            named[f"{layer.kohya_name}.lora_up.weight"] = layer.up
        return named

    def kohya_tensors(self, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
        """The file's tensors: down, up and alpha of every layer, in ``dtype`` (kohya
        saves float16 by default), contiguous and on the CPU."""
        tensors = {}
        alpha = torch.tensor(float(self.alpha), dtype=dtype)
        for name, parameter in self.named_parameters().items():
            tensors[name] = parameter.detach().to("cpu", dtype).contiguous()
        for layer in self.layers:
            tensors[f"{layer.kohya_name}.alpha"] = alpha.clone()
        return tensors

    def load_parameters(self, tensors: dict[str, torch.Tensor]) -> None:
        """Put saved weights (as :meth:`named_parameters` names them) back, exactly."""
        named = self.named_parameters()
        missing = sorted(set(named) - set(tensors))
        if missing:
            raise KeyError(missing[0])
        with torch.no_grad():
            for name, parameter in named.items():
                parameter.copy_(tensors[name].to(parameter.device, parameter.dtype))


def add_lora(
    model: Any, *, rank: int, alpha: float, train_text_encoder: bool, seed: int
) -> LoraNetwork:
    """Inject LoRA layers into ``model`` (a :class:`TrainingModel`) and return them.

    The down weights are drawn from ``seed`` (Kaiming-uniform, as peft and kohya do), the
    up weights are zero: the untrained network changes nothing.
    """
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(seed)
    parts: list[tuple[str, Any, list[str]]] = [("unet", model.pipe.unet, UNET_TARGETS)]
    if train_text_encoder:
        parts += [(prefix, encoder, TEXT_TARGETS) for prefix, _t, encoder in model.text_encoders()]
    layers: list[LoraLayer] = []
    for part, module, targets in parts:
        # peft annotates lora_alpha as int; a float (kohya allows 0.5) scales alpha / rank
        # all the same.
        config = LoraConfig(
            r=rank,
            lora_alpha=alpha,  # type: ignore[arg-type]
            target_modules=targets,
            init_lora_weights=True,
        )
        inject_adapter_in_model(config, module, adapter_name=ADAPTER)
        for name, child in module.named_modules():
            if hasattr(child, "lora_A") and ADAPTER in getattr(child, "lora_A", {}):
                kohya = _kohya_name(part, name, model.pipe.unet, model.is_sdxl)
                layers.append(LoraLayer(kohya, child, part))
    network = LoraNetwork(layers, rank, alpha)
    for parameter in network.parameters():
        parameter.data = parameter.data.to(torch.float32)
        parameter.requires_grad_(True)
    return network


def _kohya_name(part: str, module_name: str, unet: Any, sdxl: bool) -> str:
    if part != "unet":
        # kohya names CLIP's layers from its text_model (transformers 5's CLIPTextModel has
        # no such wrapper; CLIPTextModelWithProjection still does).
        if not module_name.startswith("text_model."):
            module_name = "text_model." + module_name
        return f"{part}_{module_name.replace('.', '_')}"
    if sdxl:
        module_name = sgm_unet_name(module_name, unet.config.layers_per_block)
    return "lora_unet_" + module_name.replace(".", "_")


def sgm_unet_name(name: str, layers_per_block: Any) -> str:
    """A diffusers UNet module name in the original (SGM) layout kohya's SDXL LoRAs use:
    ``down_blocks.1.attentions.0`` -> ``input_blocks.4.1``, ``mid_block.attentions.0`` ->
    ``middle_block.1``, ``up_blocks.0.attentions.2`` -> ``output_blocks.2.1``."""
    per_block = layers_per_block if isinstance(layers_per_block, int) else layers_per_block[0]
    match = re.match(r"^down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)$", name)
    if match:
        block, index, rest = int(match.group(1)), int(match.group(2)), match.group(3)
        return f"input_blocks.{1 + block * (per_block + 1) + index}.1.{rest}"
    match = re.match(r"^mid_block\.attentions\.0\.(.*)$", name)
    if match:
        return f"middle_block.1.{match.group(1)}"
    match = re.match(r"^up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)$", name)
    if match:
        block, index, rest = int(match.group(1)), int(match.group(2)), match.group(3)
        return f"output_blocks.{block * (per_block + 1) + index}.1.{rest}"
    return name
