"""AUTOMATIC1111 hypernetwork files: what they hold and the small networks they rebuild.

A hypernetwork ``.pt`` is a pickled dictionary written by A1111's trainer
(``modules/hypernetworks/hypernetwork.py``, ``Hypernetwork.save``):

- integer keys are context widths (768 for SD 1.x, 1024 for SD 2.x, and often 320,
  640 and 1280, the widths of the UNet's self-attention); each holds a pair of
  state dicts, the networks for the attention's keys and for its values;
- ``layer_structure`` (``[1, 2, 1]`` by default: widths as multiples of the
  context width, starting and ending at 1), ``activation_func`` (``linear`` or
  none, ``relu``, ``leakyrelu``, ``elu``, ``swish`` (A1111 maps it to
  ``Hardswish``), ``tanh``, ``sigmoid``, or any other activation class of
  ``torch.nn`` by its lower-case name), ``is_layer_norm``, ``activate_output``
  (default true), ``use_dropout``, ``last_layer_dropout``, ``dropout_structure``;
- ``name``, ``step``, ``sd_checkpoint``, ``sd_checkpoint_name`` and the like.

Each network is a sequence, numbered as A1111 numbers it (the state dict's
``linear.<i>.weight`` names depend on it): per step of the structure a linear
layer, then the activation (not after the last layer unless ``activate_output``),
then a layer norm when ``is_layer_norm``, then a dropout where the dropout
structure says. Dropouts do nothing when generating but keep their place in the
numbering. The oldest files name their two layers ``linear1``/``linear2``.

The network changes its input ``x`` into ``x + net(x) * strength``. Files are read
through the restricted pickle loader only; one that holds code is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.engine.errors import ModelError
from sdstudio.engine.models.loading import load_pickle_data

if TYPE_CHECKING:
    import torch

DEFAULT_STRUCTURE = (1.0, 2.0, 1.0)
DROPOUT = 0.3
"""The dropout A1111 puts between layers when ``use_dropout`` is set and the file has no
``dropout_structure``."""
CONTEXT_FAMILIES = {768: "SD 1.x", 1024: "SD 2.x"}
_LEGACY_NAMES = {
    "linear1.weight": "linear.0.weight",
    "linear1.bias": "linear.0.bias",
    "linear2.weight": "linear.1.weight",
    "linear2.bias": "linear.1.bias",
}
NAMED_ACTIVATIONS = {
    "relu": "ReLU",
    "leakyrelu": "LeakyReLU",
    "elu": "ELU",
    "swish": "Hardswish",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
}


@dataclass(frozen=True, slots=True)
class Settings:
    """How a file's networks are built (its keys besides the layers)."""

    structure: tuple[float, ...] = DEFAULT_STRUCTURE
    activation: str | None = None
    layer_norm: bool = False
    activate_output: bool = True
    dropout: tuple[float, ...] = (0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True, eq=False)
class HypernetworkFile:
    """A hypernetwork read from disk: its ``(keys, values)`` networks by context width."""

    path: Path
    name: str
    settings: Settings
    layers: dict[int, tuple[Any, Any]]

    @property
    def widths(self) -> tuple[int, ...]:
        """The context widths it has networks for, ascending."""
        return tuple(sorted(self.layers))

    def made_for(self) -> str:
        """The model family its widths tell (``SD 1.x``, ``SD 2.x``), or ``""``."""
        return ", ".join(label for width, label in CONTEXT_FAMILIES.items() if width in self.layers)


def read_hypernetwork(path: Path) -> HypernetworkFile:
    """Read and rebuild a hypernetwork file; :class:`ModelError` says what is wrong with it."""
    data = load_pickle_data(path)
    if not isinstance(data, dict):
        raise ModelError(f"{path.name} is not a hypernetwork: it holds no dictionary of layers.")
    settings = file_settings(data, path)
    layers: dict[int, tuple[Any, Any]] = {}
    for width, pair in data.items():
        if isinstance(width, bool) or not isinstance(width, int):
            continue
        if width <= 0 or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ModelError(
                f"{path.name} is not a hypernetwork A1111 writes: its entry {width} is not a "
                "pair of networks (for keys and values)."
            )
        layers[width] = (
            build_network(width, settings, pair[0], path),
            build_network(width, settings, pair[1], path),
        )
    if not layers:
        raise ModelError(
            f"{path.name} is not a hypernetwork: it has no layers keyed by context width "
            "(a LoRA, an embedding or a checkpoint in the hypernetworks folder?)."
        )
    name = data.get("name")
    return HypernetworkFile(
        path, name if isinstance(name, str) and name else path.stem, settings, layers
    )


def file_settings(data: Mapping[Any, Any], path: Path) -> Settings:
    """The building settings of a file, with A1111's defaults for keys it lacks."""
    structure = data.get("layer_structure")
    if structure is None:
        structure = DEFAULT_STRUCTURE
    numbers = _numbers(structure)
    if numbers is None or len(numbers) < 2 or numbers[0] != 1 or numbers[-1] != 1:
        raise ModelError(
            f"{path.name} has an unusable layer structure {structure!r}: it must be a list of "
            "positive numbers that starts and ends with 1, such as [1, 2, 1]."
        )
    if any(n <= 0 for n in numbers):
        raise ModelError(
            f"{path.name} has a layer structure with a size of 0 or less: {structure!r}."
        )
    activation = data.get("activation_func")
    if activation is not None and not isinstance(activation, str):
        raise ModelError(
            f"{path.name} names its activation function as {activation!r}, not a name."
        )
    return Settings(
        structure=numbers,
        activation=activation,
        layer_norm=bool(data.get("is_layer_norm", False)),
        activate_output=bool(data.get("activate_output", True)),
        dropout=_dropout_structure(data, numbers, path),
    )


def _dropout_structure(
    data: Mapping[Any, Any], structure: tuple[float, ...], path: Path
) -> tuple[float, ...]:
    """A1111's ``dropout_structure``: given, or made from ``use_dropout`` and
    ``last_layer_dropout`` (0.3 after each hidden layer, the last hidden one only with
    ``last_layer_dropout``)."""
    given = data.get("dropout_structure")
    if given is not None:
        numbers = _numbers(given)
        if (
            numbers is None
            or len(numbers) != len(structure)
            or not all(0 <= n < 1 for n in numbers)
        ):
            raise ModelError(
                f"{path.name} has an unusable dropout structure {given!r}: one probability "
                f"from 0 to 1 per entry of its layer structure {list(structure)}."
            )
        return numbers
    if not data.get("use_dropout", False):
        return (0.0,) * len(structure)
    last = DROPOUT if data.get("last_layer_dropout", False) else 0.0
    return (0.0, *(DROPOUT,) * (len(structure) - 3), last, 0.0)


def lay_out_network(width: int, settings: Settings, path: Path) -> Any:
    """One network of ``width`` laid out as A1111's ``HypernetworkModule`` lays it out
    (per step of the structure: linear, activation, layer norm, dropout), weights not set."""
    import torch

    layers: list[torch.nn.Module] = []
    structure = settings.structure
    last = len(structure) - 2
    for i in range(len(structure) - 1):
        size_in, size_out = int(width * structure[i]), int(width * structure[i + 1])
        if size_in <= 0 or size_out <= 0:
            raise ModelError(
                f"{path.name}'s layer structure gives an empty layer at width {width}."
            )
        layers.append(torch.nn.Linear(size_in, size_out))
        if settings.activation not in (None, "linear") and (i < last or settings.activate_output):
            layers.append(_activation(settings.activation, path))
        if settings.layer_norm:
            layers.append(torch.nn.LayerNorm(size_out))
        if settings.dropout[i + 1] > 0:
            layers.append(torch.nn.Dropout(p=settings.dropout[i + 1]))
    return torch.nn.Sequential(*layers)


def build_network(width: int, settings: Settings, state: Any, path: Path) -> Any:
    """One network (for keys or values) of ``width``, with the weights of ``state``."""
    import torch

    network = lay_out_network(width, settings, path)
    structure = settings.structure
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ModelError(
            f"{path.name}'s networks for width {width} are not state dicts of tensors."
        )
    names = (_LEGACY_NAMES.get(str(k), str(k)) for k in state)
    weights = {
        name.removeprefix("linear."): v for name, v in zip(names, state.values(), strict=True)
    }
    try:
        network.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise ModelError(
            f"{path.name}'s weights for width {width} do not fit its layer structure "
            f"{list(structure)} (activation {settings.activation or 'linear'}, layer norm "
            f"{'on' if settings.layer_norm else 'off'}): {_first_problem(error)}"
        ) from None
    network.eval()
    network.requires_grad_(False)
    return network


def run_network(network: Any, x: torch.Tensor, strength: float) -> torch.Tensor:
    """A1111's ``HypernetworkModule.forward`` when generating: ``x + net(x) * strength``,
    computed in the network's precision (float32) and handed back in the input's. The
    network follows the input to its device (offloading moves the UNet while it runs)."""
    weight = network[0].weight
    if weight.device != x.device:
        network.to(x.device)
    inner = x.to(weight.dtype)
    return (inner + network(inner) * strength).to(x.dtype)


def _activation(name: str, path: Path) -> Any:
    """The activation module A1111 builds for ``name``: its own names first, then any
    activation class of ``torch.nn`` by its lower-case name."""
    import torch
    from torch.nn.modules import activation

    class_name = NAMED_ACTIVATIONS.get(name)
    if class_name is None:
        classes = {
            cls.__name__.lower(): cls.__name__
            for cls in vars(activation).values()
            if isinstance(cls, type) and cls.__module__ == activation.__name__
        }
        class_name = classes.get(name)
    if class_name is None:
        raise ModelError(
            f"{path.name} uses an activation function sdstudio does not know: {name!r}."
        )
    try:
        return getattr(torch.nn, class_name)()
    except TypeError:  # one that needs arguments (MultiheadAttention) is no activation
        raise ModelError(
            f"{path.name} uses {name!r} as its activation function, which is not one."
        ) from None


def _numbers(value: Any) -> tuple[float, ...] | None:
    if not isinstance(value, list | tuple):
        return None
    if not all(isinstance(n, int | float) and not isinstance(n, bool) for n in value):
        return None
    return tuple(float(n) for n in value)


def _first_problem(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[1] if len(lines) > 1 else (lines[0] if lines else type(error).__name__)
