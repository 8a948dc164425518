"""``sdstudio-cli styles``: list the prompt styles, import an A1111 ``styles.csv``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from sdstudio.engine.prompting import styles

if TYPE_CHECKING:
    from sdstudio.cli import Context


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``styles``."""
    parser = commands.add_parser(
        "styles", help="list the prompt styles or import those of an A1111 styles.csv"
    )
    parser.add_argument(
        "--list", action="store_true", help="list the styles (what is done without options)"
    )
    parser.add_argument(
        "--import-a1111",
        metavar="PATH",
        default=None,
        help="copy the styles of an A1111 or Forge styles.csv (or of the install folder "
        "holding it) into sdstudio's own styles file",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, context: Context) -> int:
    """``styles``: import first (when asked), then list."""
    reporter, own = context.reporter, context.paths.styles_file
    if args.import_a1111:
        source = Path(args.import_a1111).expanduser()
        if source.is_dir():
            source = source / styles.A1111_FILE
        added, replaced = styles.import_styles(source, own)
        message = f"Imported {added + replaced} styles from {source} into {own}"
        reporter.result(f"{message} ({added} new, {replaced} replaced).")
        reporter.event(
            "imported",
            None,
            added=added,
            replaced=replaced,
            path=str(own),
        )
        if not args.list:
            return 0
    others = styles.a1111_style_files(context.settings.model_folders)
    found = styles.all_styles(own, others)
    for style in found:
        where = "" if style.source == str(own) else f"  (from {style.source})"
        negative = f" | negative: {style.negative_prompt}" if style.negative_prompt else ""
        reporter.result(f"{style.name}: {style.prompt}{negative}{where}")
        reporter.event(
            "style",
            None,
            name=style.name,
            prompt=style.prompt,
            negative_prompt=style.negative_prompt,
            source=style.source,
        )
    if not found:
        reporter.event(
            "notice",
            f"No styles yet: save some in the app, or import an A1111 styles.csv with "
            f"--import-a1111 (sdstudio's own file: {own}).",
        )
    return 0
