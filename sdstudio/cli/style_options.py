"""``generate --style NAME``: prompt styles applied when the request is built (see
:mod:`sdstudio.engine.prompting.styles`)."""

from __future__ import annotations

import argparse

from sdstudio.engine.paths import AppPaths
from sdstudio.engine.request import GenerationRequest


def add_style_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--style`` to ``generate``."""
    parser.add_argument(
        "--style",
        action="append",
        default=None,
        metavar="NAME",
        help="apply this prompt style (sdstudio's, or an A1111 install's styles.csv); "
        "repeat for more, applied in order ('styles --list' shows them)",
    )


def styled(
    request: GenerationRequest,
    names: list[str] | None,
    paths: AppPaths,
    model_folders: tuple[str, ...] = (),
) -> GenerationRequest:
    """``request`` with the named styles applied to its prompts and recorded by name."""
    if not names:
        return request
    from sdstudio.engine.prompting import styles

    known = styles.all_styles(paths.styles_file, styles.a1111_style_files(model_folders))
    return styles.styled_request(request, styles.find_styles(names, known))
