"""``sdstudio-cli``: the engine without a window, for scripts and power users.

Commands: ``generate``, ``info`` and ``rerun``. Errors are one line on
stderr (or a JSON ``error`` event) and a non-zero exit status, never a
traceback; details go to the log file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import sdstudio
from sdstudio.engine.errors import GenerationCancelled, InvalidRequest, SdStudioError
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.request import GenerationRequest, Mode, round_to_multiple_of_8
from sdstudio.logs import configure_logging, quiet_third_party

log = logging.getLogger("sdstudio.cli")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 130


class Reporter:
    """Prints progress and results as text or as one JSON object per line."""

    def __init__(self, as_json: bool, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.as_json = as_json
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def event(self, kind: str, text: str | None = None, **fields: Any) -> None:
        """Report an event: JSON on stdout, or ``text`` (if any) on stderr."""
        if self.as_json:
            print(json.dumps({"event": kind, **fields}, ensure_ascii=False), file=self.out)
            self.out.flush()
        elif text is not None:
            print(text, file=self.err, flush=True)

    def result(self, text: str) -> None:
        """A line of the command's result (text mode only; JSON reports events)."""
        if not self.as_json:
            print(text, file=self.out, flush=True)

    def error(self, message: str) -> None:
        """Report a failure."""
        if self.as_json:
            self.event("error", message=message)
        else:
            print(f"error: {message}", file=self.err, flush=True)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = argparse.ArgumentParser(
        prog="sdstudio-cli", description="Generate and inspect Stable Diffusion images."
    )
    parser.add_argument("--version", action="version", version=f"sdstudio {sdstudio.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser("generate", help="generate images from a prompt or an image")
    generate.add_argument("--model", required=True, help="diffusers folder or .safetensors file")
    generate.add_argument("--prompt", required=True)
    generate.add_argument("--negative", default="", help="negative prompt")
    generate.add_argument("--sampler", default="DPM++ 2M", help="for example 'Euler a', 'DDIM'")
    generate.add_argument("--schedule", default=None, help="Automatic, Karras, Exponential, …")
    generate.add_argument("--steps", type=int, default=20)
    generate.add_argument("--cfg", type=float, default=7.0, help="guidance scale")
    generate.add_argument("--seed", type=int, default=-1, help="-1 for a random seed")
    generate.add_argument("--width", type=int, default=None)
    generate.add_argument("--height", type=int, default=None)
    generate.add_argument("--batch", type=int, default=1, help="images, with seeds s, s+1, …")
    generate.add_argument("--init-image", default=None, help="start from this image (img2img)")
    generate.add_argument("--strength", type=float, default=0.75, help="how much to change it")
    generate.add_argument("--mask", default=None, help="white = repaint (inpainting)")
    _add_run_options(generate)

    info = commands.add_parser("info", help="show the generation settings stored in an image")
    info.add_argument("image")
    info.add_argument("--json", action="store_true", help="print JSON")

    rerun = commands.add_parser("rerun", help="generate again from an image's settings")
    rerun.add_argument("image")
    rerun.add_argument("--model", default=None, help="use this model instead of the recorded one")
    rerun.add_argument("--seed", type=int, default=None, help="use this seed instead")
    _add_run_options(rerun)
    return parser


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument(
        "--precision", default="auto", choices=["auto", "float32", "float16", "bfloat16"]
    )
    parser.add_argument(
        "--config", default=None, help="diffusers folder of the family of a .safetensors model"
    )
    parser.add_argument("--out", default=None, help="folder for the images (default: outputs)")
    parser.add_argument("--json", action="store_true", help="print one JSON event per line")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status."""
    args = build_parser().parse_args(argv)
    paths = AppPaths.default()
    configure_logging(paths.log_dir / "sdstudio-cli.log")
    reporter = Reporter(getattr(args, "json", False))
    try:
        if args.command == "info":
            return _info(args, reporter)
        quiet_third_party()
        if args.command == "generate":
            request = _request_from_arguments(args, reporter)
        else:
            request = _request_from_image(args, reporter)
        return _run(request, args, paths, reporter)
    except GenerationCancelled:
        reporter.event("cancelled", "cancelled")
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        reporter.event("cancelled", "cancelled")
        return EXIT_CANCELLED
    except SdStudioError as error:
        reporter.error(str(error))
        return EXIT_ERROR
    except Exception as error:
        log.exception("Unexpected failure")
        reporter.error(
            f"unexpected failure: {type(error).__name__}: {error} "
            f"(details in {paths.log_dir / 'sdstudio-cli.log'})"
        )
        return EXIT_ERROR


def _request_from_arguments(args: argparse.Namespace, reporter: Reporter) -> GenerationRequest:
    from sdstudio.engine import samplers
    from sdstudio.engine.images import open_image

    sampler, implied_schedule = samplers.split_sampler_name(args.sampler)
    schedule = samplers.get_schedule(args.schedule) if args.schedule else implied_schedule
    if args.schedule is None and implied_schedule == samplers.AUTOMATIC:
        schedule = samplers.get_sampler(sampler).default_schedule
    if args.mask and not args.init_image:
        raise InvalidRequest("--mask needs --init-image: the mask marks what to repaint in it.")
    mode = Mode.TXT2IMG
    width, height = args.width or 512, args.height or 512
    if args.init_image:
        mode = Mode.INPAINT if args.mask else Mode.IMG2IMG
        init_width, init_height = open_image(args.init_image, what="init image").size
        width, height = args.width or init_width, args.height or init_height
    width = _multiple_of_8("width", width, reporter)
    height = _multiple_of_8("height", height, reporter)
    return GenerationRequest(
        model=str(Path(args.model).expanduser().resolve())
        if os.path.exists(args.model)
        else args.model,
        prompt=args.prompt,
        negative_prompt=args.negative,
        mode=mode,
        sampler=sampler,
        schedule=schedule,
        steps=args.steps,
        guidance_scale=args.cfg,
        seed=args.seed,
        width=width,
        height=height,
        batch_size=args.batch,
        init_image=str(Path(args.init_image).resolve()) if args.init_image else None,
        mask=str(Path(args.mask).resolve()) if args.mask else None,
        strength=args.strength if args.init_image else 0.75,
    )


def _multiple_of_8(name: str, value: int, reporter: Reporter) -> int:
    if value % 8 == 0 or value < 8:
        return value
    rounded = round_to_multiple_of_8(value)
    reporter.event(
        "notice",
        f"note: {name} {value} is not a multiple of 8; using {rounded}.",
        message=f"{name} {value} is not a multiple of 8; using {rounded}.",
    )
    return rounded


def _request_from_image(args: argparse.Namespace, reporter: Reporter) -> GenerationRequest:
    from sdstudio.engine.metadata import read_image_settings

    settings = read_image_settings(args.image)
    request = settings.request
    changes: dict[str, Any] = {}
    if args.model:
        changes["model"] = str(Path(args.model).expanduser().resolve())
    elif not Path(request.model).exists():
        raise InvalidRequest(
            f"The model {request.model!r} recorded in {Path(args.image).name} was not found; "
            "give it with --model PATH."
        )
    if args.seed is not None:
        changes["seed"] = args.seed
    for name in ("init_image", "mask"):
        value = getattr(request, name)
        if value and not Path(value).exists():
            raise InvalidRequest(f"The {name.replace('_', ' ')} {value} of this image is gone.")
    return request.replace(**changes) if changes else request


def _run(
    request: GenerationRequest, args: argparse.Namespace, paths: AppPaths, reporter: Reporter
) -> int:
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.generation import Engine, Progress
    from sdstudio.engine.hashing import HashCache
    from sdstudio.engine.outputs import OutputWriter
    from sdstudio.engine.pipelines import PipelineManager

    device = choose_device(args.device, args.precision)
    manager = PipelineManager(
        device,
        single_file_config=Path(args.config) if args.config else None,
        hash_cache=HashCache(paths.cache_dir / "model-hashes.json"),
    )
    engine = Engine(manager, paths.inputs_dir)
    writer = (
        OutputWriter(Path(args.out), by_date=False) if args.out else OutputWriter(paths.outputs_dir)
    )

    def on_progress(progress: Progress) -> None:
        text = None
        if not reporter.as_json:
            prefix = (
                f"image {progress.image_index + 1}/{progress.batch_size} "
                if progress.batch_size > 1
                else ""
            )
            text = f"{prefix}step {progress.step}/{progress.total}"
        reporter.event(
            "step", text, step=progress.step, total=progress.total, index=progress.image_index
        )

    def on_status(message: str) -> None:
        reporter.event("notice", message, message=message)

    for result in engine.generate(request, on_progress=on_progress, on_status=on_status):
        path = writer.write(result)
        reporter.event("image", None, path=str(path), seed=result.record.request.seed)
        reporter.result(str(path))
    reporter.event("done")
    return 0


def _info(args: argparse.Namespace, reporter: Reporter) -> int:
    from sdstudio.engine.metadata import read_image_settings

    settings = read_image_settings(args.image)
    request = settings.request
    if args.json:
        data: dict[str, Any] = {"source": settings.source, "request": request.to_dict()}
        if settings.record is not None:
            data["model_name"] = settings.record.model_name
            data["model_hash"] = settings.record.model_hash
            data["created"] = settings.record.created
        if settings.parameters:
            data["parameters"] = settings.parameters
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return 0
    source_labels = {
        "sdstudio": "sdstudio",
        "a1111": "AUTOMATIC1111 parameters",
        "comfyui": "ComfyUI",
        "invokeai": "InvokeAI",
        "fooocus": "Fooocus",
    }
    rows = [
        ("Source", source_labels.get(settings.source, settings.source)),
        ("Prompt", request.prompt),
        ("Negative prompt", request.negative_prompt),
        ("Mode", request.mode.value),
        ("Model", request.model),
        ("Sampler", request.sampler),
        ("Schedule type", request.schedule),
        ("Steps", str(request.steps)),
        ("CFG scale", f"{request.guidance_scale:g}"),
        ("Seed", str(request.seed)),
        ("Size", f"{request.width}x{request.height}"),
    ]
    if request.mode is not Mode.TXT2IMG:
        rows += [("Init image", request.init_image or ""), ("Strength", f"{request.strength:g}")]
    if request.mask:
        rows.append(("Mask", request.mask))
    for key, value in rows:
        if value:
            reporter.result(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
