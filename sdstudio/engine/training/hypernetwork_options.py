"""What a hypernetwork run is asked to do: AUTOMATIC1111's "Create hypernetwork" settings.

A1111's names and meanings: the layer structure (``1, 2, 1``: each layer's width as a
multiple of the context width, starting and ending at 1), the activation function, the
layer normalization, the dropout structure (one probability per entry of the layer
structure, starting and ending at 0, given only with "Use dropout"), the weight
initialization and the context widths ("Modules") networks are made for. The
hypernetwork's name is the word its ``<hypernet:NAME:strength>`` tag uses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.network_files import find_file
from sdstudio.engine.prompting.hypernetwork_files import NAMED_ACTIVATIONS
from sdstudio.engine.training.options import TrainingOptions, _plain

ACTIVATIONS = ("linear", *NAMED_ACTIVATIONS)
"""A1111's menu; any other activation class of ``torch.nn`` by its lower-case name
(``gelu``, ``mish`` …) is accepted too, as A1111 offers those as well."""
WEIGHT_INITS = ("Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal")
A1111_SIZES = (320, 640, 768, 1024, 1280)
"""The widths A1111's "Modules" checkboxes offer (768 and 1024: SD 1.x and SD 2.x text;
320, 640 and 1280: the UNet's self-attention)."""
DEFAULT_LEARNING_RATE = 1e-5
"""A1111's "Hypernetwork Learning rate" default (0.00001)."""


@dataclass(frozen=True, slots=True)
class HypernetworkOptions:
    """A hypernetwork run: the shared options plus the network's own."""

    base: TrainingOptions
    layer_structure: tuple[float, ...] = (1.0, 2.0, 1.0)
    activation: str = "linear"
    layer_norm: bool = False
    dropout: tuple[float, ...] | None = None
    """A1111's dropout structure; ``None`` is "Use dropout" off."""
    weight_init: str = "Normal"
    sizes: tuple[int, ...] = ()
    """The context widths to make networks for; empty: every attention width of the
    model (for SD 1.x 320, 640, 768 and 1280, A1111's default)."""
    template: Path | None = None
    """A prompt template file (``[name]``, ``[filewords]``); without one the caption is
    the prompt."""
    overwrite: bool = False
    """Replace a hypernetwork of the same name in the output folder."""
    hypernetwork_dirs: tuple[Path, ...] = ()
    """The folders generation finds hypernetworks in; a file of the run's name there is
    refused."""

    def check(self) -> None:
        """Raise :class:`InvalidRequest` for a setting that cannot be trained with."""
        self.base.check()
        structure = self.layer_structure
        if len(structure) < 2 or structure[0] != 1 or structure[-1] != 1:
            raise InvalidRequest(
                f"--layer-structure {_listed(structure)} must start and end with 1 "
                "(A1111's default is 1,2,1)."
            )
        if any(n <= 0 for n in structure):
            raise InvalidRequest("--layer-structure sizes must be above 0.")
        if not self._activation_known():
            raise InvalidRequest(
                f"Unknown --activation {self.activation!r}; choose {', '.join(ACTIVATIONS)} "
                "or another activation of torch.nn by its lower-case name."
            )
        if self.weight_init not in WEIGHT_INITS:
            raise InvalidRequest(
                f"Unknown --weight-init {self.weight_init!r}; choose {', '.join(WEIGHT_INITS)}."
            )
        if self.dropout is not None:
            if len(self.dropout) != len(structure):
                raise InvalidRequest(
                    f"--dropout {_listed(self.dropout)} needs one probability per entry of "
                    f"--layer-structure {_listed(structure)}."
                )
            if self.dropout[0] != 0 or self.dropout[-1] != 0:
                raise InvalidRequest("--dropout must start and end with 0 (as A1111 requires).")
            if not all(0 <= p < 1 for p in self.dropout):
                raise InvalidRequest("--dropout probabilities must be from 0 to below 1.")
        if any(size <= 0 for size in self.sizes):
            raise InvalidRequest("--sizes must be positive widths such as 320,640,768,1280.")
        self.templates()
        self._check_free()

    def _activation_known(self) -> bool:
        if self.activation in ACTIVATIONS:
            return True
        from torch.nn.modules import activation

        names = {
            cls.__name__.lower()
            for cls in vars(activation).values()
            if isinstance(cls, type) and cls.__module__ == activation.__name__
        }
        return self.activation in names - {"multiheadattention"}

    def _check_free(self) -> None:
        """A tag finds one file by name, so a second file of the name is refused; with
        ``--overwrite`` the output folder's own may be replaced."""
        name, output = self.base.name, self.base.output_dir
        target = (output / f"{name}.pt").resolve()
        for folder in (output, *self.hypernetwork_dirs):
            found = find_file(name, [folder], (".pt",)) if folder.is_dir() else None
            if found is None or (self.overwrite and found.resolve() == target):
                continue
            hint = " (use --overwrite to replace it)" if found.resolve() == target else ""
            raise InvalidRequest(
                f"A hypernetwork named {name!r} already exists: {found}{hint}. "
                "Choose another --name."
            )

    def templates(self) -> list[str]:
        """The prompt templates each caption is made from (``[filewords]`` alone: the
        caption)."""
        if self.template is None:
            return ["[filewords]"]
        try:
            text = Path(self.template).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise InvalidRequest(f"The --template file cannot be read: {error}") from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise InvalidRequest(f"The --template file {self.template} has no prompt lines.")
        return lines

    def record(self) -> dict[str, Any]:
        """The options as plain JSON values (kept with a saved state, compared on resume)."""
        record: dict[str, Any] = _plain(dataclasses.asdict(self))
        record["template_lines"] = self.templates()
        return record


def parse_numbers(flag: str, text: str) -> tuple[float, ...]:
    """``1,2,1`` → ``(1.0, 2.0, 1.0)``; anything else is refused naming ``flag``."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise InvalidRequest(
            f"{flag} {text!r} must be numbers separated by commas, such as 1,2,1."
        ) from None


def _listed(numbers: tuple[float, ...]) -> str:
    return ",".join(f"{n:g}" for n in numbers)
