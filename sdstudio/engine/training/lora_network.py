"""A LoRA network added to a model with peft, and written in kohya's key layout.

peft's LoRA layers (``lora_A`` = kohya's ``lora_down``, ``lora_B`` = ``lora_up``,
scale ``alpha / rank`` as kohya's) are injected into the layers kohya's
``networks.lora`` adapts, so a run here adapts what a kohya run of the same settings
does:

- UNet: every linear layer and 1 x 1 convolution inside each transformer block
  (``Transformer2DModel``): ``proj_in``, ``proj_out``, the attention projections and the
  feed-forward ``ff.net.0.proj``/``ff.net.2``. SD 1.x's ``proj_in``/``proj_out`` are
  1 x 1 convolutions (their ``lora_down`` is ``rank x in x 1 x 1``), SD 2.x's and
  SDXL's linear layers;
- with ``conv_dim`` (kohya's ``--network_args conv_dim=…``, LoCon): also the resnet
  blocks and the down/up samplers, their 3 x 3 convolutions at ``conv_dim`` and
  ``conv_alpha``, their linear and 1 x 1 layers at the network's rank;
- with ``--train-text-encoder``: every linear layer of CLIP's attention and MLP
  (``q/k/v/out_proj``, ``fc1``, ``fc2``).

The file written names each layer as kohya's sd-scripts do, so A1111, ComfyUI and
sdstudio's loader (diffusers' kohya conversion) read it as is:

- SD 1.x/2.x UNet: diffusers module names, dots as underscores
  (``lora_unet_down_blocks_0_attentions_0_proj_in``);
- SDXL UNet: the original (SGM) block names kohya's SDXL scripts use
  (``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``,
  ``lora_unet_input_blocks_1_0_in_layers_2``);
- text encoders: ``lora_te_`` (``lora_te1_``/``lora_te2_`` for SDXL's two) and the
  transformers module name (``text_model_encoder_layers_0_mlp_fc1``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

ADAPTER = "default"
UNET_BLOCKS = ("Transformer2DModel",)
"""The UNet blocks whose linear and 1 x 1 layers kohya adapts."""
CONV_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
"""The blocks added with ``conv_dim``."""
TEXT_BLOCKS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")
"""The text encoder blocks whose linear layers kohya adapts."""


@dataclass(slots=True)
class LoraLayer:
    """One adapted layer: its kohya name and its peft module."""

    kohya_name: str
    module: Any
    part: str
    """``unet`` or a text encoder's kohya prefix."""
    alpha: float = 1.0
    """kohya's ``alpha`` of this layer (the scale is alpha / its rank)."""

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
        for name, parameter in self.named_parameters().items():
            tensors[name] = parameter.detach().to("cpu", dtype).contiguous()
        for layer in self.layers:
            tensors[f"{layer.kohya_name}.alpha"] = torch.tensor(float(layer.alpha), dtype=dtype)
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


def network_args(items: list[str]) -> tuple[int | None, float]:
    """``conv_dim`` and ``conv_alpha`` from kohya's ``--network_args`` (``KEY=VALUE``
    words); other keys and values that are not numbers raise :class:`InvalidRequest`."""
    from sdstudio.engine.errors import InvalidRequest

    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in ("conv_dim", "conv_alpha"):
            raise InvalidRequest(
                f"--network-args {item!r}: sdstudio's LoRA takes conv_dim=N and conv_alpha=A."
            )
        values[key.strip()] = value.strip()
    try:
        conv_dim = int(values["conv_dim"]) if "conv_dim" in values else None
        conv_alpha = float(values.get("conv_alpha", "1"))
    except ValueError:
        raise InvalidRequest(
            "--network-args: conv_dim must be a whole number and conv_alpha a number."
        ) from None
    if conv_dim is None and "conv_alpha" in values:
        raise InvalidRequest("--network-args conv_alpha needs conv_dim.")
    return conv_dim, conv_alpha


def kohya_modules(root: Any, blocks: tuple[str, ...]) -> dict[str, bool]:
    """The layers kohya adapts in ``root``: name -> whether it is a k x k convolution
    (k > 1, adapted at ``conv_dim``), for every linear layer and convolution inside a
    module whose class is one of ``blocks``, in ``named_modules`` order."""
    found: dict[str, bool] = {}
    for name, module in root.named_modules():
        if type(module).__name__ not in blocks:
            continue
        for child_name, child in module.named_modules():
            if isinstance(child, torch.nn.Linear | torch.nn.Conv2d) and child_name:
                wide = isinstance(child, torch.nn.Conv2d) and child.kernel_size != (1, 1)
                found[f"{name}.{child_name}" if name else child_name] = wide
    return found


def add_lora(
    model: Any,
    *,
    rank: int,
    alpha: float,
    train_text_encoder: bool,
    seed: int,
    conv_dim: int | None = None,
    conv_alpha: float = 1.0,
) -> LoraNetwork:
    """Inject LoRA layers into ``model`` (a :class:`TrainingModel`) where kohya's
    ``networks.lora`` puts them, and return them.

    The down weights are drawn from ``seed`` (Kaiming-uniform, as peft and kohya do), the
    up weights are zero: the untrained network changes nothing.
    """
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(seed)
    unet_blocks = UNET_BLOCKS + (CONV_BLOCKS if conv_dim else ())
    parts: list[tuple[str, Any, tuple[str, ...]]] = [("unet", model.pipe.unet, unet_blocks)]
    if train_text_encoder:
        parts += [(prefix, encoder, TEXT_BLOCKS) for prefix, _t, encoder in model.text_encoders()]
    layers: list[LoraLayer] = []
    for part, module, blocks in parts:
        targets = kohya_modules(module, blocks)
        wide = [re.escape(name) for name, is_wide in targets.items() if is_wide]
        # peft annotates lora_alpha as int; a float (kohya allows 0.5) scales alpha / rank
        # all the same.
        config = LoraConfig(
            r=rank,
            lora_alpha=alpha,  # type: ignore[arg-type]
            target_modules=list(targets),
            rank_pattern=dict.fromkeys(wide, conv_dim or rank),
            alpha_pattern=dict.fromkeys(wide, conv_alpha),
            init_lora_weights=True,
        )
        inject_adapter_in_model(config, module, adapter_name=ADAPTER)
        for name, child in module.named_modules():
            if hasattr(child, "lora_A") and ADAPTER in getattr(child, "lora_A", {}):
                kohya = _kohya_name(part, name, model.pipe.unet, model.is_sdxl)
                layer_alpha = conv_alpha if targets.get(name) else alpha
                layers.append(LoraLayer(kohya, child, part, layer_alpha))
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
        with_attention = frozenset(
            index
            for index, block in enumerate(unet.up_blocks)
            if getattr(block, "attentions", None)
        )
        module_name = sgm_unet_name(module_name, unet.config.layers_per_block, with_attention)
    return "lora_unet_" + module_name.replace(".", "_")


_SGM_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
"""A diffusers resnet's layers by their original (SGM) names."""


def sgm_unet_name(
    name: str, layers_per_block: Any, attention_up_blocks: frozenset[int] = frozenset()
) -> str:
    """A diffusers UNet module name in the original (SGM) layout kohya's SDXL LoRAs use:
    ``down_blocks.1.attentions.0`` -> ``input_blocks.4.1``, ``mid_block.attentions.0`` ->
    ``middle_block.1``, ``up_blocks.0.attentions.2`` -> ``output_blocks.2.1``; resnets
    (``down_blocks.0.resnets.1.conv1`` -> ``input_blocks.2.0.in_layers.2``) and samplers
    (``down_blocks.0.downsamplers.0.conv`` -> ``input_blocks.3.0.op``) likewise; an up
    block's upsampler follows its last resnet, and its attention when the block's index
    is in ``attention_up_blocks``."""
    per_block = layers_per_block if isinstance(layers_per_block, int) else layers_per_block[0]
    step = per_block + 1
    match = re.match(r"^(down|up)_blocks\.(\d+)\.(attentions|resnets)\.(\d+)\.(.*)$", name)
    if match:
        side, block, kind, index, rest = match.groups()
        number = int(block) * step + int(index) + (1 if side == "down" else 0)
        slot, rest = ("1", rest) if kind == "attentions" else ("0", _sgm_resnet(rest))
        return f"{'input' if side == 'down' else 'output'}_blocks.{number}.{slot}.{rest}"
    match = re.match(r"^down_blocks\.(\d+)\.downsamplers\.0\.conv$", name)
    if match:
        return f"input_blocks.{(int(match.group(1)) + 1) * step}.0.op"
    match = re.match(r"^up_blocks\.(\d+)\.upsamplers\.0\.conv$", name)
    if match:
        up = int(match.group(1))
        after = 2 if up in attention_up_blocks else 1
        return f"output_blocks.{up * step + per_block}.{after}.conv"
    match = re.match(r"^mid_block\.(attentions|resnets)\.(\d+)\.(.*)$", name)
    if match:
        kind, index, rest = match.groups()
        if kind == "attentions":
            return f"middle_block.1.{rest}"
        return f"middle_block.{2 * int(index)}.{_sgm_resnet(rest)}"
    return name


def _sgm_resnet(rest: str) -> str:
    return _SGM_RESNET.get(rest, rest)
