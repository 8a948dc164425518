"""The images a generation starts from, read, fitted and kept for re-runs.

Image-to-image fits the init image to the requested size by the request's resize
mode (SD upscale keeps it whole: the request's size is that of its tiles).
Inpainting fits the mask the same way, blurs it, and either repaints the
whole picture or (``inpaint_area="masked"``) cuts out the masked area with some
padding, repaints it at the requested size and pastes it back into the source at
the source's own size. What is stored for a re-run is the image the request's
settings apply to unchanged: the fitted picture, or the whole source when only the
masked area is repainted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from sdstudio.engine.control.control_pass import store_control_images
from sdstudio.engine.control.ip_adapter_pass import store_image_prompts
from sdstudio.engine.image_fit import fit_image
from sdstudio.engine.images import open_image, open_mask, store_input
from sdstudio.engine.inpaint import Box, blur_mask, crop_region, fill_masked, paste_back
from sdstudio.engine.request import GenerationRequest, InpaintArea, MaskedContent, Mode


@dataclass(frozen=True, slots=True)
class Inputs:
    """What the pipeline is given, and what its result is pasted back into."""

    request: GenerationRequest
    """The request, naming the stored copies of its init image and mask."""
    image: Image.Image | None = None
    """The picture the pipeline starts from, at the requested size."""
    mask: Image.Image | None = None
    """The blurred mask the pipeline takes, at the requested size."""
    source: Image.Image | None = None
    """Inpainting: the picture the result is pasted into."""
    overlay: Image.Image | None = None
    """Inpainting: the blurred mask at the size of :attr:`source`."""
    box: Box | None = None
    """"Only masked": the region of :attr:`source` that was repainted."""

    def finish(self, result: Image.Image) -> Image.Image:
        """The pipeline's result as the image to keep: for inpainting, pasted back into
        the source, so every pixel outside the blurred mask is the source's."""
        if self.source is None or self.overlay is None:
            return result
        return paste_back(self.source, result, self.overlay, self.box)


def prepare_inputs(
    request: GenerationRequest,
    inputs_dir: Path,
    on_status: Callable[[str], None] | None = None,
) -> Inputs:
    """Read the request's init image and mask, fit them and store copies for re-runs.

    Raises :class:`~sdstudio.engine.errors.ImageInputError` for a file that cannot be used.
    """
    request = store_control_images(request, inputs_dir)
    request = store_image_prompts(request, inputs_dir)
    if request.mode is Mode.TXT2IMG:
        return Inputs(request)
    assert request.init_image is not None
    size = (request.width, request.height)
    original = open_image(request.init_image, what="init image")
    if request.mode is Mode.IMG2IMG and request.upscale is not None:
        # SD upscale: the source is upscaled whole, then repainted in tiles of ``size``.
        stored = request.replace(init_image=str(store_input(original, inputs_dir)))
        return Inputs(stored, original)
    if request.mode is Mode.IMG2IMG:
        image = fit_image(original, size, request.resize_mode)
        stored = request.replace(init_image=str(store_input(image, inputs_dir)))
        return Inputs(stored, image)
    assert request.mask is not None
    mask, mask_size = open_mask(request.mask, original.size)
    if mask_size != original.size and on_status:
        on_status(
            f"The mask ({mask_size[0]}x{mask_size[1]}) was resized to match the "
            f"init image ({original.width}x{original.height})."
        )
    if request.inpaint_area is InpaintArea.MASKED:
        source = original
    else:
        source = fit_image(original, size, request.resize_mode)
        mask = fit_image(mask, size, request.resize_mode, resample=Image.Resampling.NEAREST)
    stored = request.replace(
        init_image=str(store_input(source, inputs_dir)),
        mask=str(store_input(mask, inputs_dir)),
    )
    overlay = blur_mask(mask, request.mask_blur)
    box = None
    image, work_mask = source, overlay
    if request.inpaint_area is InpaintArea.MASKED:
        box = crop_region(overlay, request.masked_padding, size)
        image = source.crop(box).resize(size, Image.Resampling.LANCZOS)
        work_mask = overlay.crop(box).resize(size, Image.Resampling.BILINEAR)
        if on_status and box != (0, 0, *source.size):
            on_status(
                f"Repainting the masked area ({box[2] - box[0]}x{box[3] - box[1]} at "
                f"{box[0]},{box[1]}) at {size[0]}x{size[1]}."
            )
    if request.masked_content is MaskedContent.FILL:
        image = fill_masked(image, work_mask)
    return Inputs(stored, image, work_mask, source, overlay, box)
