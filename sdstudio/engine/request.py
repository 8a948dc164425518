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

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.hires_settings import HiresFix
from sdstudio.engine.prompts import check_prompt_length

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
        if isinstance(self.text_encoders, list):
            object.__setattr__(self, "text_encoders", tuple(self.text_encoders))
        if isinstance(self.hires, dict):
            object.__setattr__(self, "hires", HiresFix.from_dict(self.hires))
        if self.hires is not None and not isinstance(self.hires, HiresFix):
            raise InvalidRequest("hires must be hires fix settings or nothing.")
        _validate(self)
        object.__setattr__(self, "guidance_scale", float(self.guidance_scale))
        object.__setattr__(self, "strength", float(self.strength))
        object.__setattr__(self, "distilled_guidance", float(self.distilled_guidance))

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
        data["hires"] = self.hires.to_dict() if self.hires is not None else None
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


def _validate(r: GenerationRequest) -> None:
    def check(ok: bool, message: str) -> None:
        if not ok:
            raise InvalidRequest(message)

    for name in ("model", "prompt", "negative_prompt", "sampler", "schedule", "vae"):
        check(isinstance(getattr(r, name), str), f"{name} must be text.")
    for name in ("init_image", "mask"):
        value = getattr(r, name)
        check(value is None or isinstance(value, str), f"{name} must be a path or nothing.")
    check(isinstance(r.mode, Mode), f"Unknown mode {_shown(r.mode)}.")
    check(bool(r.model.strip()), "No model was given.")
    check(
        isinstance(r.text_encoders, tuple)
        and all(isinstance(name, str) and name.strip() for name in r.text_encoders),
        "text_encoders must be a list of file names or paths.",
    )
    check(
        len(r.text_encoders) <= MAX_TEXT_ENCODERS,
        f"A model takes at most {MAX_TEXT_ENCODERS} text encoders, not {len(r.text_encoders)}.",
    )
    for name in (
        "steps",
        "seed",
        "width",
        "height",
        "batch_size",
        "clip_skip",
        "mask_blur",
        "masked_padding",
    ):
        value = getattr(r, name)
        check(
            isinstance(value, int) and not isinstance(value, bool),
            f"{name} must be a whole number, not {_shown(value)}.",
        )
    for name in ("guidance_scale", "strength", "distilled_guidance"):
        value = getattr(r, name)
        check(
            isinstance(value, int | float) and not isinstance(value, bool),
            f"{name} must be a number, not {_shown(value)}.",
        )
    check(
        1 <= r.steps <= MAX_STEPS,
        f"Steps must be between 1 and {MAX_STEPS}, not {_shown(r.steps)}.",
    )
    check(
        0.0 <= r.guidance_scale <= 50.0,
        f"Guidance scale must be between 0 and 50, not {_shown(r.guidance_scale)}.",
    )
    check(
        r.seed == RANDOM_SEED or 0 <= r.seed <= MAX_SEED,
        f"Seed must be -1 (random) or between 0 and {MAX_SEED}, not {_shown(r.seed)}.",
    )
    for name in ("width", "height"):
        value = getattr(r, name)
        check(
            MIN_SIZE <= value <= MAX_SIZE,
            f"{name.capitalize()} must be between {MIN_SIZE} and {MAX_SIZE} pixels, "
            f"not {_shown(value)}.",
        )
        check(
            value % 8 == 0,
            f"{name.capitalize()} must be a multiple of 8, not {value} "
            f"(the nearest is {round_to_multiple_of_8(value)}).",
        )
    check(
        1 <= r.batch_size <= MAX_BATCH,
        f"Batch size must be between 1 and {MAX_BATCH}, not {_shown(r.batch_size)}.",
    )
    check(
        0.0 <= r.distilled_guidance <= MAX_DISTILLED_GUIDANCE,
        f"Distilled CFG scale must be between 0 and {MAX_DISTILLED_GUIDANCE:g}, "
        f"not {_shown(r.distilled_guidance)}.",
    )
    check(0.0 <= r.strength <= 1.0, f"Strength must be between 0 and 1, not {_shown(r.strength)}.")
    check(
        1 <= r.clip_skip <= MAX_CLIP_SKIP,
        f"Clip skip must be between 1 and {MAX_CLIP_SKIP}, not {_shown(r.clip_skip)}.",
    )
    check(
        0 <= r.mask_blur <= MAX_MASK_BLUR,
        f"Mask blur must be between 0 and {MAX_MASK_BLUR} pixels, not {_shown(r.mask_blur)}.",
    )
    check(
        0 <= r.masked_padding <= MAX_MASKED_PADDING,
        f"Masked area padding must be between 0 and {MAX_MASKED_PADDING} pixels, "
        f"not {_shown(r.masked_padding)}.",
    )
    if r.mode is Mode.TXT2IMG:
        check(r.init_image is None, "A text-to-image request takes no init image.")
        check(r.mask is None, "A text-to-image request takes no mask.")
    else:
        check(bool(r.init_image), f"{r.mode.value} needs an init image.")
    if r.mode is Mode.IMG2IMG:
        check(r.mask is None, "Image-to-image takes no mask; with a mask it is inpainting.")
    if r.mode is Mode.INPAINT:
        check(bool(r.mask), "Inpainting needs a mask (white marks what is repainted).")
    if r.mode is not Mode.TXT2IMG:
        check(
            int(r.steps * r.strength) >= 1,
            f"Strength {r.strength:g} with {r.steps} steps leaves no denoising step; "
            "raise the strength or the number of steps.",
        )


_SHOWN_LENGTH = 40


def _shown(value: object) -> str:
    """``value`` for a message: a number of many digits by its length, long text cut.

    (Formatting such a number with ``:g`` would raise ``OverflowError``, and
    printing it whole would fill the message with digits.)
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        digits = len(str(abs(value))) if value.bit_length() < 14_000 else "thousands of"
        return f"a number of {digits} digits"
    text = str(value) if isinstance(value, int | float) else repr(value)
    if len(text) > _SHOWN_LENGTH:
        text = text[: _SHOWN_LENGTH - 1] + "…"
    return text
