"""``sdstudio-cli train lora --model M --data DIR --name NAME``: a LoRA trained on a folder
of captioned images, written as ``NAME.safetensors`` into sdstudio's LoRA folder.
``sdstudio-cli train embedding …``: a textual-inversion embedding (with ``--dreamartist``
also its negative ``NAME-neg``), written into sdstudio's embeddings folder.
``sdstudio-cli train hypernetwork …`` (:mod:`sdstudio.cli.train_hypernetwork`): an A1111
hypernetwork. ``sdstudio-cli train dreambooth …`` (:mod:`sdstudio.cli.train_dreambooth`):
the whole model fine-tuned, written as one checkpoint into sdstudio's models folder.

Options carry kohya sd-scripts' names (``--network-dim``, ``--learning-rate``,
``--max-train-steps`` ...). With ``--json`` every event is one JSON line (``start``,
``step``, ``checkpoint``, ``sample``, ``done``, ``cancelled``, ``error``): the app runs
training in a child process and reads them. Ctrl+C (SIGINT) or SIGTERM saves a state
to resume from with ``--resume`` and ends with status 130; with ``--json`` so does the
line ``cancel`` on a piped standard input, the app's way to stop its child on Windows too.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sdstudio.cli import Context
    from sdstudio.engine.training.dreambooth_options import DreamboothOptions
    from sdstudio.engine.training.embedding_options import EmbeddingOptions
    from sdstudio.engine.training.events import CancelFlag, TrainingEvent
    from sdstudio.engine.training.hypernetwork_options import HypernetworkOptions
    from sdstudio.engine.training.options import LoraOptions, TrainingOptions

EXIT_CANCELLED = 130


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``train`` and its kinds (``lora``, ``embedding``, ``hypernetwork``,
    ``dreambooth``)."""
    train = commands.add_parser(
        "train",
        help="train a LoRA, an embedding, a hypernetwork or a DreamBooth model on a folder "
        "of captioned images",
    )
    kinds = train.add_subparsers(dest="kind", required=True, metavar="KIND")
    lora = kinds.add_parser(
        "lora",
        help="a LoRA for an SD 1.x, SD 2.x or SDXL model (kohya's options and file layout)",
    )
    _add_common(lora)
    net = lora.add_argument_group("network")
    net.add_argument("--network-dim", type=int, default=16, help="LoRA rank (default 16)")
    net.add_argument(
        "--network-alpha", type=float, default=1.0, help="scale is alpha/dim (default 1)"
    )
    net.add_argument("--unet-lr", type=float, default=None, help="default: --learning-rate")
    net.add_argument("--text-encoder-lr", type=float, default=None)
    net.add_argument(
        "--train-text-encoder", action="store_true", help="train the text encoders' layers too"
    )
    net.add_argument("--network-args", nargs="+", default=[], help="conv_dim=N conv_alpha=A")
    net.add_argument("--clip-skip", type=int, default=1, help="N-th last text layer (SD 1/2)")
    net.add_argument("--flip-aug", action="store_true", help="mirror images at random steps")
    net.add_argument("--color-aug", action="store_true", help="vary hue/gamma (no cached latents)")
    embedding = kinds.add_parser(
        "embedding",
        help="a textual-inversion embedding for an SD 1.x, SD 2.x or SDXL model "
        "(A1111's file layout); --dreamartist trains NAME-neg with it",
    )
    _add_common(embedding)
    embedding.set_defaults(learning_rate=5e-3)
    emb = embedding.add_argument_group("embedding")
    emb.add_argument("--num-vectors", type=int, default=1, help="vectors per token (1 to 75)")
    emb.add_argument("--init-text", default="*", help="the words the vectors start from")
    templates = emb.add_mutually_exclusive_group()
    templates.add_argument(
        "--template", default=None, help="prompt template file: lines with [name], [filewords]"
    )
    templates.add_argument(
        "--template-kind",
        default="subject",
        choices=["subject", "style"],
        help="the built-in templates to use (default subject)",
    )
    emb.add_argument(
        "--dreamartist", action="store_true", help="also train NAME-neg for the negative prompt"
    )
    emb.add_argument("--dreamartist-cfg", type=float, default=5.0, help="guidance (default 5)")
    emb.add_argument(
        "--dreamartist-rec-weight",
        type=float,
        default=0.0,
        help="weight of the image reconstruction loss (default 0: off)",
    )
    emb.add_argument(
        "--overwrite", action="store_true", help="replace an embedding of the same name"
    )
    from sdstudio.cli.train_dreambooth import add_dreambooth_parser
    from sdstudio.cli.train_hypernetwork import add_hypernetwork_parser

    add_hypernetwork_parser(kinds, _add_common)
    add_dreambooth_parser(kinds, _add_common)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a model file or folder, or its name")
    parser.add_argument(
        "--data", required=True, help="folder of images with .txt captions (N_name sub-folders)"
    )
    parser.add_argument("--name", required=True, help="the output's name, without the file suffix")
    parser.add_argument("--output-dir", default=None, help="default: sdstudio's folder of the kind")
    parser.add_argument(
        "--state-dir",
        default=None,
        help="states and samples (default: DATA_DIR/training/NAME; for an embedding "
        "DATA_DIR/training/embeddings/NAME)",
    )
    parser.add_argument("--resume", default=None, metavar="STATE_DIR", help="continue a saved run")
    parser.add_argument(
        "--learning-rate", type=float, default=1e-4, help="default 1e-4 (embedding: 5e-3)"
    )
    parser.add_argument(
        "--lr-scheduler",
        default="constant",
        choices=["constant", "constant_with_warmup", "cosine", "linear"],
    )
    parser.add_argument("--lr-warmup-steps", type=int, default=0)
    parser.add_argument("--max-train-steps", type=int, default=None, help="default 1600")
    parser.add_argument(
        "--max-train-epochs", type=int, default=None, help="wins over --max-train-steps"
    )
    parser.add_argument("--train-batch-size", type=int, default=1)
    parser.add_argument(
        "--resolution", default="512", help="W,H or one side (default 512; SDXL: use 1024)"
    )
    parser.add_argument("--no-bucket", action="store_true", help="crop every image to one size")
    parser.add_argument("--min-bucket-reso", type=int, default=256)
    parser.add_argument("--max-bucket-reso", type=int, default=1024)
    parser.add_argument("--bucket-reso-steps", type=int, default=64)
    parser.add_argument(
        "--shuffle-caption", action="store_true", help="shuffle comma-separated tags"
    )
    parser.add_argument("--keep-tokens", type=int, default=0, help="tags kept first when shuffling")
    parser.add_argument("--caption-dropout-rate", type=float, default=0.0)
    parser.add_argument("--min-snr-gamma", type=float, default=None, help="5 is usual")
    parser.add_argument("--noise-offset", type=float, default=0.0)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--cache-latents", action="store_true")
    parser.add_argument("--optimizer", default="AdamW", choices=["AdamW", "AdamW8bit"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every-n-steps", type=int, default=None)
    parser.add_argument("--sample-every-n-steps", type=int, default=None)
    parser.add_argument("--sample-prompt", default="")
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--json", action="store_true", help="print one JSON event per line")


def lora_options(args: argparse.Namespace, context: Context) -> LoraOptions:
    """The run ``args`` ask for, with sdstudio's folders as defaults."""
    from sdstudio.engine.training.lora_network import network_args
    from sdstudio.engine.training.options import LoraOptions

    base = training_options(
        args, context, context.paths.models_dir / "lora", context.paths.data_dir / "training"
    )
    conv_dim, conv_alpha = network_args(args.network_args)
    return LoraOptions(
        base=base,
        network_dim=args.network_dim,
        network_alpha=args.network_alpha,
        unet_lr=args.unet_lr,
        text_encoder_lr=args.text_encoder_lr,
        train_text_encoder=args.train_text_encoder,
        conv_dim=conv_dim,
        conv_alpha=conv_alpha,
        clip_skip=args.clip_skip,
        flip_aug=args.flip_aug,
        color_aug=args.color_aug,
    )


def embedding_options(args: argparse.Namespace, context: Context) -> EmbeddingOptions:
    """The embedding run ``args`` ask for; a name an embedding in the folders generation
    searches already has is refused (unless ``--overwrite`` and it is the output file)."""
    from sdstudio.engine.models.catalog import network_folders
    from sdstudio.engine.training.embedding_options import EmbeddingOptions

    states = context.paths.data_dir / "training" / "embeddings"  # apart from a LoRA's of one name
    base = training_options(args, context, context.paths.models_dir / "embeddings", states)
    folders = network_folders(context.paths, context.settings, "embedding")
    return EmbeddingOptions(
        base=base,
        num_vectors=args.num_vectors,
        init_text=args.init_text,
        template=Path(args.template).expanduser() if args.template else None,
        template_kind=args.template_kind,
        dreamartist=args.dreamartist,
        dreamartist_cfg=args.dreamartist_cfg,
        dreamartist_rec_weight=args.dreamartist_rec_weight,
        overwrite=args.overwrite,
        embedding_dirs=tuple(folders),
    )


def training_options(
    args: argparse.Namespace, context: Context, output_dir: Path, state_root: Path
) -> TrainingOptions:
    """The options every kind shares; ``output_dir`` unless ``--output-dir`` is given, and
    states in ``state_root/NAME`` unless ``--state-dir`` is given."""
    from sdstudio.cli.model_choice import choose_model
    from sdstudio.engine.models.lookup import ModelFinder
    from sdstudio.engine.training.datasets import BucketOptions, CaptionOptions
    from sdstudio.engine.training.options import TrainingOptions

    finder = ModelFinder.for_catalog(context.paths, lambda: context.settings, remember=True)
    model = choose_model(args.model, finder).path
    resolution = _resolution(args.resolution)
    steps = args.max_train_steps
    if steps is None and args.max_train_epochs is None:
        steps = 1600
    return TrainingOptions(
        model=model,
        data=Path(args.data).expanduser().resolve(),
        name=args.name,
        output_dir=_folder(args.output_dir) or output_dir,
        state_dir=_folder(args.state_dir) or state_root / args.name,
        learning_rate=args.learning_rate,
        lr_scheduler=args.lr_scheduler,
        lr_warmup_steps=args.lr_warmup_steps,
        max_train_steps=steps,
        max_train_epochs=args.max_train_epochs,
        train_batch_size=args.train_batch_size,
        seed=args.seed,
        mixed_precision=args.mixed_precision,
        gradient_checkpointing=args.gradient_checkpointing,
        cache_latents=args.cache_latents,
        optimizer=args.optimizer,
        min_snr_gamma=args.min_snr_gamma,
        noise_offset=args.noise_offset,
        max_grad_norm=args.max_grad_norm,
        save_every_n_steps=args.save_every_n_steps,
        sample_every_n_steps=args.sample_every_n_steps,
        sample_prompt=args.sample_prompt,
        sample_steps=args.sample_steps,
        device=args.device,
        buckets=BucketOptions(
            resolution=resolution,
            min_bucket_reso=args.min_bucket_reso,
            max_bucket_reso=args.max_bucket_reso,
            bucket_reso_steps=args.bucket_reso_steps,
            enable_bucket=not args.no_bucket,
        ),
        captions=CaptionOptions(
            shuffle_caption=args.shuffle_caption,
            keep_tokens=args.keep_tokens,
            caption_dropout_rate=args.caption_dropout_rate,
        ),
    )


def run_train(args: argparse.Namespace, context: Context) -> int:
    """``train lora``, ``embedding``, ``hypernetwork`` or ``dreambooth``: train, reporting
    every event; 130 when cancelled."""
    from sdstudio.engine.training.dreambooth_options import DreamboothOptions
    from sdstudio.engine.training.embedding_trainer import train_embedding
    from sdstudio.engine.training.events import CancelFlag
    from sdstudio.engine.training.hypernetwork_options import HypernetworkOptions
    from sdstudio.engine.training.lora_trainer import train_lora
    from sdstudio.engine.training.options import LoraOptions

    options: LoraOptions | EmbeddingOptions | HypernetworkOptions | DreamboothOptions
    if args.kind == "embedding":
        options = embedding_options(args, context)
    elif args.kind == "hypernetwork":
        from sdstudio.cli.train_hypernetwork import hypernetwork_options

        options = hypernetwork_options(args, context, training_options)
    elif args.kind == "dreambooth":
        from sdstudio.cli.train_dreambooth import dreambooth_options

        options = dreambooth_options(args, context, training_options)
    else:
        options = lora_options(args, context)
    options.check()
    reporter = context.reporter

    def on_event(event: TrainingEvent) -> None:
        fields: dict[str, Any] = event.fields()
        if event.kind == "done":
            reporter.event("done", None, **fields)
            reporter.result(event.text())
        else:
            reporter.event(event.kind, event.text(), **fields)

    cancel = CancelFlag()
    resume = Path(args.resume).expanduser() if args.resume else None
    if args.json:
        cancel_on_stdin(cancel)
    with cancel_on_signals(cancel):
        if isinstance(options, LoraOptions):
            path = train_lora(options, on_event=on_event, cancel=cancel, resume=resume)
        elif isinstance(options, DreamboothOptions):
            from sdstudio.engine.training.dreambooth_trainer import train_dreambooth

            path = train_dreambooth(options, on_event=on_event, cancel=cancel, resume=resume)
        elif isinstance(options, HypernetworkOptions):
            from sdstudio.engine.training.hypernetwork_trainer import train_hypernetwork

            path = train_hypernetwork(options, on_event=on_event, cancel=cancel, resume=resume)
        else:
            path = train_embedding(options, on_event=on_event, cancel=cancel, resume=resume)
    return 0 if path is not None else EXIT_CANCELLED


@contextmanager
def cancel_on_signals(cancel: CancelFlag) -> Iterator[None]:
    """SIGINT and SIGTERM set ``cancel`` (the run then saves its state) while training."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach only the main thread; the caller cancels through the flag
        return
    handled = [signal.SIGINT, signal.SIGTERM]
    previous = {number: signal.getsignal(number) for number in handled}

    def handler(_number: int, _frame: Any) -> None:
        cancel.set()

    for number in handled:
        signal.signal(number, handler)
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def cancel_on_stdin(cancel: CancelFlag, fd: int | None = None) -> threading.Thread | None:
    """A daemon thread that sets ``cancel`` when it reads the line ``cancel`` on ``fd``
    (standard input by default); end of input ends the thread and nothing else.

    Windows has no signal a parent can send its console child to be caught:
    ``QProcess.terminate()`` there only posts WM_CLOSE to windows this process does not
    have. So the app writes ``cancel`` to the pipe. The thread reads the descriptor
    itself, not ``sys.stdin``: a daemon thread blocked inside a buffered reader holds its
    lock, and the interpreter's shutdown can then abort on it. A terminal (or no standard
    input at all, as in a windowed program) is not watched: Ctrl+C serves there.
    """
    if fd is None:
        try:
            fd = sys.stdin.fileno()  # None, or a test runner's stand-in, raise here
        except (AttributeError, OSError, ValueError):
            return None
    try:
        if os.isatty(fd):
            return None
    except OSError:
        return None

    def watch() -> None:
        pending = b""
        while True:
            try:
                data = os.read(fd, 1024)
            except OSError:
                return
            if not data:
                return  # end of input: the parent closed the pipe, or there was none
            *lines, pending = (pending + data).split(b"\n")
            pending = pending[-64:]  # a line this long is not ``cancel`` anyway
            if any(line.strip() == b"cancel" for line in lines):
                cancel.set()

    thread = threading.Thread(target=watch, name="stdin-cancel", daemon=True)
    thread.start()
    return thread


def _resolution(text: str) -> tuple[int, int]:
    from sdstudio.engine.errors import InvalidRequest

    parts = [part.strip() for part in text.split(",")]
    try:
        sides = [int(part) for part in parts]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2):
        raise InvalidRequest(f"--resolution {text!r} must be one side or W,H (512 or 512,768).")
    return (sides[0], sides[-1])


def _folder(value: str | None) -> Path | None:
    return Path(value).expanduser().resolve() if value else None
