"""The info panel's lines for control units: one a unit, with the ControlNet file that ran."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sdstudio.engine.metadata import control_names
from sdstudio.engine.request import GenerationRequest

Line = list[tuple[str, str]]


def control_lines(
    request: GenerationRequest, extra: Mapping[str, Any], extras: Mapping[str, str]
) -> tuple[list[Line], set[str]]:
    """Lines for the request's units (``extra`` is the record's, naming the files that
    ran) and for another tool's units kept in ``extras``; also the extras keys shown."""
    lines: list[Line] = []
    recorded = extra.get(control_names.EXTRA_KEY)
    files = recorded if isinstance(recorded, list) else []
    for i, unit in enumerate(request.control):
        line: Line = [(f"ControlNet {i}", control_names.describe(unit))]
        if i < len(files):
            line.append(("File", control_names.model_title(unit.model, files[i])))
        lines.append(line)
    shown: set[str] = set()
    for written in control_names.read_units(extras):
        if not written.problem:
            lines.append([(written.key, written.describe()), ("Not applied", "no control image")])
            shown.add(written.key)
    return lines, shown
