"""Tiny hypernetwork files in AUTOMATIC1111's layout, for the tiny SD model.

:func:`save_tiny_hypernetwork` writes what A1111's ``Hypernetwork.save`` writes: a
``torch.save`` of a dictionary whose integer keys (context widths) hold a pair of
state dicts (the key and value networks, as ``Module.state_dict()`` returns them,
``linear.<i>.weight`` and ``linear.<i>.bias``), beside ``layer_structure``,
``activation_func``, ``is_layer_norm``, ``use_dropout``, ``activate_output``,
``last_layer_dropout``, ``name``, ``step`` and the checkpoint it was trained on.
The networks are built here with A1111's numbering (linear, activation, layer
norm, dropout per step) and random weights large enough to change a tiny image;
:func:`reference_output` is A1111's ``x + net(x) * strength`` with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sdstudio.testing.tiny import TINY_TEXT_HIDDEN

TINY_SELF_ATTENTION_WIDTH = 64
"""The width of the tiny UNet's self-attention (its attention blocks have 64 channels)."""

_ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "swish": torch.nn.Hardswish}


class _Module(torch.nn.Module):
    """The shape of A1111's ``HypernetworkModule``: a ``linear`` sequence."""

    def __init__(self, layers: list[torch.nn.Module]) -> None:
        super().__init__()
        self.linear = torch.nn.Sequential(*layers)


def build_networks(
    width: int,
    structure: tuple[float, ...],
    activation: str,
    layer_norm: bool,
    dropout: bool,
    activate_output: bool,
    generator: torch.Generator,
) -> _Module:
    """One network of ``width`` with random weights (std 0.3, biases 0.1)."""
    layers: list[torch.nn.Module] = []
    count = len(structure) - 1
    for i in range(count):
        layers.append(torch.nn.Linear(int(width * structure[i]), int(width * structure[i + 1])))
        if activation != "linear" and (i < count - 1 or activate_output):
            layers.append(_ACTIVATIONS[activation]())
        if layer_norm:
            layers.append(torch.nn.LayerNorm(int(width * structure[i + 1])))
        if dropout and i < count - 1:  # use_dropout with last_layer_dropout
            layers.append(torch.nn.Dropout(p=0.3))
    module = _Module(layers)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return module.eval()


def save_tiny_hypernetwork(
    path: Path,
    *,
    widths: tuple[int, ...] = (TINY_TEXT_HIDDEN,),
    structure: tuple[float, ...] = (1, 2, 1),
    activation: str = "relu",
    layer_norm: bool = False,
    dropout: bool = False,
    activate_output: bool = False,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
) -> dict[int, tuple[_Module, _Module]]:
    """Write a hypernetwork file at ``path``; returns its (keys, values) networks by width."""
    generator = torch.Generator().manual_seed(seed)
    options = (structure, activation, layer_norm, dropout, activate_output, generator)
    networks = {w: (build_networks(w, *options), build_networks(w, *options)) for w in widths}
    data: dict[Any, Any] = {w: (k.state_dict(), v.state_dict()) for w, (k, v) in networks.items()}
    data.update(
        step=100,
        name=path.stem,
        layer_structure=list(structure),
        activation_func=activation,
        is_layer_norm=layer_norm,
        weight_initialization="Normal",
        use_dropout=dropout,
        sd_checkpoint="0123456789",
        sd_checkpoint_name="tiny",
        activate_output=activate_output,
        last_layer_dropout=dropout,
    )
    data.update(extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return networks


def reference_output(network: _Module, x: torch.Tensor, strength: float) -> torch.Tensor:
    """A1111's ``HypernetworkModule.forward`` when generating."""
    with torch.no_grad():
        return x + network.linear(x) * strength
