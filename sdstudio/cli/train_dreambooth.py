"""``sdstudio-cli train dreambooth --model M --data DIR --name NAME``: the whole model
fine-tuned on a subject (DreamBooth), with prior preservation from class images, written
as one checkpoint ``NAME.safetensors`` into sdstudio's models folder.

The class images' folder takes kohya's name, ``--reg-data-dir`` (``--class-data-dir``,
diffusers' name, is the same option); images missing from it are generated first with
the base model, up to ``--num-class-images``. A memory estimate is checked before the
model is loaded (``--skip-memory-check`` trains anyway).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sdstudio.cli import Context
    from sdstudio.engine.training.dreambooth_options import DreamboothOptions
    from sdstudio.engine.training.options import TrainingOptions

CommonOptions = Callable[[argparse.Namespace, "Context", Path, Path], "TrainingOptions"]


def add_dreambooth_parser(
    kinds: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_common: Callable[[argparse.ArgumentParser], None],
) -> None:
    """``train dreambooth``: the shared options plus DreamBooth's own."""
    parser = kinds.add_parser(
        "dreambooth",
        help="fine-tune a whole SD 1.x, SD 2.x or SDXL model on a subject (DreamBooth), "
        "written as one checkpoint",
    )
    add_common(parser)
    parser.set_defaults(learning_rate=1e-6)
    group = parser.add_argument_group("dreambooth")
    group.add_argument(
        "--class-prompt", default="", help='the class images\' prompt ("a photo of a dog")'
    )
    group.add_argument(
        "--reg-data-dir",
        "--class-data-dir",
        dest="reg_data_dir",
        default=None,
        help="folder of class (regularisation) images; missing ones are generated there",
    )
    group.add_argument(
        "--num-class-images", type=int, default=0, help="class images to train with (0: all)"
    )
    group.add_argument("--prior-loss-weight", type=float, default=1.0)
    group.add_argument(
        "--train-text-encoder", action="store_true", help="fine-tune the text encoders too"
    )
    group.add_argument("--text-encoder-lr", type=float, default=None)
    group.add_argument("--save-precision", default="fp16", choices=["fp16", "bf16", "float"])
    group.add_argument(
        "--skip-memory-check", action="store_true", help="train even when it may not fit"
    )
    group.add_argument("--overwrite", action="store_true", help="replace a model of that name")


def dreambooth_options(
    args: argparse.Namespace, context: Context, common: CommonOptions
) -> DreamboothOptions:
    """The DreamBooth run ``args`` ask for, written into sdstudio's models folder (where
    the model list finds it) and its states under ``training/dreambooth/NAME``."""
    from sdstudio.engine.training.dreambooth_options import DreamboothOptions

    states = context.paths.data_dir / "training" / "dreambooth"
    base = common(args, context, context.paths.models_dir, states)
    reg = Path(args.reg_data_dir).expanduser().resolve() if args.reg_data_dir else None
    return DreamboothOptions(
        base=base,
        class_prompt=args.class_prompt,
        class_data_dir=reg,
        num_class_images=args.num_class_images,
        prior_loss_weight=args.prior_loss_weight,
        train_text_encoder=args.train_text_encoder,
        text_encoder_lr=args.text_encoder_lr,
        save_precision=args.save_precision,
        skip_memory_check=args.skip_memory_check,
        overwrite=args.overwrite,
    )
