"""Tiny VAE previews and draft decodes.

With the tiny VAE of the model's family present (see :mod:`~sdstudio.engine.tiny_vae_files`),
each step's preview is the tiny VAE's decode of the step's latents: a picture that looks
like the final one, where the linear projection of :mod:`~sdstudio.engine.previews` gives
a coloured sketch at 1/8 of the size. A request's ``draft_decode`` has it decode the
final image too.

The tiny decoders take the latents as the pipelines hold them (scaled by the VAE's
scaling factor, shifted by its shift factor: the space the model denoises in), as
ComfyUI feeds them to its previewer; a draft decode undoes the pipeline's unscaling.

Cost: a full-size tiny decode of a 512 x 512 SD 1.5 image costs more than 2 % of a CPU
step, so previews are decoded from latents averaged down to at most
:data:`PREVIEW_LATENT_SIDE` a side (a 256-pixel preview from 512-pixel latents), and a
time budget (:data:`PREVIEW_BUDGET` of the generation's time so far) skips the decode of
a step when it would go over; a skipped step has no new preview (the last one stays).
Decoding draws no random numbers and never touches the pipeline's latents, so previews
never change the final image.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.tiny_vae_files import (
    TinyVaeFile,
    find_for_family,
    kind_for_family,
    load_tiny_vae,
)

log = logging.getLogger(__name__)

PREVIEW_MODES = ("auto", "tiny", "linear")
"""``auto``: the tiny VAE where one is present, else the linear projection; ``tiny``: the
same, with a notice when none is present; ``linear``: always the linear projection."""
PREVIEW_BUDGET = 0.02
"""The share of a generation's time that tiny-VAE previews may take."""
PREVIEW_LATENT_SIDE = 32
"""The longest side of the latents a preview is decoded from (x8 pixels)."""

Preview = Callable[[Any, int, int], Image.Image | None]


class TinyVaes:
    """Finds the tiny VAE of the model's family in the tiny-VAE folders and keeps the last
    one loaded; makes the previews and the draft decodes of a generation."""

    def __init__(self, folders: Callable[[], Iterable[Path]] | None = None) -> None:
        """``folders`` gives the folders searched (models folders, ``vae_approx`` folders)."""
        self.folders = folders
        self.mode = "auto"
        """One of :data:`PREVIEW_MODES`."""
        self.budget: float | None = PREVIEW_BUDGET
        """The preview time budget (None: every step is decoded)."""
        self.latent_side: int | None = PREVIEW_LATENT_SIDE
        """Previews are decoded from latents at most this long a side (None: as they are)."""
        self.notices: list[str] = []
        self._loaded: tuple[tuple[Any, ...], Any] | None = None

    def find(self, family: str) -> TinyVaeFile | None:
        """The tiny VAE of ``family`` (a family id) in the folders, or None."""
        if self.folders is None:
            return None
        return find_for_family(family, self.folders())

    def load(self, found: TinyVaeFile, dtype: Any, device: Any) -> Any:
        """``found`` as an ``AutoencoderTiny`` in ``dtype`` on ``device`` (the last one
        loaded is kept)."""
        try:
            stamp = found.path.stat().st_mtime_ns
        except OSError:
            stamp = 0
        key = (str(found.path), stamp, str(dtype), str(device))
        if self._loaded is None or self._loaded[0] != key:
            self._loaded = None
            self._loaded = (key, load_tiny_vae(found, dtype, device))
        return self._loaded[1]

    def preview(
        self, family: Any, pipe: Any, on_status: Callable[[str], None] | None = None
    ) -> Preview | None:
        """The preview of one image's steps: the tiny VAE's when the mode and the folders
        allow, else the family's linear one."""
        linear: Preview | None = family.preview
        if self.mode == "linear":
            return linear
        found = self.find(family.id)
        if found is None:
            if self.mode == "tiny" and on_status is not None:
                on_status(_missing(family) + " Previews are the fast approximation.")
            return linear
        dtype, device = _precision(pipe)
        try:
            vae = self.load(found, dtype, device)
        except ModelError as error:  # a broken file must not stop the generation
            log.warning("Tiny VAE previews are off: %s", error)
            if on_status is not None:
                on_status(f"{error} Previews are the fast approximation.")
            return linear
        return TinyPreview(vae, linear, self.budget, self.latent_side)

    def check_draft(self, request: Any, family: Any) -> TinyVaeFile | None:
        """The tiny VAE a draft decode of ``request`` uses (None when none is asked);
        raises :class:`InvalidRequest` when the family has none here."""
        if not getattr(request, "draft_decode", False):
            return None
        found = self.find(family.id)
        if found is None:
            raise InvalidRequest(_missing(family) + " Turn draft decode off, or add one.")
        return found

    @contextlib.contextmanager
    def drafting(self, found: TinyVaeFile | None, pipes: Iterable[Any]) -> Iterator[None]:
        """While open, every decode by the VAEs of ``pipes`` is the tiny VAE's (nothing
        changes when ``found`` is None)."""
        if found is None:
            yield
            return
        vaes = list(
            {id(v): v for p in pipes if (v := getattr(p, "vae", None)) is not None}.values()
        )
        patched = []
        try:
            for vae in vaes:
                dtype, device = _precision(None, vae)
                tiny = self.load(found, dtype, device)
                before = vae.__dict__.get("decode")
                vae.decode = _draft_decoder(vae, tiny, uses_mean=found.kind.name == "taesdxl")
                patched.append((vae, before))
            yield
        finally:
            for vae, before in patched:
                if before is None:
                    del vae.decode
                else:
                    vae.decode = before


def draft_label(found: TinyVaeFile) -> str:
    """The name written in the image's ``Draft decode`` entry (``TAESD``, ``TAEF1``…)."""
    return found.kind.label


class TinyPreview:
    """The tiny-VAE preview of one image's steps, within a time budget."""

    def __init__(
        self, vae: Any, fallback: Preview | None, budget: float | None, side: int | None
    ) -> None:
        self.vae = vae
        self.fallback = fallback
        self.budget = budget
        self.side = side
        self.started = time.perf_counter()
        self.spent = 0.0
        self.last = 0.0
        self.decoded = 0
        """How many previews the tiny VAE drew (a hook for tests and benchmarks)."""

    def __call__(self, latents: Any, width: int, height: int) -> Image.Image | None:
        now = time.perf_counter()
        if self.budget is not None and self.spent + self.last > self.budget * (now - self.started):
            return None
        sample = _spatial(latents, width, height, self.vae.config.latent_channels)
        if sample is None:
            return self.fallback(latents, width, height) if self.fallback else None
        image = decode_preview(self.vae, sample, self.side)
        self.last = time.perf_counter() - now
        self.spent += self.last
        self.decoded += 1
        return image


def decode_preview(vae: Any, latents: Any, side: int | None = None) -> Image.Image:
    """Image 0 of (batch, channels, h, w) latents decoded by ``vae``, from latents averaged
    down to at most ``side`` a side."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        sample = latents[:1].detach().to(device=vae.device, dtype=vae.dtype)
        longest = max(sample.shape[-2:])
        if side is not None and longest > side:
            factor = -(-longest // side)
            sample = F.avg_pool2d(sample, factor, ceil_mode=True)
        pixels = vae.decode(sample, return_dict=False)[0][0]
        pixels = ((pixels.float() + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8)
        array = pixels.permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


def _spatial(latents: Any, width: int, height: int, channels: int) -> Any | None:
    """The latents as (batch, channels, h, w): Flux's packed 2x2 patches unpacked."""
    from sdstudio.engine.previews import unpack_patches

    if latents.ndim == 3:
        latents = unpack_patches(latents, width, height)
    if latents is None or latents.ndim != 4 or latents.shape[1] != channels:
        return None
    return latents


def _precision(pipe: Any, module: Any = None) -> tuple[Any, Any]:
    """The dtype and device a tiny VAE runs in: the model's (its denoiser's, or
    ``module``'s); half precision on a CPU runs in float32 (slow and unsupported there)."""
    import torch

    if module is None:
        module = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        module = module if module is not None else getattr(pipe, "vae", None)
    dtype = getattr(module, "dtype", torch.float32)
    device = getattr(module, "device", torch.device("cpu"))
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.float32
    return dtype, device


def _draft_decoder(vae: Any, tiny: Any, *, uses_mean: bool) -> Callable[..., Any]:
    """A stand-in for ``vae.decode`` that decodes with ``tiny``. The pipelines pass it the
    latents unscaled for the full VAE; they are scaled back first."""
    import torch
    from diffusers.models.autoencoders.vae import DecoderOutput

    config = vae.config
    scale = float(getattr(config, "scaling_factor", 1.0) or 1.0)
    shift = float(getattr(config, "shift_factor", 0.0) or 0.0)
    mean = getattr(config, "latents_mean", None) if uses_mean else None
    std = getattr(config, "latents_std", None) if uses_mean else None

    def decode(z: Any, return_dict: bool = True, generator: Any = None, **_: Any) -> Any:
        with torch.no_grad():
            if mean is not None and std is not None:
                shape = (1, len(mean), 1, 1)
                m = torch.tensor(mean, dtype=z.dtype, device=z.device).view(shape)
                s = torch.tensor(std, dtype=z.dtype, device=z.device).view(shape)
                scaled = (z - m) * scale / s
            else:
                scaled = (z - shift) * scale
            image = tiny.decode(scaled.to(device=tiny.device, dtype=tiny.dtype), return_dict=False)[
                0
            ]
            image = image.to(device=z.device, dtype=z.dtype)
        return DecoderOutput(sample=image) if return_dict else (image,)

    return decode


def _missing(family: Any) -> str:
    kind = kind_for_family(family.id)
    if kind is None:
        return f"{family.label} models have no tiny VAE."
    return (
        f"No tiny VAE for {family.label} was found ({kind.name}: the model manager downloads "
        f"{kind.repo}, or put {kind.name}_decoder.safetensors in a vae_approx folder)."
    )
