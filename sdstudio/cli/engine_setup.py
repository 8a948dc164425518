"""What ``generate``, ``rerun`` and ``xyz`` share to run: the device options, the engine
with its model folders and the image library, and how progress is reported."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from sdstudio.cli.report import Reporter
from sdstudio.engine.request import Mode

if TYPE_CHECKING:
    from collections.abc import Callable

    from sdstudio.cli import Context
    from sdstudio.engine.generation import Engine, Progress
    from sdstudio.engine.history.library import ImageLibrary
    from sdstudio.engine.models.lookup import ModelFinder


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The device, precision, compile, config and output options of a run."""
    parser.add_argument("--device", default=None, choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument(
        "--precision", default="auto", choices=["auto", "float32", "float16", "bfloat16"]
    )
    parser.add_argument(
        "--compile",
        default=None,
        action=argparse.BooleanOptionalAction,
        help="compile the denoiser with torch.compile (default: the compile setting; faster "
        "on CUDA GPUs after a slow first image of each size)",
    )
    parser.add_argument(
        "--config", default=None, help="diffusers folder of the family of a .safetensors model"
    )
    parser.add_argument("--out", default=None, help="folder for the images (default: outputs)")
    parser.add_argument("--json", action="store_true", help="print one JSON event per line")


def open_engine(
    args: argparse.Namespace, context: Context, finder: ModelFinder
) -> tuple[Engine, ImageLibrary]:
    """The engine and the image library ``generate`` runs with (``xyz`` too)."""
    from sdstudio.engine.control.annotators import annotator_folders
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.generation import Engine
    from sdstudio.engine.hashing import HashCache
    from sdstudio.engine.history.library import ImageLibrary
    from sdstudio.engine.models.catalog import network_folders
    from sdstudio.engine.networks import Networks
    from sdstudio.engine.outputs import OutputWriter
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.engine.precision import rerun_device
    from sdstudio.engine.prompting.wildcards import wildcard_folders
    from sdstudio.engine.refine.face_detection import open_detector

    paths = context.paths
    compiled = getattr(args, "compile", None)
    compiled = context.settings.compile_denoiser if compiled is None else compiled
    device = choose_device(args.device or context.settings.device, args.precision, compile=compiled)
    recorded = getattr(args, "recorded_device", None)  # a re-run: in the recorded precision
    if recorded is not None:
        device = rerun_device(device, recorded)
    manager = PipelineManager(
        device,
        single_file_config=Path(args.config) if args.config else None,
        hash_cache=HashCache(paths.cache_dir / "model-hashes.json"),
        memory_mode=context.settings.memory,
        find_model=finder,
        compile_cache=paths.cache_dir / "torch-compile",
    )
    networks = Networks(
        lambda: network_folders(paths, context.settings, "lora"),
        lambda: network_folders(paths, context.settings, "embedding"),
        manager.hash_cache,
    )
    engine = Engine(
        manager,
        paths.inputs_dir,
        networks=networks,
        vae_dirs=lambda: network_folders(paths, context.settings, "vae"),
        text_encoder_dirs=lambda: network_folders(paths, context.settings, "text_encoder"),
        upscaler_dirs=lambda: network_folders(paths, context.settings, "upscaler"),
        control_dirs=lambda: network_folders(paths, context.settings, "controlnet"),
        ip_adapter_dirs=lambda: network_folders(paths, context.settings, "ipadapter"),
        clip_vision_dirs=lambda: network_folders(paths, context.settings, "clip_vision"),
        annotator_dirs=lambda: annotator_folders(paths, context.settings),
        detectors=lambda name: open_detector(
            name, network_folders(paths, context.settings, "detector")
        ),
        wildcard_dirs=lambda: wildcard_folders(paths, context.settings),
        tiny_vae_dirs=lambda: network_folders(paths, context.settings, "tiny_vae"),
    )
    library = context.library
    if args.out:
        # Images still go into the history, from the folder the user chose.
        library = ImageLibrary(library.store, OutputWriter(Path(args.out), by_date=False))
    return engine, library


def progress_reporters(
    reporter: Reporter, mode: Mode
) -> tuple[Callable[[Progress], None], Callable[[str], None]]:
    """How ``generate`` reports steps and notices."""

    def on_progress(progress: Progress) -> None:
        text = None
        if not reporter.as_json:
            prefix = (
                f"image {progress.image_index + 1}/{progress.batch_size} "
                if progress.batch_size > 1
                else ""
            )
            unit = "tile" if mode is Mode.UPSCALE else "step"
            text = f"{prefix}{unit} {progress.step}/{progress.total}"
        reporter.event(
            "step", text, step=progress.step, total=progress.total, index=progress.image_index
        )

    def on_status(message: str) -> None:
        reporter.event("notice", message, message=message)

    return on_progress, on_status
