"""Tiny LyCORIS files (LoHa, LoKr, full differences) for the tiny SD 1.x model.

Random factors are drawn for the real layers of a pipeline's UNet and text encoder and
named as kohya's trainers and LyCORIS name them: ``lora_unet_`` plus the diffusers
module path with ``_`` for ``.`` (``lora_unet_down_blocks_1_attentions_0_…_attn1_to_q``),
``lora_te_`` plus the text encoder's path; :func:`ldm_names` renames the UNet's modules
to the original UNet's names (``lora_unet_input_blocks_…``). Each module's tensors are
``{part: tensor}`` (``hada_w1_a``, ``lokr_w2``, ``alpha``…), written by :func:`write`
as ``<module>.<part>``. The factors are sized to change a tiny model's image clearly.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

Modules = dict[str, dict[str, torch.Tensor]]
"""Kohya module name → its LyCORIS tensors."""

ATTENTION = r".*attn[12]\.(to_q|to_k|to_v|to_out\.0)|.*self_attn\.(q|k|v|out)_proj"
"""The UNet's attention projections and the text encoder's."""
CONVOLUTIONS = r".*resnets\.\d+\.conv[12]"
"""The UNet's 3 x 3 resnet convolutions."""


def layers(pipe: Any, pattern: str, *, text_encoder: bool = True) -> dict[str, torch.Tensor]:
    """Kohya module name → weight, for the linear and convolution layers whose diffusers
    path matches ``pattern``, in a fixed order."""
    found: dict[str, torch.Tensor] = {}
    parts = [("lora_unet_", pipe.unet)]
    if text_encoder:
        parts.append(("lora_te_", pipe.text_encoder))
    for prefix, model in parts:
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear | torch.nn.Conv2d) and re.fullmatch(
                pattern, name
            ):
                found[prefix + name.replace(".", "_")] = module.weight.detach()
    return dict(sorted(found.items()))


def loha(
    pipe: Any,
    pattern: str = ATTENTION,
    *,
    rank: int = 4,
    alpha: float = 2.0,
    tucker: bool = False,
    seed: int = 0,
    text_encoder: bool = True,
) -> Modules:
    """A LoHa; ``tucker`` gives convolutions Tucker cores (``hada_t1``, ``hada_t2``)."""
    generator = torch.Generator().manual_seed(seed)
    modules: Modules = {}
    for name, weight in layers(pipe, pattern, text_encoder=text_encoder).items():
        out, inner, *kernel = weight.shape
        parts: dict[str, torch.Tensor] = {"alpha": torch.tensor(alpha)}
        for i in ("1", "2"):
            if tucker and kernel and math.prod(kernel) > 1:
                parts[f"hada_t{i}"] = _draw(generator, rank, rank, *kernel)
                parts[f"hada_w{i}_a"] = _draw(generator, rank, out)
                parts[f"hada_w{i}_b"] = _draw(generator, rank, inner)
            else:
                parts[f"hada_w{i}_a"] = _draw(generator, out, rank)
                parts[f"hada_w{i}_b"] = _draw(generator, rank, inner * math.prod(kernel))
        modules[name] = parts
    return modules


def lokr(
    pipe: Any,
    pattern: str = ATTENTION,
    *,
    w1: str = "full",
    w2: str = "factored",
    factor: int = 4,
    rank: int = 2,
    alpha: float = 1.0,
    seed: int = 0,
    text_encoder: bool = True,
) -> Modules:
    """A LoKr with ``w1`` ``full`` (``lokr_w1``, factor x factor) or ``factored``
    (``lokr_w1_a @ lokr_w1_b``) and ``w2`` ``full``, ``factored`` or ``tucker``."""
    generator = torch.Generator().manual_seed(seed)
    modules: Modules = {}
    for name, weight in layers(pipe, pattern, text_encoder=text_encoder).items():
        out, inner, *kernel = weight.shape
        rows, columns = out // factor, inner // factor
        parts: dict[str, torch.Tensor] = {"alpha": torch.tensor(alpha)}
        if w1 == "full":
            parts["lokr_w1"] = _draw(generator, factor, factor)
        else:
            parts["lokr_w1_a"] = _draw(generator, factor, rank)
            parts["lokr_w1_b"] = _draw(generator, rank, factor)
        if w2 == "full":
            parts["lokr_w2"] = _draw(generator, rows, columns, *kernel)
        elif w2 == "tucker" and kernel:
            parts["lokr_t2"] = _draw(generator, rank, rank, *kernel)
            parts["lokr_w2_a"] = _draw(generator, rank, rows)
            parts["lokr_w2_b"] = _draw(generator, rank, columns)
        else:
            parts["lokr_w2_a"] = _draw(generator, rows, rank)
            parts["lokr_w2_b"] = _draw(generator, rank, columns * math.prod(kernel))
        modules[name] = parts
    return modules


def full(pipe: Any, pattern: str = ATTENTION, *, seed: int = 0) -> Modules:
    """A full-difference file: ``diff`` (and ``diff_b`` where the layer has a bias)."""
    generator = torch.Generator().manual_seed(seed)
    modules: Modules = {}
    for name, weight in layers(pipe, pattern).items():
        modules[name] = {"diff": _draw(generator, *weight.shape) * 0.1}
        if name.endswith(("to_out_0", "_proj")):
            modules[name]["diff_b"] = _draw(generator, weight.shape[0]) * 0.1
    return modules


def refused(pipe: Any, kind: str) -> Modules:
    """A file of a kind that is not applied: ``ia3`` ((IA)^3: ``weight``, ``on_input``)
    or ``dora`` (a LoHa with ``dora_scale``)."""
    if kind == "dora":
        modules = loha(pipe, text_encoder=False)
        for name, parts in modules.items():
            parts["dora_scale"] = torch.ones(layers(pipe, ATTENTION)[name].shape[0], 1)
        return modules
    return {
        name: {"weight": torch.ones(weight.shape[0]), "on_input": torch.tensor(False)}
        for name, weight in layers(pipe, ATTENTION, text_encoder=False).items()
    }


def ldm_names(modules: Modules, unet: Any) -> Modules:
    """The same modules, the UNet's named as in the original (LDM) UNet."""
    from sdstudio.testing.checkpoints import _unet_key

    state = unet.state_dict()
    per_block = int(unet.config.layers_per_block)
    renamed: Modules = {}
    for name, parts in modules.items():
        if name.startswith("lora_unet_"):
            path = _diffusers_path(unet, name.removeprefix("lora_unet_"))
            original = _unet_key(path + ".weight", state, per_block).removesuffix(".weight")
            name = "lora_unet_" + original.replace(".", "_")
        renamed[name] = parts
    return renamed


def write(path: str | Path, modules: Modules) -> Path:
    """Save ``modules`` as ``<module>.<part>`` tensors in a ``.safetensors`` file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"{name}.{part}": t.contiguous() for name, ps in modules.items() for part, t in ps.items()
    }
    save_file(tensors, str(path))
    return path


def _diffusers_path(model: Any, flat: str) -> str:
    for name, _module in model.named_modules():
        if name.replace(".", "_") == flat:
            return name
    raise KeyError(flat)


def _draw(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=generator) * 0.5
