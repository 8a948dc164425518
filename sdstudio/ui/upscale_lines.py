"""The info panel's lines for an upscaled image: where it came from and how."""

from __future__ import annotations

from typing import Any

from sdstudio.engine.request import GenerationRequest, Mode

Line = list[tuple[str, str]]


def upscale_lines(request: GenerationRequest, extra: dict[str, Any]) -> list[Line]:
    """An image upscaled alone: its source and the upscale; an SD upscale: its upscale
    (the rest of an SD upscale is shown as for any image-to-image)."""
    upscale = request.upscale
    if upscale is None:
        return []
    how = f"{upscale.upscaler} ×{upscale.scale:g}"
    if request.mode is Mode.IMG2IMG:
        return [
            [
                ("SD upscale", how),
                ("Tiles", f"{request.width}×{request.height}"),
                ("Overlap", f"{upscale.overlap} px"),
            ]
        ]
    source = extra.get("source")
    source = source if isinstance(source, dict) else {}
    size = ""
    if isinstance(source.get("width"), int) and isinstance(source.get("height"), int):
        size = f" ({source['width']}×{source['height']})"
    return [
        [("Upscaled from", f"{source.get('name') or 'an image'}{size}")],
        [("Upscaler", how), ("Size", f"{request.width}×{request.height}")],
    ]
