"""Upscaling under AUTOMATIC1111's names.

An image upscaled alone (the ``upscale`` mode, A1111's Extras tab) keeps the
``parameters`` of its source, as A1111 keeps them, and says how it was upscaled in a
``postprocessing`` text (``Postprocess upscale by: 4, Postprocess upscaler:
4x-UltraSharp``). An SD upscale (image-to-image repainting an upscaled source in
tiles) adds A1111's ``SD upscale overlap`` and ``SD upscale upscaler`` to its
``parameters``, with ``SD upscale scale`` (A1111 records no scale; it re-runs here).
A1111 texts never carry the source image, so these keys are kept as extras when read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sdstudio.engine.request import GenerationRequest, Mode

POSTPROCESSING_KEY = "postprocessing"


def settings_written(request: GenerationRequest) -> list[tuple[str, object]]:
    """The ``parameters`` entries of an SD upscale (none without one)."""
    upscale = request.upscale
    if upscale is None or request.mode is not Mode.IMG2IMG:
        return []
    return [
        ("SD upscale overlap", upscale.overlap),
        ("SD upscale upscaler", upscale.upscaler),
        ("SD upscale scale", f"{upscale.scale:g}"),
    ]


def postprocessing_text(request: GenerationRequest) -> str:
    """The ``postprocessing`` text of an image upscaled alone ("" for other images)."""
    upscale = request.upscale
    if upscale is None or request.mode is not Mode.UPSCALE:
        return ""
    return f"Postprocess upscale by: {upscale.scale:g}, Postprocess upscaler: {upscale.upscaler}"


def source_parameters(extra: Mapping[str, Any] | None) -> str:
    """The source's own ``parameters`` that an image upscaled alone keeps ("" if none)."""
    source = (extra or {}).get("source")
    parameters = source.get("parameters") if isinstance(source, dict) else None
    return parameters if isinstance(parameters, str) else ""
