"""AUTOMATIC1111's ``parameters`` text, which most tools read and write.

Layout::

    <prompt, may span lines>
    Negative prompt: <negative prompt, may span lines>
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x768

A value holding ``,``, ``:`` or a newline is JSON-quoted.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sdstudio.engine import samplers
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import (
    control_names,
    detailer_names,
    draft_names,
    fast_names,
    hires_names,
    hypernet_names,
    inpaint_names,
    ip_adapter_names,
    names,
    refiner_names,
    upscale_names,
    variation_names,
    wildcard_names,
)
from sdstudio.engine.metadata.safe_text import clean_text, load_json
from sdstudio.engine.metadata.values import Parsed, as_float, as_int, build_request
from sdstudio.engine.request import (
    MAX_CLIP_SKIP,
    MAX_DISTILLED_GUIDANCE,
    GenerationRequest,
    Mode,
)

PARAMETERS_KEY = "parameters"
_NEGATIVE = "Negative prompt:"
# Keys that make a last line A1111 settings; other tools' text may hold a few
# ``word: value`` pairs by chance.
_CORE_KEYS = frozenset({"steps", "sampler", "cfg scale", "seed", "size"})
# The pattern A1111's own reader uses for the last line, with the leading
# whitespace and the key bounded: unbounded, a long line of words with no
# colon takes quadratic time (a 1 MB text chunk would take hours). Keys are
# far shorter than 64 characters, so the pairs found are the same.
_PAIR = re.compile(r"""\s{0,64}(\w[\w \-/]{1,64}):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)""")
# A longer last line is read as part of the prompt, not searched for settings (about
# a second per megabyte). Real settings lines, quoted extension prompts and all, are
# a few kilobytes.
MAX_SETTINGS_LINE = 64 * 1024
# The keys (case-folded) whose values go into the request or the model name and hash.
_APPLIED = frozenset(
    {
        "steps",
        "sampler",
        "schedule type",
        "scheduler",
        "cfg scale",
        "seed",
        "size",
        "model",
        "model hash",
        "denoising strength",
        "vae",
        "clip skip",
        "distilled cfg scale",
        *inpaint_names.KEYS,
    }
)


@dataclass(frozen=True, slots=True)
class A1111Parameters:
    """The parts of a ``parameters`` text."""

    prompt: str
    negative_prompt: str = ""
    settings: dict[str, str] = field(default_factory=dict)


def format_parameters(
    request: GenerationRequest,
    *,
    model_name: str = "",
    model_hash: str = "",
    version: str = "",
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write a request as A1111 ``parameters`` text (the seed must be resolved).

    ``extra`` is an :attr:`ImageRecord.extra`; its ``loras`` and ``embeddings``
    become A1111's ``Lora hashes`` and ``TI hashes``, its ``vae`` ``VAE hash`` and ``VAE``.
    """
    if request.mode is Mode.UPSCALE:  # A1111's Extras keep the source's parameters
        return upscale_names.source_parameters(extra)
    vae = (extra or {}).get("vae")
    vae = vae if isinstance(vae, dict) else {}
    settings: list[tuple[str, object]] = [
        ("Steps", request.steps),
        ("Sampler", request.sampler),
    ]
    if request.schedule != samplers.AUTOMATIC:
        settings.append(("Schedule type", request.schedule))
    settings.append(("CFG scale", f"{request.guidance_scale:g}"))
    if (extra or {}).get("distilled_guidance"):
        settings.append(("Distilled CFG Scale", f"{request.distilled_guidance:g}"))
    settings += [
        ("Seed", request.seed),
        ("Size", f"{request.width}x{request.height}"),
        ("Model hash", model_hash),
        ("Model", model_name),
        ("VAE hash", str(vae.get("hash") or "")),
        ("VAE", str(vae.get("name") or "")),
    ]
    modules = (extra or {}).get("modules")
    if isinstance(modules, list):  # Forge's names for the part files of a split model
        settings += [(f"Module {i}", str(name)) for i, name in enumerate(modules, 1)]
    settings += variation_names.settings_written(request)
    settings += draft_names.settings_written(request, extra)
    if request.mode is not Mode.TXT2IMG:
        settings.append(("Denoising strength", f"{request.strength:g}"))
    else:
        settings.append(("Denoising strength", hires_names.denoising_written(request)))
    settings += inpaint_names.settings_written(request)
    if request.clip_skip > 1:
        settings.append(("Clip skip", request.clip_skip))
    settings += hires_names.settings_written(request)
    settings += upscale_names.settings_written(request)
    settings += detailer_names.settings_written(request)
    settings += refiner_names.settings_written(request, extra)
    settings += control_names.settings_written(request, extra)
    settings += ip_adapter_names.settings_written(request, extra)
    settings += fast_names.settings_written(request)
    settings += [
        ("Lora hashes", _hashes((extra or {}).get("loras"))),
        ("TI hashes", _hashes((extra or {}).get("embeddings"))),
        (hypernet_names.HASHES, _hashes((extra or {}).get("hypernets"))),
    ]
    prompt, negative, templates = wildcard_names.prompts_written(
        request.prompt, request.negative_prompt, extra
    )
    settings += [*templates, ("Version", version)]
    line = ", ".join(f"{key}: {_quote(str(value))}" for key, value in settings if value != "")
    lines = [prompt]
    if negative:
        lines.append(f"{_NEGATIVE} {negative}")
    lines.append(line)
    return "\n".join(lines)


def split_parameters(text: str) -> A1111Parameters:
    """Split a ``parameters`` text into prompt, negative prompt and settings.

    Never raises on odd input: text that is not in this format is read as a
    prompt with no settings. Characters that cannot be stored are replaced
    (see :func:`~sdstudio.engine.metadata.safe_text.clean_text`).
    """
    lines = clean_text(text).strip().split("\n")
    settings: dict[str, str] = {}
    last = lines[-1] if lines else ""
    pairs = _PAIR.findall(last) if len(last) <= MAX_SETTINGS_LINE else []
    if len(pairs) >= 3:
        settings = {key.strip(): _unquote(value.strip()) for key, value in pairs}
        lines = lines[:-1]
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    target = prompt_lines
    for line in lines:
        if line.startswith(_NEGATIVE) and target is prompt_lines:
            target = negative_lines
            line = line[len(_NEGATIVE) :].lstrip()
        target.append(line)
    return A1111Parameters(
        prompt="\n".join(prompt_lines).strip(),
        negative_prompt="\n".join(negative_lines).strip(),
        settings=settings,
    )


def parse_parameters(text: str, *, model: str = "") -> GenerationRequest:
    """Read a ``parameters`` text into a request.

    ``model`` is used when the text names no model. Raises
    :class:`InvalidRequest` when the text holds no generation settings;
    unusable values are dropped or fixed as :func:`read_parameters` says.
    """
    return read_parameters(text, model=model).request


def read_parameters(text: str, *, model: str = "") -> Parsed:
    """Read a ``parameters`` text into a request and notes on what was fixed.

    Keys are matched ignoring case (``CFG scale``, ``cfg scale``). Out-of-range
    values (a seed beyond 2**64-1, a size that is not a multiple of 8) are
    dropped or fixed by :func:`~sdstudio.engine.metadata.values.build_request`,
    and settings the text does not give are named in the notes. A hires fix
    (``Denoising strength`` with ``Hires upscale``, ``Hires upscaler``...) goes to
    the request's ``hires`` (see :mod:`~sdstudio.engine.metadata.hires_names`), an
    ADetailer unit that finds faces to its ``detailer`` (see
    :mod:`~sdstudio.engine.metadata.detailer_names`), ``Refiner`` and ``Refiner switch
    at`` to its ``refiner`` (see :mod:`~sdstudio.engine.metadata.refiner_names`).
    ``Model hash`` goes to :attr:`Parsed.model_hash`; every other key no request
    field takes (``Hires checkpoint``, ``ADetailer model 2nd``, ``Lora
    hashes``, ...) to :attr:`Parsed.extras` with its value as written. Raises
    :class:`InvalidRequest` when the text is not in this format: JSON, or a
    last line without at least two of Steps, Sampler, CFG scale, Seed and Size.
    """
    if _is_json(text):
        raise InvalidRequest("The parameters text is JSON, not AUTOMATIC1111 text.")
    parts = split_parameters(text)
    s = {key.casefold(): value for key, value in parts.settings.items()}
    if len(_CORE_KEYS & s.keys()) < 2:
        raise InvalidRequest("The parameters text holds no generation settings.")
    # With a hires pass, the denoising strength is the second pass's, not an img2img strength.
    hires = hires_names.read(s)
    detail = detailer_names.read(s)
    used = set(_APPLIED) | set(hires.used) | set(detail.used)
    refiner = refiner_names.read(s, hires=hires.on)
    used |= refiner.used
    variation = variation_names.read(s)
    used |= variation.used | draft_names.KEYS
    fast = fast_names.read(s)
    used |= fast.used
    if any(key.startswith("hires ") for key in s) and not hires.on:
        used.discard("denoising strength")  # kept with the hires settings it belongs to
    strength_read = "denoising strength" in used and not hires.on
    modules = _modules(s)
    used |= {f"module {i}" for i in range(1, len(modules) + 1)}
    prompt, hypernet_keys = hypernet_names.prompt_read(parts.prompt, s)  # A1111 before 1.0
    used |= hypernet_keys
    prompt, negative, written, template_notes = wildcard_names.read(
        prompt, parts.negative_prompt, s
    )
    used |= wildcard_names.KEYS
    values: dict[str, object] = {
        "prompt": prompt,
        "negative_prompt": negative,
        "steps": s.get("steps"),
        "seed": s.get("seed"),
        "guidance_scale": s.get("cfg scale"),
        "strength": s.get("denoising strength") if strength_read else None,
        "vae": _vae_name(s.get("vae", "")),
        "text_encoders": modules,
    }
    notes: tuple[str, ...] = ()
    if s.get("sampler", "").strip():
        # Fooocus writes ComfyUI's scheduler name as "Scheduler".
        schedule = s.get("schedule type") or s.get("scheduler") or ""
        notes = names.sampler_and_schedule(s["sampler"], schedule).put(values)
    else:
        used -= {"schedule type", "scheduler"}
    size = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", s.get("size", ""))
    if size:
        values["width"], values["height"] = size.group(1), size.group(2)
    else:
        used.discard("size")
    clip_skip = as_int(s.get("clip skip"))
    if clip_skip is None or not 1 <= clip_skip <= MAX_CLIP_SKIP:
        used.discard("clip skip")
    inpaint = inpaint_names.read(s)
    used -= inpaint.unusable
    distilled = as_float(s.get("distilled cfg scale"))
    if distilled is None or not 0 <= distilled <= MAX_DISTILLED_GUIDANCE:
        used.discard("distilled cfg scale")
    recorded = s.get("model", "")
    parsed = build_request(
        values,
        model=recorded or model,
        model_name=recorded,
        model_hash=s.get("model hash", ""),
        extras={**_extras(parts.settings, used), **written},
    )
    parsed = dataclasses.replace(parsed, notes=notes + template_notes + parsed.notes)
    parsed = detail.apply(hires.apply(inpaint.apply(parsed)))
    parsed = fast.apply(variation.apply(refiner.apply(parsed)))
    parsed = draft_names.read(s, parsed)
    # Kept in the extras: the text never carries a unit's control image nor an image
    # prompt's reference images.
    control_notes = control_names.notes(parts.settings) + ip_adapter_names.notes(parts.settings)
    parsed = dataclasses.replace(parsed, notes=(*parsed.notes, *control_notes))
    if "distilled cfg scale" in used and distilled is not None:
        parsed = dataclasses.replace(
            parsed,
            request=parsed.request.replace(distilled_guidance=distilled),
            read=parsed.read | {"distilled_guidance"},
        )
    if "clip skip" in used:
        parsed = dataclasses.replace(
            parsed,
            request=parsed.request.replace(clip_skip=clip_skip),
            read=parsed.read | {"clip_skip"},
        )
    elif "clip skip" in s:
        note = f"Clip skip {s['clip skip']!r} is unusable; the default 1 is used."
        parsed = dataclasses.replace(parsed, notes=(*parsed.notes, note))
    return parsed


def _extras(settings: Mapping[str, str], used: set[str]) -> dict[str, str]:
    """The settings that no request field takes, as written: ADetailer, a refiner, hashes
    of networks, and a value that could not be used (a schedule type sdstudio lacks, an
    unreadable size or clip skip, a hires fix that cannot be read)."""
    extras = {key: value for key, value in settings.items() if key.casefold() not in used}
    for key, value in settings.items():
        schedule = key.casefold() in ("schedule type", "scheduler") and value.strip()
        if schedule and names.schedule_name(value)[1]:  # a schedule sdstudio does not have
            extras[key] = value
    return extras


def _is_json(text: str) -> bool:
    """Whether ``text`` is a JSON object or list (other tools' metadata, not A1111 text)."""
    stripped = text.strip()
    return stripped[:1] in ("{", "[") and isinstance(load_json(stripped), dict | list)


def _modules(settings: Mapping[str, str]) -> tuple[str, ...]:
    """Forge's ``Module 1``, ``Module 2`` ...: the VAE and text encoder files (by name)
    a model kept as a transformer alone was completed with, in order, up to the first gap."""
    found: list[str] = []
    while (value := settings.get(f"module {len(found) + 1}", "").strip()) and len(found) < 8:
        found.append(value)
    return tuple(found)


def _vae_name(value: str) -> str:
    """The VAE an A1111 record names; its "None" and "Automatic" mean the model's own."""
    return "" if value.strip().lower() in ("", "none", "automatic") else value.strip()


def _hashes(entries: object) -> str:
    """``name: hash, name: hash`` from a list of ``{"name", "hash"}`` dictionaries."""
    if not isinstance(entries, list):
        return ""
    return ", ".join(
        f"{entry['name']}: {entry['hash']}"
        for entry in entries
        if isinstance(entry, dict) and entry.get("name") and entry.get("hash")
    )


def _quote(value: str) -> str:
    if any(c in value for c in ",:\n") or value.startswith('"'):
        return json.dumps(value, ensure_ascii=False)
    return value


def _unquote(value: str) -> str:
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value
        return clean_text(decoded) if isinstance(decoded, str) else value
    return value
