"""One generation's image prompts running: their image embeddings, masks and weights per
step, and what the record says about each.

The reference images (and masks) are stored in the inputs folder before the model loads
(:func:`store_image_prompts`), so the request in the record names the stored copies and
a re-run reads the same pixels. The embeddings are made here with the CLIP vision
encoder, once per generation, and handed to the pipeline as ``ip_adapter_image_embeds``
(so no pipeline needs an ``image_encoder`` component), as diffusers makes them: a plain
adapter reads the projected image embeds (the unguided half: zeros), the others the
penultimate hidden states (the unguided half: those of an all-zero image). Several
reference images of one prompt are read together (their tokens side by side); with a
mask, each image's attention is added inside the mask (diffusers' masked IP attention).

Start and end are applied per step, as diffusers applies a ControlNet's: step *i* of
*n* is guided when ``i / n >= start`` and ``(i + 1) / n <= end``. The scales are set
before each UNet evaluation by a forward pre-hook on the UNet, which counts the
evaluations of the pipeline call it was armed for (:meth:`ImagePromptPass.arguments`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from sdstudio.engine.images import open_image, open_mask, store_input
from sdstudio.engine.request import GenerationRequest

if TYPE_CHECKING:
    from sdstudio.engine.control.clip_vision_files import ClipVisionFile
    from sdstudio.engine.control.image_prompts import ImagePrompt
    from sdstudio.engine.control.ip_adapter_files import IPAdapterFile


def store_image_prompts(request: GenerationRequest, inputs_dir: Path) -> GenerationRequest:
    """``request`` with each image prompt's reference images and mask replaced by stored
    copies. Raises :class:`ImageInputError` for an unusable file."""
    if not request.ip_adapters:
        return request
    prompts = []
    for number, prompt in enumerate(request.ip_adapters, 1):
        images = tuple(
            str(store_input(open_image(path, what=f"reference image of image prompt {number}"),
                            inputs_dir))
            for path in prompt.images
        )  # fmt: skip
        mask = ""
        if prompt.mask:
            mask_image = open_mask(prompt.mask, (1, 1))[1]
            mask = str(store_input(open_mask(prompt.mask, mask_image)[0], inputs_dir))
        prompts.append(replace(prompt, images=images, mask=mask))
    return request.replace(ip_adapters=tuple(prompts))


def active_at(prompt: ImagePrompt, step: int, steps: int) -> bool:
    """Whether ``prompt`` guides step ``step`` of ``steps`` (diffusers' ControlNet rule)."""
    if steps <= 0:
        return True
    return step / steps >= prompt.start and (step + 1) / steps <= prompt.end


def image_embeds(encoder: Any, images: list[Image.Image], hidden_states: bool) -> tuple[Any, Any]:
    """The (guided, unguided) encoder outputs for ``images``: ``[n, width]`` image embeds
    and zeros, or ``[n, tokens, width]`` penultimate hidden states of the images and of
    an all-zero image."""
    import torch
    from transformers import CLIPImageProcessor

    size = int(encoder.config.image_size)
    processor = CLIPImageProcessor(size=size, crop_size=size)
    parameter = next(encoder.parameters())
    pixels = processor(images, return_tensors="pt").pixel_values
    pixels = pixels.to(device=parameter.device, dtype=parameter.dtype)
    with torch.no_grad():
        if hidden_states:
            guided = encoder(pixels, output_hidden_states=True).hidden_states[-2]
            zeros = torch.zeros_like(pixels)
            unguided = encoder(zeros, output_hidden_states=True).hidden_states[-2]
            return guided, unguided
        embeds = encoder(pixels).image_embeds
        return embeds, torch.zeros_like(embeds)


@dataclass(slots=True)
class ImagePromptPass:
    """The image prompts of a request, loaded into the model's UNet."""

    prompts: tuple[ImagePrompt, ...]
    files: list[IPAdapterFile]
    encoders: list[ClipVisionFile]
    hashes: list[str]
    embeds: list[tuple[Any, Any]]
    """Per prompt: the guided and unguided encoder outputs of its reference images."""
    processors: list[Any]
    """The UNet's IP-Adapter attention processors, whose scales are set per step."""
    masks: dict[tuple[int, int], list[Any]] = field(default_factory=dict)
    _pipe: Any = None
    _calls: int = 0

    def arguments(self, pipe: Any, kwargs: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
        """The arguments that add the image prompts to one call of ``pipe`` (its other
        arguments ``kwargs`` tell whether it guides), at ``size``; arms the per-step
        weights for that call."""
        import torch

        unet = pipe.unet
        guided = float(kwargs.get("guidance_scale", 7.5)) > 1.0
        guided = guided and unet.config.get("time_cond_proj_dim") is None
        parameter = next(unet.parameters())
        embeds = []
        for positive, negative in self.embeds:
            both = torch.stack([negative, positive]) if guided else positive[None]
            embeds.append(both.to(device=parameter.device, dtype=parameter.dtype))
        self._pipe, self._calls = pipe, 0
        self.set_scales(0, 0)
        arguments: dict[str, Any] = {"ip_adapter_image_embeds": embeds}
        if any(prompt.mask for prompt in self.prompts):
            extra = dict(kwargs.get("cross_attention_kwargs") or {})
            extra["ip_adapter_masks"] = self._masks(size)
            arguments["cross_attention_kwargs"] = extra
        return arguments

    def before_unet(self, _module: Any, _args: Any) -> None:
        """The UNet's forward pre-hook: this evaluation's weights."""
        if self._pipe is None:
            return
        steps = int(getattr(self._pipe, "_num_timesteps", 0) or 0)
        self.set_scales(self._calls, steps)
        self._calls += 1

    def set_scales(self, step: int, steps: int) -> None:
        """Each prompt's weight at ``step`` of ``steps`` (0 outside its start and end)."""
        scales = [
            prompt.weight if active_at(prompt, step, steps) else 0.0 for prompt in self.prompts
        ]
        for processor in self.processors:
            processor.scale = list(scales)

    def record(self) -> list[dict[str, str]]:
        """Each prompt's IP-Adapter (name, short hash, kind) and the encoder it read."""
        return [
            {
                "name": file.name,
                "hash": short,
                "encoder": file.encoder or encoder.label,
                "kind": file.kind,
            }
            for file, encoder, short in zip(self.files, self.encoders, self.hashes, strict=True)
        ]

    def _masks(self, size: tuple[int, int]) -> list[Any]:
        if size not in self.masks:
            from diffusers.image_processor import IPAdapterMaskProcessor

            processor = IPAdapterMaskProcessor()
            width, height = size
            masks: list[Any] = []
            for prompt, (positive, _) in zip(self.prompts, self.embeds, strict=True):
                if not prompt.mask:
                    masks.append(None)
                    continue
                image = open_mask(prompt.mask, size)[0]
                tensor = processor.preprocess([image], height=height, width=width)
                masks.append(tensor.reshape(1, 1, height, width).repeat(1, len(positive), 1, 1))
            self.masks[size] = masks
        return self.masks[size]
