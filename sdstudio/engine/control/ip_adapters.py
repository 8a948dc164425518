"""Running a request's image prompts (IP-Adapters) on the model's UNet.

:class:`ImagePromptStage` refuses, before any model loads, image prompts that cannot
guide the request (an adapter of another family than the model, a flow model other
than Flux.1, passes that would run without them: the detailer, the refiner, SD
upscale), finds each adapter's file and its CLIP vision encoder, then loads the adapters
into the UNet that every pipeline of the model shares (diffusers' ``_load_ip_adapter_weights``: the
cross-attention processors get the adapters' keys and values, ``encoder_hid_proj`` their
image projections; several prompts are several adapters) and hands out the pass that runs
them (:attr:`ImagePromptStage.active`, see :mod:`~sdstudio.engine.control.ip_adapter_pass`).
Flux.1's adapters (XLabs') go into its transformer instead
(:mod:`~sdstudio.engine.control.flux_ip_adapter`).

The UNet's own attention processors and ``encoder_hid_proj`` are kept and put back
exactly when a request has no image prompts, when other adapters are wanted, or when
the model unloads. The adapters' weights and the encoders stay loaded while they are used,
as ControlNets do.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.engine.control import flux_ip_adapter
from sdstudio.engine.control.clip_vision_files import (
    ClipVisionFile,
    EncoderCache,
    choose_encoder,
)
from sdstudio.engine.control.flux_ip_adapter import FluxImagePrompts
from sdstudio.engine.control.ip_adapter_files import (
    IPAdapterFile,
    find_ip_adapter,
    inspect_ip_adapter,
    load_state_dict,
    split_state_dict,
)
from sdstudio.engine.errors import InvalidRequest, ModelError, OutOfMemory
from sdstudio.engine.fileio import file_key
from sdstudio.engine.request import GenerationRequest, InpaintArea, Mode

if TYPE_CHECKING:
    from sdstudio.engine.control.flux_ip_adapter import FluxImagePromptPass
    from sdstudio.engine.control.ip_adapter_pass import ImagePromptPass
    from sdstudio.engine.inputs import Inputs
    from sdstudio.engine.pipelines import PipelineManager

_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "flux1": "Flux.1"}
SUPPORTED = "IP-Adapters guide SD 1.x, SDXL and Flux.1 models"


def check_image_prompts(request: GenerationRequest) -> None:
    """Refuse image prompts with passes they cannot guide (cheap, no files)."""
    if not request.ip_adapters:
        return
    for name, what in (("detailer", "the detailer"), ("refiner", "the refiner"),
                       ("upscale", "SD upscale")):  # fmt: skip
        if getattr(request, name) is not None:
            raise InvalidRequest(
                f"Image prompts (IP-Adapters) cannot guide {what} yet; turn {what} off or "
                "remove the image prompts."
            )
    masked = request.mode is Mode.INPAINT and request.inpaint_area is InpaintArea.MASKED
    if masked and any(prompt.mask for prompt in request.ip_adapters):
        raise InvalidRequest(
            'An image prompt\'s mask cannot be used when inpainting "only masked"; inpaint '
            "the whole picture or remove the image prompt's mask."
        )


_HELD = "_sdstudio_image_prompts"
"""The attribute of a UNet holding adapters that keeps what it held before (a
:class:`_Loaded`): any engine sharing the UNet can put it back."""


@dataclass(slots=True)
class _Loaded:
    """What the UNet held before the adapters were loaded, to put it back."""

    key: tuple[Any, ...]
    processors: dict[str, Any]
    projection: Any
    projection_type: Any
    hook: Any = None
    """The UNet's forward pre-hook that sets the weights per step."""


class ImagePromptStage:
    """The image prompts of the request running, loaded into the model's UNet."""

    def __init__(self, pipelines: PipelineManager) -> None:
        self._pipelines = pipelines
        self.folders: Callable[[], Iterable[Path]] | None = None
        """The folders where an IP-Adapter named by file name is looked for."""
        self.encoder_folders: Callable[[], Iterable[Path]] | None = None
        """The folders where CLIP vision encoders are looked for."""
        self.active: ImagePromptPass | FluxImagePromptPass | None = None
        """The pass of the request running (``None``: no image prompts)."""
        self._flux = FluxImagePrompts(pipelines)
        """Flux.1's adapters, in the transformer (see :mod:`.flux_ip_adapter`)."""
        self._states: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
        self._encoders = EncoderCache()
        self._unet: weakref.ref[Any] | None = None
        """The UNet the adapters were last loaded into."""
        pipelines.add_unload_listener(self.unload)

    def unload(self) -> None:
        """Take the adapters out of the UNet and free them and the encoders."""
        self.active = None
        self._restore()
        self._flux.unload()
        self._states.clear()
        self._encoders.clear()

    def check(self, request: GenerationRequest) -> list[tuple[IPAdapterFile, ClipVisionFile]]:
        """Refuse, before anything loads, image prompts that cannot guide ``request``; each
        prompt's IP-Adapter and encoder."""
        check_image_prompts(request)
        if not request.ip_adapters:
            return []
        family, label = self._model_family(request)
        if family is not None and family not in _LABELS:
            raise InvalidRequest(
                f"{SUPPORTED}; {label} models cannot use them. Remove the image prompts or "
                "choose such a model."
            )
        folders = list(self.folders()) if self.folders is not None else []
        encoder_folders = list(self.encoder_folders()) if self.encoder_folders else []
        found = []
        for number, prompt in enumerate(request.ip_adapters, 1):
            file = inspect_ip_adapter(find_ip_adapter(prompt.model, folders))
            if family is not None and file.family not in (family, "unknown"):
                raise InvalidRequest(
                    f"Image prompt {number}: {file.name} is {_a(file.label)} IP-Adapter on "
                    f"{_a(_LABELS[family])} model; choose an IP-Adapter made for "
                    f"{_LABELS[family]}."
                )
            if family == flux_ip_adapter.FAMILY and file.family != family:
                raise InvalidRequest(flux_ip_adapter.not_flux(number, file))
            found.append((file, choose_encoder(file, prompt.encoder, encoder_folders)))
        if family == flux_ip_adapter.FAMILY or any(
            file.family == flux_ip_adapter.FAMILY for file, _ in found
        ):
            flux_ip_adapter.check_prompts(request)
        return found

    def prepare(
        self, inputs: Inputs, pipe: Any, on_status: Callable[[str], None] | None = None
    ) -> ImagePromptPass | FluxImagePromptPass | None:
        """Load the request's adapters into ``pipe``'s UNet (a Flux.1 model's transformer),
        make the embeddings of their reference images and make their pass :attr:`active`
        (none: restore the UNet or transformer)."""
        from sdstudio.engine.control.ip_adapter_pass import ImagePromptPass

        self.active = None
        request = inputs.request
        if not request.ip_adapters:
            self._restore(getattr(pipe, "unet", None))
            self._flux.unload()
            self._states.clear()
            self._encoders.clear()
            return None
        found = self.check(request)
        model = self._pipelines.model
        assert model is not None
        if model.family.id == flux_ip_adapter.FAMILY and hasattr(pipe, "transformer"):
            self._restore()
            hashes = [self._short_hash(file) for file, _ in found]
            self.active = self._flux.prepare(request, pipe, found, hashes, on_status)
            return self.active
        self._flux.unload()
        unet = getattr(pipe, "unet", None)
        if model.family.flow or unet is None:
            raise InvalidRequest(f"{SUPPORTED}; {model.family.label} models cannot use them.")
        for file, _ in found:
            if file.cross_dim != unet.config.get("cross_attention_dim"):
                raise InvalidRequest(
                    f"The IP-Adapter {file.name} does not fit the model (another family or "
                    "size); choose an IP-Adapter made for this model's family."
                )
        files = [file for file, _ in found]
        encoders = [encoder for _, encoder in found]
        self._load_into(unet, files, on_status)
        embeds = self._embeds(request, found, on_status)
        processors = [p for p in unet.attn_processors.values() if hasattr(p, "to_k_ip")]
        hashes = [self._short_hash(file) for file in files]
        loaded = ImagePromptPass(request.ip_adapters, files, encoders, hashes, embeds, processors)
        held: _Loaded = getattr(unet, _HELD)
        if held.hook is not None:
            held.hook.remove()
        held.hook = unet.register_forward_pre_hook(loaded.before_unet)
        self.active = loaded
        return loaded

    def _load_into(
        self, unet: Any, files: list[IPAdapterFile], on_status: Callable[[str], None] | None
    ) -> None:
        """Load ``files`` into ``unet`` (kept when it holds them already)."""
        device = self._pipelines.device
        key = (*(file_key(file.weights()) for file in files), str(device.dtype))
        held = getattr(unet, _HELD, None)
        if held is not None and held.key == key:
            return
        self._restore(unet)
        states = []
        for file in files:
            state_key = file_key(file.weights())
            if state_key not in self._states:
                if on_status:
                    on_status(f"Loading the IP-Adapter {file.name}…")
                tensors = load_state_dict(file.weights())
                state = split_state_dict(tensors)
                self._states[state_key] = {
                    part: {k: v.to(dtype=device.dtype) for k, v in values.items()}
                    for part, values in state.items()
                }
            states.append(self._states[state_key])
        wanted = {file_key(file.weights()) for file in files}
        self._states = {k: v for k, v in self._states.items() if k in wanted}
        saved = dict(unet.attn_processors)
        projection = unet.encoder_hid_proj
        projection_type = unet.config.encoder_hid_dim_type
        try:
            with _quiet("diffusers.models.modeling_utils"):  # its casting notice, on every load
                unet._load_ip_adapter_weights(states, low_cpu_mem_usage=False)
        except Exception as error:
            _put_back(unet, saved, projection, projection_type)
            names = ", ".join(file.name for file in files)
            raise ModelError(f"The IP-Adapter {names} could not be loaded: {error}") from None
        setattr(unet, _HELD, _Loaded(key, saved, projection, projection_type))
        self._unet = weakref.ref(unet)

    def _embeds(
        self,
        request: GenerationRequest,
        found: list[tuple[IPAdapterFile, ClipVisionFile]],
        on_status: Callable[[str], None] | None,
    ) -> list[tuple[Any, Any]]:
        import torch

        from sdstudio.engine.control.ip_adapter_pass import image_embeds
        from sdstudio.engine.images import open_image

        device = self._pipelines.device
        encoders = [encoder_file for _, encoder_file in found]
        self._encoders.keep_only(encoders, dtype=device.dtype, device=device.device)
        embeds = []
        for prompt, (file, encoder_file) in zip(request.ip_adapters, found, strict=True):
            encoder = self._encoders.load(
                encoder_file, dtype=device.dtype, device=device.device, on_status=on_status
            )
            images = [open_image(path, what="reference image") for path in prompt.images]
            try:
                embeds.append(image_embeds(encoder, images, file.hidden_states))
            except torch.OutOfMemoryError:
                raise OutOfMemory(
                    "Out of memory while reading the image prompt's reference images."
                ) from None
        return embeds

    def _restore(self, unet: Any = None) -> None:
        """Put back the own attention processors and projection of ``unet`` (default: the
        UNet the adapters were last loaded into)."""
        if unet is None and self._unet is not None:
            unet = self._unet()
        held = getattr(unet, _HELD, None) if unet is not None else None
        if held is None:
            return
        if held.hook is not None:
            held.hook.remove()
        _put_back(unet, held.processors, held.projection, held.projection_type)
        delattr(unet, _HELD)

    def _model_family(self, request: GenerationRequest) -> tuple[str | None, str]:
        """The model's family id and label from its header or config (``None`` where they
        cannot tell)."""
        from sdstudio.engine.models.families import Family, detect_family

        try:
            found = detect_family(self._pipelines.find_model(request.model))
        except (ModelError, InvalidRequest, OSError, ValueError):
            return None, ""
        if found.family is Family.UNKNOWN:
            return None, ""
        if found.family is Family.SDXL_REFINER:
            return "sdxl", "SDXL"
        return str(found.family), str(found.label)

    def _short_hash(self, file: IPAdapterFile) -> str:
        """The first 8 hex digits of the file's SHA-256; empty for a folder."""
        if file.folder:
            return ""
        return self._pipelines.hash_cache.sha256(file.path)[:8]


def _a(label: str) -> str:
    """``label`` with its article ("an SDXL", "a Flux.1")."""
    return f"a {label}" if label.startswith("Flux") else f"an {label}"


def _put_back(unet: Any, processors: dict[str, Any], projection: Any, kind: Any) -> None:
    """The projection first: a Resampler's own attention layers are among the UNet's
    processors while it is in place."""
    unet.encoder_hid_proj = projection
    unet.config.encoder_hid_dim_type = kind
    unet.set_attn_processor(processors)


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Log only errors of the logger ``name`` meanwhile."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
