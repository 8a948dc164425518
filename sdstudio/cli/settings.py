"""``sdstudio-cli settings [KEY [VALUE]]``: show or change a setting."""

from __future__ import annotations

import argparse

from sdstudio.cli.report import Reporter
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.settings import KEYS, Settings, change_setting, save_settings


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``settings``."""
    parser = commands.add_parser(
        "settings", help="show or change settings (outputs_dir, device, theme, memory)"
    )
    parser.add_argument("key", nargs="?", choices=KEYS)
    parser.add_argument("value", nargs="?", help="new value; an empty string restores the default")
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, paths: AppPaths, settings: Settings, reporter: Reporter) -> int:
    """Show all settings, one, or change one."""
    if args.key and args.value is not None:
        settings = change_setting(settings, args.key, args.value)
        save_settings(paths, settings)
    effective = {
        "outputs_dir": str(settings.outputs_path(paths)),
        "device": settings.device,
        "theme": settings.theme,
        "memory": settings.memory,
    }
    shown = {args.key: effective[args.key]} if args.key else effective
    if reporter.as_json:
        reporter.data(shown)
    else:
        for key, value in shown.items():
            reporter.result(f"{key}: {value}")
    return 0
