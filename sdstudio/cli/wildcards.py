"""``sdstudio-cli wildcards``: the wildcard folders and names, and what a template
resolves to with a seed (see :mod:`sdstudio.engine.prompting.wildcards`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.prompting.wildcards import Wildcards, wildcard_folders
from sdstudio.engine.request import MAX_SEED

if TYPE_CHECKING:
    from sdstudio.cli import Context


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``wildcards``."""
    parser = commands.add_parser(
        "wildcards", help="list the wildcards (__name__) or show what a prompt resolves to"
    )
    parser.add_argument("--list", action="store_true", help="list the wildcard names (the default)")
    parser.add_argument(
        "--resolve", metavar="TEMPLATE", default=None, help="a prompt with wildcards or {a|b}"
    )
    parser.add_argument("--seed", type=int, default=None, help="the image's seed (with --resolve)")
    parser.add_argument(
        "--batch", type=int, default=1, help="resolve for seeds s, s+1, … as a batch does"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, context: Context) -> int:
    """List the wildcards, or resolve ``--resolve`` with ``--seed``."""
    folders = wildcard_folders(context.paths, context.settings)
    wildcards = Wildcards(folders)
    reporter = context.reporter
    if args.resolve is None:
        if args.seed is not None:
            raise InvalidRequest("--seed goes with --resolve TEMPLATE.")
        names = wildcards.names()
        if reporter.as_json:
            reporter.data({"folders": [str(f) for f in folders], "wildcards": names})
            return 0
        shown = ", ".join(str(f) for f in folders) or f"none ({context.paths.wildcards_dir})"
        reporter.event("notice", f"wildcard folders: {shown}")
        for name in names:
            reporter.result(f"__{name}__")
        if not names:
            reporter.event("notice", "no wildcard files (.txt) found")
        return 0
    if args.seed is None:
        raise InvalidRequest("--resolve needs --seed N: the seed picks the choices.")
    if not 0 <= args.seed <= MAX_SEED:
        raise InvalidRequest(f"--seed must be 0 to {MAX_SEED}.")
    if not 1 <= args.batch <= 100:
        raise InvalidRequest("--batch must be 1 to 100.")
    seeds = [(args.seed + i) % (MAX_SEED + 1) for i in range(args.batch)]
    resolved = [(seed, wildcards.resolve(args.resolve, seed)) for seed in seeds]
    if reporter.as_json:
        reporter.data([{"seed": seed, "prompt": prompt} for seed, prompt in resolved])
        return 0
    for seed, prompt in resolved:
        reporter.result(prompt if args.batch == 1 else f"{seed}: {prompt}")
    return 0
