"""Writing image files with metadata chunks, shared by the metadata format tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.engine.request import GenerationRequest

A1111_TEXT = (
    "masterpiece, (a red boat:1.2) on a lake, <lora:add_detail:0.8>\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567890, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
)


def write_png(path: Path, **chunks: str) -> Path:
    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key.replace("_dash_", "-"), value)
    Image.new("RGB", (64, 96)).save(path, pnginfo=info)
    return path


def write_exif(path: Path, exif_ifd: dict[int, Any], ifd0: dict[int, Any] | None = None) -> Path:
    exif = Image.Exif()
    for tag, value in (ifd0 or {}).items():
        exif[tag] = value
    if exif_ifd:
        exif.get_ifd(0x8769).update(exif_ifd)
    Image.new("RGB", (64, 96)).save(path, exif=exif)
    return path


def summary(request: GenerationRequest) -> tuple[object, ...]:
    return (
        request.prompt,
        request.negative_prompt,
        request.steps,
        request.sampler,
        request.schedule,
        request.guidance_scale,
        request.seed,
        request.width,
        request.height,
    )
