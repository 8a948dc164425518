"""``sdstudio-cli``: the engine without a window, for scripts and power users.

Commands: ``generate``, ``info``, ``rerun``, ``history``, ``models`` and ``settings``.
Errors are one line on stderr (or a JSON ``error`` event) and a non-zero exit
status, never a traceback; details go to the log file.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import sdstudio
from sdstudio.cli import generate, history, models, settings
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
    history.add_parser(commands)
    models.add_parser(commands)
    settings.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status."""
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
            return generate.run_info(args, reporter)
        return generate.run_generation(args, context)
    except (GenerationCancelled, KeyboardInterrupt):
        reporter.event("cancelled", "cancelled")
        return EXIT_CANCELLED
    except SdStudioError as error:
        reporter.error(str(error))
        return EXIT_ERROR
    except Exception as error:
        log.exception("Unexpected failure")
        reporter.error(
            f"unexpected failure: {type(error).__name__}: {error} (details in {log_file})"
        )
        return EXIT_ERROR
    finally:
        context.close()
