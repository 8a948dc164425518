"""The arguments each mode gives a pipeline: the size, the image it starts from, the
mask and the strength."""

from __future__ import annotations

from typing import Any

from PIL import Image

from sdstudio.engine.inpaint import latent_arguments
from sdstudio.engine.inputs import Inputs
from sdstudio.engine.request import Mode


def mode_arguments(pipe: Any, inputs: Inputs, *, inpainting: bool, seed: int) -> dict[str, Any]:
    """The arguments of ``inputs.request``'s mode for ``pipe``.

    An ``inpainting`` model (9-channel UNet, Flux.1 Fill) takes every job as inpainting;
    outside inpainting the whole picture is repainted. Masked content from latent noise
    or zeros adds the latents it starts from (drawn from ``seed``).
    """
    request = inputs.request
    size = (request.width, request.height)
    sized = {"width": request.width, "height": request.height}
    if inpainting:
        image = inputs.image or Image.new("RGB", size, (127, 127, 127))
        mask = inputs.mask or Image.new("L", size, 255)
        strength = 1.0 if request.mode is Mode.TXT2IMG else request.strength
        arguments = {"image": image, "mask_image": mask, "strength": strength, **sized}
    elif request.mode is Mode.TXT2IMG:
        return sized
    elif request.mode is Mode.IMG2IMG:
        arguments = {"image": inputs.image, "strength": request.strength}
        if takes_size(pipe):  # the transformer families' img2img pipelines do
            arguments.update(sized)
        return arguments
    else:
        arguments = {
            "image": inputs.image,
            "mask_image": inputs.mask,
            "strength": request.strength,
            **sized,
        }
    if request.mode is Mode.INPAINT and request.masked_content.in_latent_space:
        assert inputs.image is not None and inputs.mask is not None
        arguments.update(
            latent_arguments(pipe, inputs.image, inputs.mask, request.masked_content, seed)
        )
    return arguments


_TAKES_SIZE: dict[type, bool] = {}


def takes_size(pipe: Any) -> bool:
    """Whether a pipeline's call takes ``width`` and ``height`` (read once per class)."""
    import inspect

    kind = type(pipe)
    if kind not in _TAKES_SIZE:
        _TAKES_SIZE[kind] = "width" in inspect.signature(kind.__call__).parameters
    return _TAKES_SIZE[kind]
