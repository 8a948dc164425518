"""``sdstudio-cli``: the engine without a window, for scripts and power users.

Commands: ``generate``, ``upscale``, ``preprocess``, ``info``, ``rerun``, ``history``,
``models``, ``settings`` and ``train``.
Errors are one line on stderr (or a JSON ``error`` event) and a non-zero exit
status, never a traceback; details go to the log file.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import sdstudio
from sdstudio.cli import (
    generate,
    history,
    models,
    preprocess,
    settings,
    styles,
    train,
    upscale,
    wildcards,
    xyz,
)
from sdstudio.cli.report import Reporter
from sdstudio.engine.errors import GenerationCancelled, SdStudioError
from sdstudio.engine.history.library import ImageLibrary
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.settings import Settings, load_settings
from sdstudio.logs import configure_logging

log = logging.getLogger("sdstudio.cli")

EXIT_ERROR = 1
EXIT_CANCELLED = 130


@dataclass(slots=True)
class Context:
    """What every command may need; the library opens on first use."""

    paths: AppPaths
    settings: Settings
    reporter: Reporter
    _library: ImageLibrary | None = field(default=None, repr=False)

    @property
    def library(self) -> ImageLibrary:
        """The image library (outputs folder and history database)."""
        if self._library is None:
            self._library = ImageLibrary.open(
                self.paths.history_db,
                self.settings.outputs_path(self.paths),
                on_notice=lambda message: self.reporter.event("notice", message, message=message),
            )
        return self._library

    def close(self) -> None:
        """Close the library if it was opened."""
        if self._library is not None:
            self._library.close()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = argparse.ArgumentParser(
        prog="sdstudio-cli", description="Generate, inspect and manage Stable Diffusion images."
    )
    parser.add_argument("--version", action="version", version=f"sdstudio {sdstudio.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    generate.add_parsers(commands)
    upscale.add_parser(commands)
    preprocess.add_parser(commands)
    history.add_parser(commands)
    models.add_parser(commands)
    settings.add_parser(commands)
    train.add_parser(commands)
    styles.add_parser(commands)
    xyz.add_parser(commands)
    wildcards.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status.

    Output piped into a command that stops reading early (``| head``) ends the
    run quietly with status 1, as the Python documentation recommends.
    """
    try:
        status = _run(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        log.debug("The reader of the output went away", exc_info=True)
        _discard_stdout()
        return EXIT_ERROR
    return status


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    paths = AppPaths.default()
    log_file = paths.log_dir / "sdstudio-cli.log"
    configure_logging(log_file)
    reporter = Reporter(getattr(args, "json", False))
    context = Context(paths, load_settings(paths), reporter)
    try:
        if args.command == "history":
            return history.run(args, context.library, reporter)
        if args.command == "models":
            return models.run(args, context)
        if args.command == "settings":
            return settings.run(args, context.paths, context.settings, reporter)
        if args.command == "info":
            from sdstudio.cli.info import run_info

            return run_info(args, reporter)
        if args.command == "upscale":
            return upscale.run_upscale(args, context)
        if args.command == "preprocess":
            return preprocess.run_preprocess(args, context)
        if args.command == "xyz":
            return xyz.run_xyz(args, context)
        if args.command == "train":
            return train.run_train(args, context)
        if args.command == "styles":
            return styles.run(args, context)
        if args.command == "wildcards":
            return wildcards.run(args, context)
        return generate.run_generation(args, context)
    except (GenerationCancelled, KeyboardInterrupt):
        reporter.event("cancelled", "cancelled")
        return EXIT_CANCELLED
    except SdStudioError as error:
        reporter.error(str(error))
        return EXIT_ERROR
    except BrokenPipeError:
        if _stdout_closed():
            raise  # main ends quietly
        log.exception("Unexpected failure")
        reporter.error(f"unexpected failure: a connection was closed (details in {log_file})")
        return EXIT_ERROR
    except Exception as error:
        log.exception("Unexpected failure")
        reporter.error(
            f"unexpected failure: {type(error).__name__}: {error} (details in {log_file})"
        )
        return EXIT_ERROR
    finally:
        context.close()


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (not some other broken pipe)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    if not hasattr(select, "poll"):
        return True  # Windows: a BrokenPipeError in the CLI is almost surely its output
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    gone = select.POLLERR | select.POLLHUP  # Linux reports POLLERR, others may say POLLHUP
    return any(events & gone for _fd, events in poller.poll(0))


def _discard_stdout() -> None:
    """Point standard output at the null device, so that exiting flushes nowhere."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
