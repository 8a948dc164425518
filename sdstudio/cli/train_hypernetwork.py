"""``sdstudio-cli train hypernetwork --model M --data DIR --name NAME``: an A1111
hypernetwork (.pt) trained on a folder of captioned images, with A1111's "Create
hypernetwork" settings, written into sdstudio's hypernetworks folder."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sdstudio.cli import Context
    from sdstudio.engine.training.hypernetwork_options import HypernetworkOptions
    from sdstudio.engine.training.options import TrainingOptions

CommonOptions = Callable[[argparse.Namespace, "Context", Path, Path], "TrainingOptions"]


def add_hypernetwork_parser(
    kinds: argparse._SubParsersAction,  # type: ignore[type-arg]
    _add_common: Callable[[argparse.ArgumentParser], None],
) -> None:
    """``train hypernetwork``: A1111's "Create hypernetwork" settings."""
    hypernetwork = kinds.add_parser(
        "hypernetwork",
        help="an A1111 hypernetwork (.pt) for an SD 1.x or SD 2.x model",
    )
    _add_common(hypernetwork)
    hypernetwork.set_defaults(learning_rate=1e-5)
    hyper = hypernetwork.add_argument_group("hypernetwork")
    hyper.add_argument("--layer-structure", default="1,2,1", help="default 1,2,1")
    hyper.add_argument(
        "--activation", default="linear", help="linear, relu, leakyrelu, elu, swish, tanh, …"
    )
    hyper.add_argument("--layer-norm", action="store_true", help="add layer normalization")
    hyper.add_argument(
        "--dropout", default=None, help="dropout structure, one per layer (0,0.05,0): on"
    )
    hyper.add_argument(
        "--weight-init",
        default="Normal",
        choices=["Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal"],
    )
    hyper.add_argument(
        "--sizes", default=None, help="context widths (320,640,768,1280); default: the model's"
    )
    hyper.add_argument(
        "--template", default=None, help="prompt template file: lines with [name], [filewords]"
    )
    hyper.add_argument(
        "--overwrite", action="store_true", help="replace a hypernetwork of the same name"
    )


def hypernetwork_options(
    args: argparse.Namespace, context: Context, training_options: CommonOptions
) -> HypernetworkOptions:
    """The hypernetwork run ``args`` ask for, written into sdstudio's hypernetworks folder."""
    from sdstudio.engine.models.catalog import network_folders
    from sdstudio.engine.training.hypernetwork_options import HypernetworkOptions, parse_numbers

    states = context.paths.data_dir / "training" / "hypernetworks"
    base = training_options(args, context, context.paths.models_dir / "hypernetworks", states)
    sizes = parse_numbers("--sizes", args.sizes) if args.sizes else ()
    return HypernetworkOptions(
        base=base,
        layer_structure=parse_numbers("--layer-structure", args.layer_structure),
        activation=args.activation.lower(),
        layer_norm=args.layer_norm,
        dropout=parse_numbers("--dropout", args.dropout) if args.dropout else None,
        weight_init=args.weight_init,
        sizes=tuple(int(size) if size.is_integer() else -1 for size in sizes),
        template=Path(args.template).expanduser() if args.template else None,
        overwrite=args.overwrite,
        hypernetwork_dirs=tuple(network_folders(context.paths, context.settings, "hypernetwork")),
    )
