"""Image prompts (IP-Adapters) on Flux.1: XLabs' ``flux-ip-adapter`` in the transformer.

diffusers runs such an adapter in the transformer (``_load_ip_adapter_weights``: its
``FluxIPAdapterAttnProcessor`` in the double blocks, ``encoder_hid_proj`` the image
projections; several adapters side by side) and takes the embeddings as
``ip_adapter_image_embeds``, with ``negative_ip_adapter_image_embeds`` for real CFG (the
files: :mod:`~sdstudio.engine.control.flux_ip_adapter_files`).

Here the embeddings are made from the CLIP vision encoder (several reference images of
one prompt: their tokens side by side; the unguided side reads an all-black image, as
diffusers' Flux pipelines do) and the weights are set per step by a forward pre-hook on
the transformer, which counts the distinct timesteps it sees (with real CFG the
transformer runs twice a step). The processor has no masked attention: masks are refused,
as are pipelines that take no image prompts (Flux.1 Fill's). The transformer's own
processors are kept and put back exactly (it has no ``encoder_hid_proj`` of its own: the
attribute is removed again).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdstudio.engine.control.clip_vision_files import EncoderCache
from sdstudio.engine.control.flux_ip_adapter_files import FAMILY, diffusers_parts
from sdstudio.engine.control.ip_adapter_pass import active_at
from sdstudio.engine.errors import InvalidRequest, ModelError, OutOfMemory, first_line
from sdstudio.engine.fileio import file_key
from sdstudio.engine.request import GenerationRequest

if TYPE_CHECKING:
    from PIL import Image

    from sdstudio.engine.control.clip_vision_files import ClipVisionFile
    from sdstudio.engine.control.image_prompts import ImagePrompt
    from sdstudio.engine.control.ip_adapter_files import IPAdapterFile
    from sdstudio.engine.pipelines import PipelineManager

_HELD = "_sdstudio_image_prompts"
"""The attribute of a transformer holding adapters (a :class:`_Held`), as the UNet's."""
_ARGUMENTS = ("ip_adapter_image_embeds", "negative_ip_adapter_image_embeds")


def check_prompts(request: GenerationRequest) -> None:
    """Refuse what Flux.1's IP-Adapter attention cannot do (cheap, no files)."""
    for number, prompt in enumerate(request.ip_adapters, 1):
        if prompt.mask:
            raise InvalidRequest(
                f"Image prompt {number}: Flux.1 IP-Adapters take no mask (their attention has "
                "no masked form); remove the image prompt's mask."
            )


def not_flux(number: int, file: IPAdapterFile) -> str:
    """The refusal of an SD adapter (of a known family or not) on a Flux.1 model."""
    made = f"for {file.label}" if file.family != "unknown" else "for another model family"
    return (
        f"Image prompt {number}: {file.name} is an IP-Adapter {made}, not for Flux.1; choose "
        "a Flux.1 IP-Adapter (XLabs' flux-ip-adapter)."
    )


def takes_image_prompts(pipe: Any) -> bool:
    """Whether a Flux pipeline takes image prompts as embeddings (not Fill's, not the
    Control LoRA pipelines')."""
    try:
        parameters = inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):
        return False
    return all(name in parameters for name in _ARGUMENTS)


def refuse_pipeline(pipe: Any) -> None:
    """Raise :class:`InvalidRequest` when ``pipe`` cannot take image prompts."""
    if takes_image_prompts(pipe):
        return
    name = type(pipe).__name__
    if "Fill" in name:
        what, remedy = "Flux.1 Fill models", "use another Flux.1 model"
    elif "ControlNet" in name:
        what, remedy = (
            "Flux.1 with ControlNet units in image to image or inpainting",
            ("use text to image or remove the control units"),
        )
    else:
        what, remedy = f"this Flux.1 pipeline ({name})", "use text to image"
    raise InvalidRequest(
        f"Image prompts (IP-Adapters) cannot guide {what} ({name} takes none); {remedy}, or "
        "remove the image prompts."
    )


@dataclass(slots=True)
class _Held:
    """What a transformer held before the adapters were loaded, to put it back."""

    key: tuple[Any, ...]
    processors: dict[str, Any]
    projection: tuple[bool, Any]
    """Whether it had an ``encoder_hid_proj``, and which."""
    projection_type: tuple[bool, Any]
    """Whether its config had ``encoder_hid_dim_type``, and which."""
    hook: Any = None

    def put_back(self, transformer: Any) -> None:
        """The projection first, then the processors; attributes it lacked removed."""
        if self.hook is not None:
            self.hook.remove()
            self.hook = None
        had, projection = self.projection
        if had:
            transformer.encoder_hid_proj = projection
        elif hasattr(transformer, "encoder_hid_proj"):
            delattr(transformer, "encoder_hid_proj")
        had, kind = self.projection_type
        if had:
            transformer.config.encoder_hid_dim_type = kind
        elif hasattr(transformer.config, "encoder_hid_dim_type"):
            delattr(transformer.config, "encoder_hid_dim_type")
        transformer.set_attn_processor(self.processors)


class FluxImagePrompts:
    """The Flux.1 IP-Adapters of the request running, loaded into the transformer."""

    def __init__(self, pipelines: PipelineManager) -> None:
        self._pipelines = pipelines
        self._states: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
        self._encoders = EncoderCache()
        self._transformer: weakref.ref[Any] | None = None

    def unload(self) -> None:
        """Take the adapters out of the transformer and free them and the encoders."""
        self.restore()
        self._states.clear()
        self._encoders.clear()

    def restore(self, transformer: Any = None) -> None:
        """Put back the transformer's own processors (default: the one last loaded into)."""
        if transformer is None and self._transformer is not None:
            transformer = self._transformer()
        held = getattr(transformer, _HELD, None) if transformer is not None else None
        if held is None:
            return
        held.put_back(transformer)
        delattr(transformer, _HELD)

    def prepare(
        self,
        request: GenerationRequest,
        pipe: Any,
        found: list[tuple[IPAdapterFile, ClipVisionFile]],
        hashes: list[str],
        on_status: Callable[[str], None] | None,
    ) -> FluxImagePromptPass:
        """Load ``found`` into ``pipe``'s transformer, make the embeddings and arm the
        per-step weights."""
        transformer = pipe.transformer
        for number, (file, _) in enumerate(found, 1):
            if file.family != FAMILY:
                raise InvalidRequest(not_flux(number, file))
        refuse_pipeline(pipe)
        check_prompts(request)
        files = [file for file, _ in found]
        self._load_into(transformer, files, on_status)
        embeds = self._embeds(request, found, on_status)
        processors = [p for p in transformer.attn_processors.values() if hasattr(p, "to_k_ip")]
        loaded = FluxImagePromptPass(
            request.ip_adapters, files, [e for _, e in found], hashes, embeds, processors
        )
        held: _Held = getattr(transformer, _HELD)
        if held.hook is not None:
            held.hook.remove()
        held.hook = transformer.register_forward_pre_hook(
            loaded.before_transformer, with_kwargs=True
        )
        return loaded

    def _load_into(
        self, transformer: Any, files: list[IPAdapterFile], on_status: Callable[[str], None] | None
    ) -> None:
        from sdstudio.engine.control.ip_adapter_files import load_state_dict

        dtype = self._pipelines.device.dtype
        key = (*(file_key(file.weights()) for file in files), str(dtype))
        held = getattr(transformer, _HELD, None)
        if held is not None and held.key == key:
            return
        self.restore(transformer)
        config = transformer.config
        inner = int(config.num_attention_heads) * int(config.attention_head_dim)
        states = []
        for file in files:
            state_key = file_key(file.weights())
            if state_key not in self._states:
                if on_status:
                    on_status(f"Loading the IP-Adapter {file.name}…")
                parts = diffusers_parts(load_state_dict(file.weights()))
                self._states[state_key] = {
                    part: {k: v.to(dtype=dtype) for k, v in values.items()}
                    for part, values in parts.items()
                }
            state = self._states[state_key]
            _check_fit(file, state, int(config.joint_attention_dim), inner, int(config.num_layers))
            states.append(state)
        wanted = {file_key(file.weights()) for file in files}
        self._states = {k: v for k, v in self._states.items() if k in wanted}
        saved = dict(transformer.attn_processors)
        projection = (hasattr(transformer, "encoder_hid_proj"),
                      getattr(transformer, "encoder_hid_proj", None))  # fmt: skip
        projection_type = (hasattr(config, "encoder_hid_dim_type"),
                           getattr(config, "encoder_hid_dim_type", None))  # fmt: skip
        held = _Held(key, saved, projection, projection_type)
        try:
            transformer._load_ip_adapter_weights(states, low_cpu_mem_usage=False)
            device = next(transformer.parameters()).device
            transformer.encoder_hid_proj.to(device=device, dtype=dtype)
            for processor in transformer.attn_processors.values():
                if hasattr(processor, "to_k_ip"):
                    processor.to(device=device, dtype=dtype)
        except Exception as error:
            held.put_back(transformer)
            names = ", ".join(file.name for file in files)
            raise ModelError(
                f"The IP-Adapter {names} could not be loaded: {first_line(error)}"
            ) from None
        setattr(transformer, _HELD, held)
        self._transformer = weakref.ref(transformer)

    def _embeds(
        self,
        request: GenerationRequest,
        found: list[tuple[IPAdapterFile, ClipVisionFile]],
        on_status: Callable[[str], None] | None,
    ) -> list[tuple[Any, Any]]:
        import torch

        from sdstudio.engine.images import open_image

        device = self._pipelines.device
        encoders = [encoder_file for _, encoder_file in found]
        self._encoders.keep_only(encoders, dtype=device.dtype, device=device.device)
        embeds = []
        for prompt, (_, encoder_file) in zip(request.ip_adapters, found, strict=True):
            encoder = self._encoders.load(
                encoder_file, dtype=device.dtype, device=device.device, on_status=on_status
            )
            images = [open_image(path, what="reference image") for path in prompt.images]
            try:
                embeds.append(image_embeds(encoder, images))
            except torch.OutOfMemoryError:
                raise OutOfMemory(
                    "Out of memory while reading the image prompt's reference images."
                ) from None
        return embeds


def image_embeds(encoder: Any, images: list[Image.Image]) -> tuple[Any, Any]:
    """The projected image embeds ``[n, width]`` of ``images`` and ``[1, width]`` of an
    all-black image (what diffusers' Flux pipelines read for the unguided side)."""
    import torch
    from PIL import Image
    from transformers import CLIPImageProcessor

    size = int(encoder.config.image_size)
    processor = CLIPImageProcessor(size=size, crop_size=size)
    parameter = next(encoder.parameters())
    black = Image.new("RGB", (size, size))
    pixels = processor([*images, black], return_tensors="pt").pixel_values
    pixels = pixels.to(device=parameter.device, dtype=parameter.dtype)
    with torch.no_grad():
        embeds = encoder(pixels).image_embeds
    return embeds[:-1], embeds[-1:]


@dataclass(slots=True)
class FluxImagePromptPass:
    """The image prompts of a request, loaded into a Flux.1 transformer."""

    prompts: tuple[ImagePrompt, ...]
    files: list[IPAdapterFile]
    encoders: list[ClipVisionFile]
    hashes: list[str]
    embeds: list[tuple[Any, Any]]
    """Per prompt: the image embeds of its reference images and of a black image."""
    processors: list[Any]
    """The double blocks' IP-Adapter processors, whose scales are set per step."""
    _pipe: Any = None
    _step: int = -1
    _timestep: float | None = None

    def arguments(self, pipe: Any, kwargs: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
        """The arguments that add the image prompts to one call of ``pipe``; arms the
        per-step weights for that call (``kwargs`` and ``size`` are not needed: the
        negative side is always given, and there are no masks)."""
        del kwargs, size
        refuse_pipeline(pipe)
        # The projection's own device and precision (a transformer kept in fp8 computes
        # in the device's precision, as the adapters were loaded).
        parameter = next(pipe.transformer.encoder_hid_proj.parameters())
        positive, negative = [], []
        for guided, unguided in self.embeds:
            positive.append(guided[None].to(device=parameter.device, dtype=parameter.dtype))
            negative.append(unguided[None].to(device=parameter.device, dtype=parameter.dtype))
        self._pipe, self._step, self._timestep = pipe, -1, None
        self.set_scales(0, 0)
        return {"ip_adapter_image_embeds": positive, "negative_ip_adapter_image_embeds": negative}

    def before_transformer(self, _module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        """The transformer's forward pre-hook: the weights of this evaluation's step (a
        new timestep is a new step)."""
        if self._pipe is None:
            return
        timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        value = float(timestep.flatten()[0]) if timestep is not None else None
        if value is None or value != self._timestep:
            self._step += 1
            self._timestep = value
        steps = int(getattr(self._pipe, "_num_timesteps", 0) or 0)
        self.set_scales(self._step, steps)

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


def _check_fit(
    file: IPAdapterFile, state: dict[str, dict[str, Any]], context: int, inner: int, blocks: int
) -> None:
    """Refuse an adapter made for another size of Flux transformer."""
    keys = state["ip_adapter"]
    numbers = {int(k.split(".")[0]) for k in keys if k.split(".")[0].isdigit()}
    shape = tuple(keys["0.to_k_ip.weight"].shape) if "0.to_k_ip.weight" in keys else ()
    complete = all(
        f"{n}.{part}.{what}" in keys
        for n in range(blocks)
        for part in ("to_k_ip", "to_v_ip")
        for what in ("weight", "bias")
    )
    if numbers != set(range(blocks)) or shape != (inner, context) or not complete:
        raise InvalidRequest(
            f"The IP-Adapter {file.name} does not fit this Flux.1 transformer (made for "
            f"another size: {len(numbers)} double blocks of {shape}, the model has {blocks} of "
            f"{(inner, context)}); choose an IP-Adapter made for Flux.1."
        )
