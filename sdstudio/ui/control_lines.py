"""The info panel's lines for control units and image prompts: one each, with the
ControlNet or IP-Adapter file that ran."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdstudio.engine.metadata import control_names, ip_adapter_names
from sdstudio.engine.request import GenerationRequest

Line = list[tuple[str, str]]


def control_lines(
    request: GenerationRequest, extra: Mapping[str, Any], extras: Mapping[str, str]
) -> tuple[list[Line], set[str]]:
    """Lines for the request's units and image prompts (``extra`` is the record's, naming
    the files that ran) and for another tool's units and IP-Adapters kept in ``extras``
    (their text carries no images, so they were not applied); also the extras keys shown."""
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
    lines += _image_prompt_lines(request, extra)
    for read in ip_adapter_names.read_prompts(extras):
        if not read.problem:
            line = [
                (read.key, f"IP-Adapter {read.describe()}"),
                ("Not applied", "no reference images"),
            ]
            lines.append(line)
            shown.add(read.key)
    return lines, shown


def _image_prompt_lines(request: GenerationRequest, extra: Mapping[str, Any]) -> list[Line]:
    """A line per image prompt: the adapter, its reference images and the file that ran."""
    lines: list[Line] = []
    recorded = extra.get(ip_adapter_names.EXTRA_KEY)
    files = recorded if isinstance(recorded, list) else []
    for i, prompt in enumerate(request.ip_adapters):
        line: Line = [(f"Image prompt {i}", ip_adapter_names.describe(prompt))]
        line.append(("Images", ", ".join(Path(image).name for image in prompt.images)))
        if prompt.mask:
            line.append(("Mask", Path(prompt.mask).name))
        if i < len(files):
            line.append(("File", control_names.model_title(prompt.model, files[i])))
        lines.append(line)
    return lines
