"""The checks a :class:`~sdstudio.engine.request.GenerationRequest` passes when it is built,
with messages that say what is wrong and what is allowed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.refine.upscale_settings import MAX_UPSCALED_SIZE

if TYPE_CHECKING:
    from sdstudio.engine.request import GenerationRequest


def validate(r: GenerationRequest) -> None:
    """Raise :class:`InvalidRequest` for the first setting that is unusable."""
    from sdstudio.engine.request import (
        MAX_BATCH,
        MAX_CLIP_SKIP,
        MAX_DISTILLED_GUIDANCE,
        MAX_MASK_BLUR,
        MAX_MASKED_PADDING,
        MAX_SEED,
        MAX_SIZE,
        MAX_STEPS,
        MAX_TEXT_ENCODERS,
        MIN_SIZE,
        RANDOM_SEED,
        Mode,
        round_to_multiple_of_8,
    )

    upscaling = r.mode is Mode.UPSCALE

    for name in ("model", "prompt", "negative_prompt", "sampler", "schedule", "vae"):
        check(isinstance(getattr(r, name), str), f"{name} must be text.")
    for name in ("init_image", "mask"):
        value = getattr(r, name)
        check(value is None or isinstance(value, str), f"{name} must be a path or nothing.")
    check(isinstance(r.mode, Mode), f"Unknown mode {shown(r.mode)}.")
    check(upscaling or bool(r.model.strip()), "No model was given.")
    check(
        isinstance(r.text_encoders, tuple)
        and all(isinstance(name, str) and name.strip() for name in r.text_encoders),
        "text_encoders must be a list of file names or paths.",
    )
    check(
        len(r.text_encoders) <= MAX_TEXT_ENCODERS,
        f"A model takes at most {MAX_TEXT_ENCODERS} text encoders, not {len(r.text_encoders)}.",
    )
    check(
        isinstance(r.draft_decode, bool),
        f"draft_decode must be true or false, not {shown(r.draft_decode)}.",
    )
    check(
        isinstance(r.styles, tuple) and all(isinstance(name, str) for name in r.styles),
        "styles must be a list of style names.",
    )
    check(
        isinstance(r.seed_resize_from, tuple)
        and len(r.seed_resize_from) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in r.seed_resize_from),
        f"Seed resize from must be a width and a height, not {shown(r.seed_resize_from)}.",
    )
    for name in (
        "steps",
        "seed",
        "variation_seed",
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
            f"{name} must be a whole number, not {shown(value)}.",
        )
    for name in ("guidance_scale", "strength", "distilled_guidance", "variation_strength"):
        value = getattr(r, name)
        check(
            isinstance(value, int | float) and not isinstance(value, bool),
            f"{name} must be a number, not {shown(value)}.",
        )
    check(
        1 <= r.steps <= MAX_STEPS,
        f"Steps must be between 1 and {MAX_STEPS}, not {shown(r.steps)}.",
    )
    check(
        0.0 <= r.guidance_scale <= 50.0,
        f"Guidance scale must be between 0 and 50, not {shown(r.guidance_scale)}.",
    )
    check(
        r.seed == RANDOM_SEED or 0 <= r.seed <= MAX_SEED,
        f"Seed must be -1 (random) or between 0 and {MAX_SEED}, not {shown(r.seed)}.",
    )
    check(
        0 <= r.variation_seed <= MAX_SEED,
        f"Variation seed must be between 0 and {MAX_SEED}, not {shown(r.variation_seed)}.",
    )
    check(
        0.0 <= r.variation_strength <= 1.0,
        f"Variation seed strength must be between 0 and 1, not {shown(r.variation_strength)}.",
    )
    check(
        r.seed_resize_from == (0, 0)
        or all(MIN_SIZE <= v <= MAX_SIZE and v % 8 == 0 for v in r.seed_resize_from),
        f"Seed resize from must be (0, 0) (off) or a size of multiples of 8 between "
        f"{MIN_SIZE} and {MAX_SIZE}, not {shown(r.seed_resize_from)}.",
    )
    for name in ("width", "height"):
        value = getattr(r, name)
        if upscaling:  # the upscaled image's own size, any number of pixels
            check(
                1 <= value <= MAX_UPSCALED_SIZE,
                f"An upscaled image's {name} must be between 1 and {MAX_UPSCALED_SIZE} "
                f"pixels, not {shown(value)}.",
            )
            continue
        check(
            MIN_SIZE <= value <= MAX_SIZE,
            f"{name.capitalize()} must be between {MIN_SIZE} and {MAX_SIZE} pixels, "
            f"not {shown(value)}.",
        )
        check(
            value % 8 == 0,
            f"{name.capitalize()} must be a multiple of 8, not {value} "
            f"(the nearest is {round_to_multiple_of_8(value)}).",
        )
    check(
        1 <= r.batch_size <= MAX_BATCH,
        f"Batch size must be between 1 and {MAX_BATCH}, not {shown(r.batch_size)}.",
    )
    check(
        0.0 <= r.distilled_guidance <= MAX_DISTILLED_GUIDANCE,
        f"Distilled CFG scale must be between 0 and {MAX_DISTILLED_GUIDANCE:g}, "
        f"not {shown(r.distilled_guidance)}.",
    )
    check(0.0 <= r.strength <= 1.0, f"Strength must be between 0 and 1, not {shown(r.strength)}.")
    check(
        1 <= r.clip_skip <= MAX_CLIP_SKIP,
        f"Clip skip must be between 1 and {MAX_CLIP_SKIP}, not {shown(r.clip_skip)}.",
    )
    check(
        0 <= r.mask_blur <= MAX_MASK_BLUR,
        f"Mask blur must be between 0 and {MAX_MASK_BLUR} pixels, not {shown(r.mask_blur)}.",
    )
    check(
        0 <= r.masked_padding <= MAX_MASKED_PADDING,
        f"Masked area padding must be between 0 and {MAX_MASKED_PADDING} pixels, "
        f"not {shown(r.masked_padding)}.",
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
    _check_parts(r, Mode)
    if r.mode not in (Mode.TXT2IMG, Mode.UPSCALE):
        check(
            int(r.steps * r.strength) >= 1,
            f"Strength {r.strength:g} with {r.steps} steps leaves no denoising step; "
            "raise the strength or the number of steps.",
        )


def _check_parts(r: GenerationRequest, mode: Any) -> None:
    """The optional parts fit the mode: an upscale job is only that; SD upscale is
    image-to-image; a refiner and a detailer need a model's pass to follow."""
    from sdstudio.engine.control.image_prompts import MAX_IMAGE_PROMPTS, ImagePrompt
    from sdstudio.engine.control.units import MAX_UNITS, ControlUnit

    check(
        isinstance(r.control, tuple) and all(isinstance(u, ControlUnit) for u in r.control),
        "control must be a list of control units.",
    )
    check(
        len(r.control) <= MAX_UNITS,
        f"At most {MAX_UNITS} control units guide one image, not {len(r.control)}.",
    )
    check(
        isinstance(r.ip_adapters, tuple) and all(isinstance(p, ImagePrompt) for p in r.ip_adapters),
        "ip_adapters must be a list of image prompts.",
    )
    check(
        len(r.ip_adapters) <= MAX_IMAGE_PROMPTS,
        f"At most {MAX_IMAGE_PROMPTS} image prompts guide one image, not {len(r.ip_adapters)}.",
    )
    if r.mode is mode.UPSCALE:
        check(r.upscale is not None, "An upscale job needs its upscaler and scale.")
        for name in ("hires", "refiner", "detailer"):
            check(getattr(r, name) is None, f"An upscale job takes no {name} settings.")
        check(not r.control, "An upscale job takes no control units.")
        check(not r.ip_adapters, "An upscale job takes no image prompts.")
    elif r.upscale is not None:
        check(
            r.mode is mode.IMG2IMG,
            "SD upscale repaints an upscaled source with image-to-image; "
            f"it does not run with {r.mode.value}.",
        )


def check(ok: bool, message: str) -> None:
    """Raise :class:`InvalidRequest` with ``message`` unless ``ok``."""
    if not ok:
        raise InvalidRequest(message)


_SHOWN_LENGTH = 40


def shown(value: object) -> str:
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
