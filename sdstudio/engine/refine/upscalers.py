"""Upscaling an image: with Pillow (``Lanczos``, ``Nearest``; A1111's ``None`` is a
Lanczos resize) or with an upscaler model file run in tiles.

:func:`upscale_image` is the one entry point; the ``upscale`` mode, SD upscale and the
hires fix call it. A model is run as A1111 runs its upscalers
(``modules/upscaler.py``): again on its own output, at most three times, while the
image is smaller than the target, then resized to the exact target with Lanczos. So a
4x model gives a 2x image by one pass and a resize down, and a 2x model gives 4x by
two passes.

The tiling and its blending are in :mod:`sdstudio.engine.refine.upscale_tiles`; finding and
loading files in :mod:`sdstudio.engine.refine.upscaler_files`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from sdstudio.engine.errors import InvalidRequest, OutOfMemory, SdStudioError
from sdstudio.engine.refine.upscale_tiles import TileLayout, plan_tiles, run_tiled
from sdstudio.engine.refine.upscaler_files import (
    A1111_UPSCALERS,
    RESIZES,
    UPSCALER_SUFFIXES,
    UpscalerCache,
    UpscalerModel,
    display_name,
    find_upscaler,
    load_upscaler,
    resize_upscaler,
)

__all__ = [
    "A1111_UPSCALERS",
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "MAX_PASSES",
    "UPSCALER_SUFFIXES",
    "Cancellable",
    "UpscalerCache",
    "UpscalerModel",
    "display_name",
    "find_upscaler",
    "load_upscaler",
    "upscale_image",
    "upscale_with_model",
    "upscaler_choices",
    "upscaler_label",
]

DEFAULT_TILE = 512
"""Source pixels per tile side."""
DEFAULT_OVERLAP = 32
"""Source pixels neighbouring tiles share (blended across, so no seam shows)."""
MAX_PASSES = 3
"""The most times a model is run on its own output (as A1111)."""


class Cancellable(Protocol):
    """What can stop an upscale between tiles: a :class:`~sdstudio.engine.progress.CancelToken`
    or the step reporter of a generation."""

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~sdstudio.engine.errors.GenerationCancelled` if cancelled."""


def upscale_image(
    image: Image.Image,
    upscaler: str | Path,
    scale: float = 2.0,
    *,
    size: tuple[int, int] | None = None,
    folders: Iterable[Path] = (),
    device: str = "cpu",
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    on_progress: Callable[[int, int], None] | None = None,
    cancel: Cancellable | None = None,
    cache: UpscalerCache | None = None,
) -> Image.Image:
    """``image`` upscaled by ``scale`` (to ``round(width * scale)`` x
    ``round(height * scale)``), or to exactly ``size`` when given.

    ``upscaler``: ``Lanczos``, ``Nearest`` or ``None`` (a Lanczos resize), any case; or
    an upscaler file: a path, a file name or stem found in ``folders`` (and their
    sub-folders), or one of A1111's names for the files it downloads (``R-ESRGAN 4x+``
    is ``RealESRGAN_x4plus``; see :data:`A1111_UPSCALERS`).

    A model runs on ``device`` (``cpu``, ``cuda``, ``mps``; float32, or half precision
    on CUDA where the architecture takes it) in tiles of ``tile`` source pixels (0: the
    whole image at once) that overlap by ``overlap`` pixels and are blended without
    seams. ``on_progress(done, total)`` is called after each tile, counted over all
    passes; ``cancel`` is checked before each tile. ``cache`` keeps the model loaded
    for the next call (a batch loads it once).

    Returns an RGB image (RGBA when the image has transparency: its alpha channel is
    resized with Lanczos). Raises :class:`~sdstudio.engine.errors.ModelError` for an
    upscaler that cannot be found or used, :class:`InvalidRequest` for a bad size or
    tile, :class:`OutOfMemory` when a tile does not fit the device, and
    :class:`~sdstudio.engine.errors.GenerationCancelled` when cancelled.
    """
    target = _target(image, scale, size)
    if tile < 0 or overlap < 0:
        raise InvalidRequest("The upscale tile and overlap cannot be negative.")
    resize = resize_upscaler(str(upscaler))
    if resize is not None:
        if cancel is not None:
            cancel.raise_if_cancelled()
        resample = Image.Resampling.NEAREST if resize == "Nearest" else Image.Resampling.LANCZOS
        mode = "RGBA" if _has_alpha(image) else "RGB"
        return image.convert(mode).resize(target, resample)
    path = find_upscaler(upscaler, folders, built_in=RESIZES.values())
    model = cache.get(path, device) if cache is not None else load_upscaler(path, device)
    return upscale_with_model(
        model,
        image,
        target,
        device=device,
        tile=tile,
        overlap=overlap,
        on_progress=on_progress,
        cancel=cancel,
    )


def upscaler_label(
    upscaler: str | Path, folders: Iterable[Path] = (), cache: UpscalerCache | None = None
) -> tuple[str, str]:
    """The name an upscaler is recorded under and its file's short hash (A1111's 10 hex
    digits of SHA-256; empty for a built-in resize): ``("4x-UltraSharp", "…")``."""
    resize = resize_upscaler(str(upscaler))
    if resize is not None:
        return resize, ""
    path = find_upscaler(upscaler, folders, built_in=RESIZES.values())
    file_hash = (cache or UpscalerCache()).short_hash(path)
    return path.stem, file_hash


def passes(width: int, height: int, target: tuple[int, int], scale: int) -> list[tuple[int, int]]:
    """The sizes a model of ``scale`` is run on to reach ``target``: as A1111, while the
    image is smaller, at most :data:`MAX_PASSES` times (none when it is large enough
    already); a 1x (restoration) model runs once."""
    sizes: list[tuple[int, int]] = []
    while len(sizes) < MAX_PASSES:
        if scale <= 1 and sizes:
            break
        if scale > 1 and width >= target[0] and height >= target[1]:
            break
        sizes.append((width, height))
        width, height = width * scale, height * scale
    return sizes


def _target(image: Image.Image, scale: float, size: tuple[int, int] | None) -> tuple[int, int]:
    if size is not None:
        width, height = size
        if width < 1 or height < 1:
            raise InvalidRequest(f"Cannot upscale to {width}x{height} pixels.")
        return int(width), int(height)
    if not scale > 0:
        raise InvalidRequest(f"The upscale factor must be positive, not {scale}.")
    return max(1, round(image.width * scale)), max(1, round(image.height * scale))


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


def upscale_with_model(
    model: UpscalerModel,
    image: Image.Image,
    size: tuple[int, int],
    *,
    device: str = "cpu",
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    on_progress: Callable[[int, int], None] | None = None,
    cancel: Cancellable | None = None,
) -> Image.Image:
    """``image`` upscaled to ``size`` by a loaded upscaler (on ``device``, where it was
    loaded): run in passes and tiles, then resized with Lanczos; as
    :func:`upscale_image`, which finds and loads the model first."""
    import torch

    descriptor = model.descriptor
    requirements = descriptor.size_requirements
    sizes = passes(image.width, image.height, size, model.scale)
    tile = tile if model.tiles else 0
    align = _alignment(descriptor)
    layouts: list[TileLayout] = [
        plan_tiles(w, h, tile, overlap, minimum=requirements.minimum, align=align) for w, h in sizes
    ]
    total = sum(layout.count for layout in layouts)
    done = 0

    def before_tile() -> None:
        if cancel is not None:
            cancel.raise_if_cancelled()

    def after_tile() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, total)

    alpha = image.convert("RGBA").getchannel("A") if _has_alpha(image) else None
    pixels = _model_pixels(image, int(descriptor.input_channels))
    run = _tile_runner(model, device, tile)
    with torch.inference_mode():
        for layout in layouts:
            pixels = run_tiled(
                pixels, layout, model.scale, run, before_tile=before_tile, after_tile=after_tile
            )
    result = _from_pixels(pixels)
    if result.size != size:
        result = result.resize(size, Image.Resampling.LANCZOS)
    if alpha is not None and result.mode == "RGB":
        result.putalpha(alpha.resize(size, Image.Resampling.LANCZOS))
    return result


def _alignment(descriptor: Any) -> int:
    """The pixel grid tiles start on: the size multiple the architecture needs (pixel
    unshuffling), and the attention window of window-attention models (SwinIR, HAT),
    so that each tile's windows are the whole image's."""
    multiple = int(descriptor.size_requirements.multiple_of)
    window = getattr(descriptor.model, "window_size", None)
    if isinstance(window, int) and 1 < window <= 64:
        return math.lcm(multiple, window)
    return multiple


def _model_pixels(image: Image.Image, channels: int) -> np.ndarray:
    """The image as (h, w, c) uint8 in the model's channels (grey, RGB or RGBA)."""
    mode = {1: "L", 4: "RGBA"}.get(channels, "RGB")
    pixels = np.array(image.convert(mode), dtype=np.uint8)  # a copy torch may share
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _from_pixels(pixels: np.ndarray) -> Image.Image:
    channels = pixels.shape[2]
    if channels == 1:
        return Image.fromarray(pixels[..., 0], "L").convert("RGB")
    if channels == 4:
        return Image.fromarray(pixels, "RGBA")
    return Image.fromarray(np.ascontiguousarray(pixels[..., :3]), "RGB")


def _tile_runner(model: UpscalerModel, device: str, tile: int) -> Callable[[np.ndarray], Any]:
    """Runs the model on one (h, w, c) uint8 tile; (h*s, w*s, c) float32 in [0, 1] out.

    Running out of device memory raises :class:`OutOfMemory` with what to change."""
    import torch

    descriptor = model.descriptor
    dtype = descriptor.dtype

    def run(tile_pixels: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(tile_pixels)).permute(2, 0, 1)[None]
        tensor = tensor.to(device=device, dtype=dtype).div_(255.0)
        try:
            output = descriptor(tensor)
        except SdStudioError:
            raise
        except torch.OutOfMemoryError:
            raise _out_of_memory(model, device, tile, tile_pixels.shape) from None
        except RuntimeError as error:
            if "out of memory" in str(error).lower():
                raise _out_of_memory(model, device, tile, tile_pixels.shape) from None
            raise
        values: np.ndarray = output[0].permute(1, 2, 0).float().cpu().numpy()
        return values

    return run


def _out_of_memory(
    model: UpscalerModel, device: str, tile: int, shape: tuple[int, ...]
) -> OutOfMemory:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    piece = f"a {shape[1]}x{shape[0]} tile" if tile else f"the whole {shape[1]}x{shape[0]} image"
    advice = f"choose a smaller tile than {tile}" if tile else "choose a tile size such as 256"
    return OutOfMemory(
        f"The {device.upper()} device ran out of memory upscaling {piece} with "
        f"{model.name}; {advice}."
    )


def upscaler_choices(folders: Iterable[Path]) -> list[str]:
    """The names of the upscaler files in ``folders`` (their stems), sorted, for a
    front end to offer after the built-in upscalers."""
    from sdstudio.engine.network_files import list_files

    return sorted({path.stem for path in list_files(folders, UPSCALER_SUFFIXES).values()})
