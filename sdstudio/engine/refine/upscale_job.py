"""Upscaling an image with an upscaler alone (the ``upscale`` mode; A1111's Extras tab).

No diffusion model is loaded. The result is recorded like a generated image: its
request names the stored copy of the source (so a re-run upscales the same pixels
again), the upscaler and scale, and the result's size; its record's ``source`` extra
says where the image came from (the file's name, its size, and the A1111
``parameters`` it carried, which the upscaled image keeps, as A1111's Extras does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

import sdstudio
from sdstudio.engine.errors import ImageInputError, InvalidRequest
from sdstudio.engine.images import open_image, store_input
from sdstudio.engine.metadata.record import ImageRecord
from sdstudio.engine.progress import CancelToken, Progress
from sdstudio.engine.refine.upscale_settings import MAX_UPSCALED_SIZE
from sdstudio.engine.request import GenerationRequest, Mode

MAX_UPSCALED_PIXELS = 16384 * 8192
"""The most pixels an upscaled image may have (384 MiB as 8-bit RGB)."""
SOURCE_PARAMETERS_LIMIT = 64 * 1024
"""The longest source ``parameters`` text kept with the upscaled image."""


@dataclass(frozen=True, slots=True)
class UpscaleContext:
    """What an upscale job needs from the engine."""

    inputs_dir: Path
    upscaler_dirs: Callable[[], Iterable[Path]] | None
    device: str
    cache: Any
    """The engine's upscaler cache (the last upscaler model loaded stays loaded)."""


def upscaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The size of a ``width`` x ``height`` image upscaled by ``scale``."""
    return max(1, round(width * scale)), max(1, round(height * scale))


def check_upscaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The upscaled size, or :class:`InvalidRequest` when it is too large."""
    out_w, out_h = upscaled_size(width, height, scale)
    if max(out_w, out_h) > MAX_UPSCALED_SIZE or out_w * out_h > MAX_UPSCALED_PIXELS:
        raise InvalidRequest(
            f"Upscaling {width}x{height} by {scale:g} makes {out_w}x{out_h} pixels, more "
            f"than sdstudio writes (at most {MAX_UPSCALED_SIZE} pixels a side and "
            f"{MAX_UPSCALED_PIXELS // 1_000_000} megapixels); choose a smaller scale."
        )
    return out_w, out_h


def run_upscale(
    request: GenerationRequest,
    context: UpscaleContext,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    on_status: Callable[[str], None] | None = None,
    cancel: CancelToken | None = None,
) -> tuple[Image.Image, ImageRecord]:
    """Upscale the request's source image; the result and the record that re-creates it.

    Raises :class:`ImageInputError` for an unusable source, :class:`InvalidRequest` for a
    result that is too large, ``ModelError`` for an upscaler that cannot be used, and
    ``GenerationCancelled`` when cancelled (between tiles).
    """
    from sdstudio.engine.refine.upscaler_files import find_upscaler, resize_upscaler
    from sdstudio.engine.refine.upscalers import upscale_image, upscaler_label

    assert request.mode is Mode.UPSCALE and request.upscale is not None
    assert request.init_image is not None
    cancel = cancel or CancelToken()
    started = time.perf_counter()
    settings = request.upscale
    source = open_image(request.init_image, what="image to upscale")
    width, height = check_upscaled_size(source.width, source.height, settings.scale)
    stored = request.replace(
        init_image=str(store_input(source, context.inputs_dir)),
        width=width,
        height=height,
        batch_size=1,
    )
    if on_status:
        on_status(
            f"Upscaling {source.width}x{source.height} to {width}x{height} "
            f"with {settings.upscaler}…"
        )

    def tile_done(done: int, total: int) -> None:
        if on_progress is not None:
            on_progress(Progress(done, total, 0, 1, None))

    folders = list(context.upscaler_dirs()) if context.upscaler_dirs else []
    # An upscaler file is looked for once (the folders are walked for it).
    upscaler: str | Path = settings.upscaler
    if resize_upscaler(settings.upscaler) is None:
        upscaler = find_upscaler(settings.upscaler, folders)
    image = upscale_image(
        source,
        upscaler,
        settings.scale,
        folders=folders,
        device=context.device,
        tile=settings.tile,
        on_progress=tile_done,
        cancel=cancel,
        cache=context.cache,
    )
    if image.size != (width, height):  # the upscaler rounds otherwise: keep the record true
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    name, file_hash = upscaler_label(upscaler, folders, context.cache)
    record = ImageRecord(
        request=stored,
        model_name=name,
        model_hash=file_hash,
        device=context.device,
        duration_s=time.perf_counter() - started,
        created=datetime.now().astimezone().isoformat(timespec="milliseconds"),
        app_version=sdstudio.__version__,
        extra={"source": source_description(request.init_image, source)},
    )
    return image, record


def source_description(path: str, image: Image.Image) -> dict[str, Any]:
    """Where an upscaled image came from: the file's name, its size, and its A1111
    ``parameters`` (empty when it had none or they could not be read)."""
    from sdstudio.engine.metadata.a1111 import PARAMETERS_KEY
    from sdstudio.engine.metadata.files import read_texts

    try:
        parameters = read_texts(path, {PARAMETERS_KEY}).texts.get(PARAMETERS_KEY, "")
    except ImageInputError:
        parameters = ""
    if len(parameters) > SOURCE_PARAMETERS_LIMIT:
        parameters = ""
    return {
        "name": Path(path).name,
        "width": image.width,
        "height": image.height,
        "parameters": parameters,
    }
