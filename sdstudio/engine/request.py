"""The one type that defines a generation.

A :class:`GenerationRequest` holds everything needed to reproduce an image.
Metadata, history and re-runs all read and write this type, so nothing can be
forgotten on the way. Its JSON form is lossless: ``from_json(r.to_json()) == r``.

Building a request checks every setting. The prompts' length is checked
apart, by :meth:`GenerationRequest.check_prompts`, which every generation
calls: a record with a prompt over the limit still reads (to be shown and
edited) but does not run.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import random
from dataclasses import dataclass
from typing import Any

from sdstudio.engine.control.image_prompts import ImagePrompt
from sdstudio.engine.control.units import ControlUnit
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.prompts import check_prompt_length
from sdstudio.engine.refine.detailer_settings import Detailer
from sdstudio.engine.refine.hires_settings import HiresFix
from sdstudio.engine.refine.refiner_settings import Refiner
from sdstudio.engine.refine.upscale_settings import Upscale
from sdstudio.engine.request_checks import shown as _shown
from sdstudio.engine.request_checks import validate
from sdstudio.engine.speed.fast_mode import FastMode

REQUEST_SCHEMA_VERSION = 1
MAX_SEED = 2**64 - 1
"""The largest seed: a CPU ``torch.Generator`` takes any 64-bit seed, as ComfyUI
(and Fooocus) images carry them."""
MAX_RANDOM_SEED = 2**32 - 1
"""Random seeds are drawn up to here, as A1111 does, so they stay short to type."""
RANDOM_SEED = -1
MIN_SIZE = 64
MAX_SIZE = 4096
MAX_STEPS = 500
MAX_BATCH = 64
MAX_CLIP_SKIP = 12
MAX_MASK_BLUR = 64
MAX_MASKED_PADDING = 512
MAX_DISTILLED_GUIDANCE = 30.0
MAX_TEXT_ENCODERS = 4


class Mode(enum.StrEnum):
    """What a generation starts from."""

    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"
    UPSCALE = "upscale"
    """Only upscale the source image (no model; A1111's Extras tab)."""


class ResizeMode(enum.StrEnum):
    """How a source image of another shape is fitted to the requested size (A1111's
    "Resize mode")."""

    RESIZE = "resize"
    """Stretch it to the size ("Just resize")."""
    CROP = "crop"
    """Scale it to cover the size and cut off what sticks out ("Crop and resize")."""
    FILL = "fill"
    """Scale it to fit inside and fill the rest with its stretched edges ("Resize and fill")."""


class InpaintArea(enum.StrEnum):
    """What inpainting repaints at the requested size (A1111's "Inpaint area")."""

    WHOLE = "whole"
    """The whole picture, fitted to the size."""
    MASKED = "masked"
    """Only the masked area with some padding around it, cut out, repainted at the
    requested size and pasted back into the source at its own size ("Only masked")."""


class MaskedContent(enum.StrEnum):
    """What the masked area starts from (A1111's "Masked content")."""

    ORIGINAL = "original"
    FILL = "fill"
    """The colours around the mask, spread over it."""
    LATENT_NOISE = "latent-noise"
    LATENT_NOTHING = "latent-nothing"
    """Zeros in latent space."""

    @property
    def in_latent_space(self) -> bool:
        """Whether the masked area starts from latents (noise or zeros), not pixels."""
        return self in (MaskedContent.LATENT_NOISE, MaskedContent.LATENT_NOTHING)


_ENUMS: dict[str, type[enum.StrEnum]] = {
    "mode": Mode,
    "resize_mode": ResizeMode,
    "inpaint_area": InpaintArea,
    "masked_content": MaskedContent,
}

_PARTS: dict[str, Any] = {
    "hires": HiresFix,
    "refiner": Refiner,
    "detailer": Detailer,
    "upscale": Upscale,
    "fast": FastMode,
}
"""The optional parts of a request, each a frozen settings type with a JSON form."""


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """Everything needed to reproduce a generation.

    ``init_image`` and ``mask`` are paths to image files; in the mask, white
    marks what is repainted. ``seed`` -1 asks for a random seed; the seed
    actually used is recorded with every image.
    """

    model: str
    prompt: str
    negative_prompt: str = ""
    mode: Mode = Mode.TXT2IMG
    sampler: str = "DPM++ 2M"
    schedule: str = "Karras"
    steps: int = 20
    guidance_scale: float = 7.0
    seed: int = RANDOM_SEED
    width: int = 512
    height: int = 512
    batch_size: int = 1
    init_image: str | None = None
    mask: str | None = None
    strength: float = 0.75
    clip_skip: int = 1
    """A1111's "Clip skip": 1 uses the text encoder's last layer, 2 the one before it."""
    vae: str = ""
    """A VAE file (or diffusers VAE folder) to use instead of the model's own: a path,
    or a file name found in the VAE folders. Empty: the model's own VAE."""
    resize_mode: ResizeMode = ResizeMode.RESIZE
    """How the init image (and mask) are fitted to width x height.

    This and the inpainting settings below are kept in every request (a text-to-image
    request read from an image may be used with a source later) and used only in the
    modes they belong to; images record them only there."""
    mask_blur: int = 4
    """Gaussian blur of the mask in pixels: the width of the seam where the repainted
    area blends into the source."""
    inpaint_area: InpaintArea = InpaintArea.WHOLE
    masked_padding: int = 32
    """With :attr:`InpaintArea.MASKED`: pixels of context around the mask."""
    masked_content: MaskedContent = MaskedContent.ORIGINAL
    distilled_guidance: float = 3.5
    """Forge's "Distilled CFG Scale": the guidance a model such as Flux.1 dev takes as an
    embedding. Used only by such models; ``guidance_scale`` stays real CFG (1 = off)."""
    text_encoders: tuple[str, ...] = ()
    """For a model kept as a transformer file alone (ComfyUI's ``diffusion_models``):
    its text encoder files, paths or file names found in the text-encoder folders.
    Empty: the fitting files are found there (and recorded with each image)."""
    hires: HiresFix | None = None
    """A second pass at a larger size (A1111's hires fix); None: one pass."""
    refiner: Refiner | None = None
    """A second model that finishes the denoising (the SDXL refiner); None: none."""
    detailer: Detailer | None = None
    """Faces (or what the detector finds) repainted at full resolution; None: none."""
    upscale: Upscale | None = None
    """The source upscaled first: the whole job in the ``upscale`` mode; with
    image-to-image, A1111's SD upscale (then repainted in tiles of the request's size)."""
    control: tuple[ControlUnit, ...] = ()
    """ControlNets guiding the denoising, each with its control image (none: unguided)."""
    ip_adapters: tuple[ImagePrompt, ...] = ()
    """IP-Adapters guiding the denoising with reference images (none: the prompt alone)."""
    variation_seed: int = 0
    """A1111's "Variation seed": a second noise mixed into the seed's (image i of a
    batch uses ``variation_seed + i``). Used only with a ``variation_strength`` above 0."""
    variation_strength: float = 0.0
    """A1111's "Variation seed strength": 0 is the seed's noise alone, 1 the variation
    seed's alone; between them the two are mixed by spherical interpolation."""
    seed_resize_from: tuple[int, int] = (0, 0)
    """A1111's "Seed resize from" (width, height): the noise is drawn at this size and
    placed in the middle of the requested size, so a seed keeps its picture at another
    size. (0, 0): off."""
    styles: tuple[str, ...] = ()
    """The names of the styles applied to the prompts (A1111's "Styles array"). Their
    text is already in ``prompt`` and ``negative_prompt``: the names are a record of
    where it came from and are never applied again."""
    fast: FastMode | None = None
    """An opt-in fast mode (a step cache or token merging, see
    :mod:`sdstudio.engine.speed`); None: the full computation."""
    draft_decode: bool = False
    """Decode the final image with the family's tiny VAE (TAESD and its kin) instead of
    the full VAE: many times faster on a CPU, a little softer. Refused when no tiny VAE
    of the model's family is found."""

    def __post_init__(self) -> None:
        for name, kind in _ENUMS.items():
            value = getattr(self, name)
            if isinstance(value, str) and not isinstance(value, kind):
                try:
                    object.__setattr__(self, name, kind(value))
                except ValueError:
                    valid = ", ".join(m.value for m in kind)
                    label = name.replace("_", " ").capitalize()
                    raise InvalidRequest(
                        f"{label} {_shown(value)} is unknown; valid: {valid}."
                    ) from None
        for name in ("text_encoders", "styles", "seed_resize_from"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if isinstance(self.control, list | tuple):
            units = tuple(
                ControlUnit.from_dict(u) if isinstance(u, dict) else u for u in self.control
            )
            object.__setattr__(self, "control", units)
        if isinstance(self.ip_adapters, list | tuple):
            prompts = tuple(
                ImagePrompt.from_dict(p) if isinstance(p, dict) else p for p in self.ip_adapters
            )
            object.__setattr__(self, "ip_adapters", prompts)
        for name, kind in _PARTS.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, kind.from_dict(value))
            elif value is not None and not isinstance(value, kind):
                raise InvalidRequest(f"{name} must be {name} settings or nothing.")
        validate(self)
        object.__setattr__(self, "guidance_scale", float(self.guidance_scale))
        object.__setattr__(self, "strength", float(self.strength))
        object.__setattr__(self, "distilled_guidance", float(self.distilled_guidance))
        object.__setattr__(self, "variation_strength", float(self.variation_strength))

    def check_prompts(self) -> None:
        """Raise :class:`InvalidRequest`, naming the limit, when the prompt or the
        negative prompt is too long to generate from (see
        :func:`~sdstudio.engine.prompts.check_prompt_length`)."""
        check_prompt_length(self.prompt, "prompt")
        check_prompt_length(self.negative_prompt, "negative prompt")

    def replace(self, **changes: Any) -> GenerationRequest:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def with_seed_resolved(self, rng: random.Random | None = None) -> GenerationRequest:
        """Return this request with a random seed drawn if the seed is -1."""
        if self.seed != RANDOM_SEED:
            return self
        return self.replace(seed=(rng or random.SystemRandom()).randint(0, MAX_RANDOM_SEED))

    def seeds(self) -> list[int]:
        """The seed of each image of the batch: s, s+1, ... (wrapping at 2**64)."""
        if self.seed == RANDOM_SEED:
            raise InvalidRequest("The seed must be resolved before the batch seeds are known.")
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.batch_size)]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with a schema version."""
        data = dataclasses.asdict(self)
        for name in _ENUMS:
            data[name] = getattr(self, name).value
        data["text_encoders"] = list(self.text_encoders)
        data["styles"] = list(self.styles)
        data["seed_resize_from"] = list(self.seed_resize_from)
        for name in _PARTS:
            part = getattr(self, name)
            data[name] = part.to_dict() if part is not None else None
        data["control"] = [unit.to_dict() for unit in self.control]
        data["ip_adapters"] = [prompt.to_dict() for prompt in self.ip_adapters]
        return {"schema": REQUEST_SCHEMA_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        """Rebuild a request from :meth:`to_dict` output.

        Unknown keys are ignored so that records written by newer versions
        still load; a schema newer than this version knows is refused.
        """
        if not isinstance(data, dict):
            raise InvalidRequest("A generation request must be a JSON object.")
        schema = data.get("schema", REQUEST_SCHEMA_VERSION)
        if not isinstance(schema, int) or schema > REQUEST_SCHEMA_VERSION:
            raise InvalidRequest(
                f"This request was written by a newer sdstudio (schema {_shown(schema)}); "
                "please update."
            )
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        if "mode" in values:
            try:
                values["mode"] = Mode(values["mode"])
            except (ValueError, TypeError):
                valid = ", ".join(m.value for m in Mode)
                raise InvalidRequest(
                    f"Unknown mode {_shown(values['mode'])}; valid modes: {valid}."
                ) from None
        for name in ("resize_mode", "inpaint_area", "masked_content"):
            if name in values and not isinstance(values[name], str):
                raise InvalidRequest(f"{name} must be text, not {_shown(values[name])}.")
        try:
            return cls(**values)
        except TypeError as error:
            raise InvalidRequest(f"Incomplete generation request: {error}.") from None

    def to_json(self) -> str:
        """The lossless JSON form."""
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GenerationRequest:
        """Parse :meth:`to_json` output."""
        try:
            data = json.loads(text)
        except RecursionError:
            raise InvalidRequest("Not a valid generation request: it nests too deeply.") from None
        except (json.JSONDecodeError, TypeError) as error:
            raise InvalidRequest(f"Not a valid generation request: {error}.") from None
        except ValueError:  # Python reads no integer of over 4300 digits
            raise InvalidRequest(
                "Not a valid generation request: a number in it has too many digits."
            ) from None
        return cls.from_dict(data)


def differences(a: GenerationRequest, b: GenerationRequest) -> list[tuple[str, Any, Any]]:
    """The settings that differ between two requests: (field name, value in a, value in b)."""
    return [
        (f.name.replace("_", " "), getattr(a, f.name), getattr(b, f.name))
        for f in dataclasses.fields(GenerationRequest)
        if getattr(a, f.name) != getattr(b, f.name)
    ]


def round_to_multiple_of_8(value: int) -> int:
    """The nearest multiple of 8, at least :data:`MIN_SIZE`."""
    return max(MIN_SIZE, (value + 4) // 8 * 8)
