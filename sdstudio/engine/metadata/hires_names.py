"""The hires fix under AUTOMATIC1111's names, as A1111 and Forge write and read them.

A1111 writes ``Denoising strength`` (the hires pass's), then ``Hires upscale: 2`` or
``Hires resize: 1024x1536``, ``Hires steps`` (when not 0), ``Hires upscaler``;
``Hires sampler``, ``Hires schedule type``, ``Hires prompt`` and ``Hires negative
prompt`` only where they differ from the first pass's; Forge adds ``Hires CFG Scale``.
Its reader turns the hires fix on when the text has ``Denoising strength`` and one of
``Hires upscale``, ``Hires upscaler`` and ``Hires resize``, taking its defaults for
what is missing (upscale 2, upscaler ``Latent``, steps 0); a value equal to the first
pass's means "the same" (``Use same sampler``). ``Hires resize`` with one side 0 keeps
the first pass's shape. The upscaler ``None`` is a plain Lanczos resize; an upscaler
model file is written as A1111 names it, by its file's stem (``4x-UltraSharp``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sdstudio.engine import samplers
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import names
from sdstudio.engine.metadata.values import MAX_GUIDANCE, Parsed, as_float, as_int
from sdstudio.engine.refine.hires_settings import (
    DEFAULT_UPSCALER,
    MAX_HIRES_SCALE,
    HiresFix,
    builtin_upscaler,
)
from sdstudio.engine.refine.upscaler_files import display_name
from sdstudio.engine.request import MAX_STEPS, GenerationRequest, Mode

DENOISING = "denoising strength"
_SWITCHES = ("hires upscale", "hires upscaler", "hires resize")
"""Keys of which one (with the denoising strength) turns A1111's hires fix on."""
KEYS = frozenset(
    {
        *_SWITCHES,
        "hires steps",
        "hires sampler",
        "hires schedule type",
        "hires prompt",
        "hires negative prompt",
        "hires cfg scale",
    }
)
"""The keys read (case-folded), besides the denoising strength."""
_SIZE = re.compile(r"\s*(\d+)\s*x\s*(\d+)\s*")
COMFYUI_LATENT = {
    "bilinear": "Latent",
    "bicubic": "Latent (bicubic)",
    "nearest": "Latent (nearest)",
    "nearest-exact": "Latent (nearest-exact)",
}
"""ComfyUI's latent upscale methods that are A1111's latent upscalers."""
COMFYUI_IMAGE = {"lanczos": "Lanczos", "nearest-exact": "Nearest", "nearest": "Nearest"}
"""ComfyUI's image upscale methods that are A1111's image upscalers."""


def settings_written(request: GenerationRequest) -> list[tuple[str, object]]:
    """The ``parameters`` entries of the request's hires fix after ``Denoising strength``
    (which :func:`denoising_written` gives), in A1111's and Forge's order; none without one."""
    hires = request.hires
    if hires is None or request.mode is not Mode.TXT2IMG:
        return []
    settings: list[tuple[str, object]] = []
    if hires.sampler and hires.sampler != request.sampler:
        settings.append(("Hires sampler", hires.sampler))
    if hires.prompt and hires.prompt != request.prompt:
        settings.append(("Hires prompt", hires.prompt))
    if hires.negative_prompt and hires.negative_prompt != request.negative_prompt:
        settings.append(("Hires negative prompt", hires.negative_prompt))
    cfg = hires.guidance_scale
    if cfg is not None and cfg != request.guidance_scale:
        settings.append(("Hires CFG Scale", f"{cfg:g}"))
    if hires.schedule and hires.schedule != request.schedule:
        settings.append(("Hires schedule type", hires.schedule))
    if hires.width and hires.height:
        settings.append(("Hires resize", f"{hires.width}x{hires.height}"))
    else:
        settings.append(("Hires upscale", f"{hires.scale:g}"))
    if hires.steps:
        settings.append(("Hires steps", hires.steps))
    settings.append(("Hires upscaler", display_name(hires.upscaler)))
    return settings


def denoising_written(request: GenerationRequest) -> str:
    """The ``Denoising strength`` a text-to-image request's hires fix writes ("" without)."""
    if request.hires is None or request.mode is not Mode.TXT2IMG:
        return ""
    return f"{request.hires.denoise:g}"


@dataclass(frozen=True, slots=True)
class HiresRead:
    """What a ``parameters`` text says of a hires fix."""

    values: dict[str, object]
    """The raw values of the hires fix A1111 would run; empty when it would run none."""
    used: frozenset[str] = frozenset()
    """Keys (case-folded) read into it; the others stay extras."""
    notes: tuple[str, ...] = ()

    @property
    def on(self) -> bool:
        """Whether the text asks for a hires fix that can be read."""
        return bool(self.values)

    def apply(self, parsed: Parsed) -> Parsed:
        """``parsed`` with the hires fix in its request (a one-sided resize and the schedule
        taken from its first pass) and in its ``read`` fields."""
        if not self.values:
            return dataclasses.replace(parsed, notes=(*parsed.notes, *self.notes))
        request = parsed.request
        values = dict(self.values)
        notes = list(self.notes)
        resize = values.pop("resize", None)
        if isinstance(resize, tuple):
            values["width"], values["height"] = _resized(resize, request.width, request.height)
        _fit_schedule(values, request, notes)
        for key, first in (
            ("sampler", request.sampler),
            ("schedule", request.schedule),
            ("prompt", request.prompt),
            ("negative_prompt", request.negative_prompt),
            ("guidance_scale", request.guidance_scale),
        ):
            if values.get(key) == first:  # the same as the first pass: "Use same ..."
                values.pop(key)
        try:
            hires = HiresFix(**values)  # type: ignore[arg-type]
        except InvalidRequest as error:  # not expected: every value was checked
            raise InvalidRequest(f"The metadata has an unusable hires setting: {error}") from None
        return dataclasses.replace(
            parsed,
            request=request.replace(hires=hires),
            read=parsed.read | {"hires"},
            notes=(*parsed.notes, *notes),
        )


def read(settings: Mapping[str, str]) -> HiresRead:
    """Read the hires fix from A1111 entries keyed by case-folded name.

    A value that cannot be used where the hires size or steps depend on it leaves the
    whole hires fix unread (kept as extras, with a note); an unusable CFG scale is kept
    alone. Unknown upscaler, sampler and schedule names are kept as written, with a
    note, so that generating says what to choose.
    """
    present = [key for key in KEYS if key in settings]
    if not present:
        return HiresRead({})
    if DENOISING not in settings or not any(key in settings for key in _SWITCHES):
        missing = "denoising strength" if DENOISING not in settings else "upscale or upscaler"
        return HiresRead({}, notes=(_not_run(f"the image gives no hires {missing}"),))
    values: dict[str, object] = {}
    notes: list[str] = []
    used = {DENOISING, *present}
    problem = _core_values(settings, values)
    if problem:
        return HiresRead({}, notes=(_not_run(problem),))
    upscaler = settings.get("hires upscaler", DEFAULT_UPSCALER).strip()
    values["upscaler"], note = upscaler_name(upscaler)
    notes += [note] if note else []
    sampler = settings.get("hires sampler", "").strip()
    schedule = settings.get("hires schedule type", "").strip()
    if sampler:
        choice = names.sampler_and_schedule(sampler, schedule)
        values["sampler"] = choice.sampler
        implied = schedule or names.sampler_and_schedule(sampler).schedule != samplers.AUTOMATIC
        if implied:
            values["schedule"] = choice.schedule
        notes += [f"Hires: {note}" for note in choice.notes]
    elif schedule:
        values["schedule"], schedule_notes = names.schedule_name(schedule)
        notes += [f"Hires: {note}" for note in schedule_notes]
    for key, name in (("hires prompt", "prompt"), ("hires negative prompt", "negative_prompt")):
        if key in settings:
            values[name] = settings[key]
    if "hires cfg scale" in settings:
        cfg = as_float(settings["hires cfg scale"])
        if cfg is not None and 0 <= cfg <= MAX_GUIDANCE:
            values["guidance_scale"] = cfg
        else:
            used.discard("hires cfg scale")
            notes.append(
                f"Hires CFG scale {settings['hires cfg scale']!r} is unusable; the first "
                "pass's is used and the value is kept as written."
            )
    return HiresRead(values, frozenset(used), tuple(notes))


def upscaler_name(written: str) -> tuple[str, str | None]:
    """An upscaler as sdstudio keeps it, and a note when it is read as another.

    Built-in names are spelt as A1111 spells them; any other name is an upscaler file's
    (``4x-UltraSharp``, or A1111's ``R-ESRGAN 4x+``), kept as written and found in the
    upscaler folders when the image is generated again.
    """
    if written.casefold() == "none":  # A1111's "None": a Lanczos resize alone
        return "Lanczos", "Hires upscaler 'None' (a plain resize in A1111) is read as Lanczos."
    return builtin_upscaler(written) or written, None


def comfyui_upscaler(method: str, latent: bool) -> str | None:
    """A1111's upscaler for a ComfyUI upscale method on latents or images, or ``None``."""
    table = COMFYUI_LATENT if latent else COMFYUI_IMAGE
    return table.get(method.strip().casefold())


def _core_values(settings: Mapping[str, str], values: dict[str, object]) -> str:
    """Put the denoising strength, size and steps into ``values``; the problem, if any."""
    denoise = as_float(settings[DENOISING])
    if denoise is None or not 0 <= denoise <= 1:
        return f"its denoising strength {settings[DENOISING]!r} is unusable"
    values["denoise"] = denoise
    if "hires steps" in settings:
        steps = as_int(settings["hires steps"])
        if steps is None or not 0 <= steps <= MAX_STEPS:
            return f"its hires steps {settings['hires steps']!r} are unusable"
        values["steps"] = steps
    resize = _SIZE.fullmatch(settings.get("hires resize", ""))
    if "hires resize" in settings and resize is None:
        return f"its hires resize {settings['hires resize']!r} is unusable"
    width, height = (int(resize[1]), int(resize[2])) if resize else (0, 0)
    if width or height:
        values["resize"] = (width, height)
    elif "hires upscale" in settings:
        scale = as_float(settings["hires upscale"])
        if scale is None or not 1 <= scale <= MAX_HIRES_SCALE:
            return f"its hires upscale {settings['hires upscale']!r} is unusable"
        values["scale"] = scale
    return ""


def _resized(size: tuple[int, int], width: int, height: int) -> tuple[int, int]:
    """A1111's resize with one side 0: that side follows the first pass's shape."""
    resize_width, resize_height = size
    if not resize_height:
        resize_height = resize_width * height // width
    elif not resize_width:
        resize_width = resize_height * width // height
    return resize_width, resize_height


def _fit_schedule(values: dict[str, object], request: GenerationRequest, notes: list[str]) -> None:
    """Give a hires sampler that cannot take the first pass's schedule its own default."""
    sampler, schedule = values.get("sampler"), values.get("schedule")
    if not isinstance(sampler, str) or schedule is not None:
        return
    try:
        entry = samplers.get_sampler(sampler)
        if samplers.get_schedule(request.schedule) in samplers.schedules_for(entry.name):
            return
    except InvalidRequest:
        return
    values["schedule"] = entry.default_schedule
    notes.append(
        f"The hires sampler {entry.name} has no {request.schedule} schedule in sdstudio; "
        f"{entry.default_schedule} is used."
    )


def _not_run(reason: str) -> str:
    return f"The hires fix is kept as written, not applied: {reason}."
