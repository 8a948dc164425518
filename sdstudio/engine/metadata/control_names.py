"""Control units under the names of AUTOMATIC1111's ControlNet extension.

The extension writes each enabled unit as one ``parameters`` entry, ``ControlNet 0``,
``ControlNet 1``..., whose value is the unit's settings (``Module: canny, Model:
control_v11p_sd15_canny [d14c016b], Weight: 1.0, Resize Mode: Crop and Resize,
Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0,
Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced``); A1111 quotes the
value, since it holds commas. The model is its file's stem with the first 8 hex digits
of its SHA-256 in brackets; a threshold the module has no slider for is left out.
Earlier versions wrote ``ControlNet`` or ``ControlNet N`` with lower-case keys
(``preprocessor: canny, model: ..., weight: 1, starting/ending: (0, 1), resize mode:
..., pixel perfect: False, control mode: Balanced, preprocessor params: (512, 100,
200)``); both are read. An entry whose module is an IP-Adapter's CLIP vision encoder
(``ip-adapter_clip_h``...) is an image prompt, read by
:mod:`~sdstudio.engine.metadata.ip_adapter_names`, not a unit.

The text never carries the control image, so a unit read from it cannot run: each is
kept in the extras as written, with a note, and :func:`read_units` gives its settings
for a control image chosen again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sdstudio.engine.control.units import MAX_UNITS, ControlMode, ControlResize, ControlUnit
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata.values import as_float, as_int
from sdstudio.engine.request import GenerationRequest, Mode

EXTRA_KEY = "control"
"""The image record's ``extra`` entry: per unit, in order, ``{"name", "hash"}`` of the
ControlNet file that ran (its name and the first 8 hex digits of its SHA-256)."""
MODES = {
    ControlMode.BALANCED: "Balanced",
    ControlMode.PROMPT: "My prompt is more important",
    ControlMode.CONTROL: "ControlNet is more important",
}
RESIZES = {
    ControlResize.RESIZE: "Just Resize",
    ControlResize.CROP: "Crop and Resize",
    ControlResize.FILL: "Resize and Fill",
}
_MODES_READ = {text.casefold(): mode for mode, text in MODES.items()} | {
    "0": ControlMode.BALANCED,
    "1": ControlMode.PROMPT,
    "2": ControlMode.CONTROL,
    "controlmode.balanced": ControlMode.BALANCED,  # the earlier format's enum names
    "controlmode.prompt": ControlMode.PROMPT,
    "controlmode.control": ControlMode.CONTROL,
}
_RESIZES_READ = {text.casefold(): resize for resize, text in RESIZES.items()} | {
    "scale to fit (inner fit)": ControlResize.CROP,  # the extension's earlier names
    "envelope (outer fit)": ControlResize.FILL,
    "resizemode.resize": ControlResize.RESIZE,
    "resizemode.inner_fit": ControlResize.CROP,
    "resizemode.outer_fit": ControlResize.FILL,
}
_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
_KEY = re.compile(r"controlnet(?: (\d{1,2}))?")
_ITEM = re.compile(r"""\s*([^:,]{1,40}?)\s*:\s*("(?:\\.|[^\\"])*"|\([^()]*\)|[^,]*)\s*(?:,|$)""")
TITLE = re.compile(r"(?P<name>.*?)\s*\[(?P<hash>[0-9a-fA-F]{8,64})\]\s*")
_MAX_TEXT = 4096
"""A longer unit text is not read (real ones are a few hundred characters)."""


def settings_written(
    request: GenerationRequest, extra: Mapping[str, Any] | None = None
) -> list[tuple[str, object]]:
    """The ``ControlNet N`` entries of the request's control units (none for an upscale)."""
    if request.mode is Mode.UPSCALE:
        return []
    recorded = (extra or {}).get(EXTRA_KEY)
    files = recorded if isinstance(recorded, list) else []
    return [
        (f"ControlNet {i}", unit_text(unit, files[i] if i < len(files) else None))
        for i, unit in enumerate(request.control)
    ]


def unit_text(unit: ControlUnit, recorded: object = None) -> str:
    """One unit as the extension writes it; ``recorded`` is the record's ``{"name",
    "hash"}`` of its ControlNet file, else the unit's own model is named."""
    items: list[tuple[str, str]] = [
        ("Module", unit.preprocessor),
        ("Model", model_title(unit.model, recorded)),
        ("Weight", repr(float(unit.weight))),
        ("Resize Mode", RESIZES[unit.resize]),
        ("Processor Res", str(unit.resolution)),
    ]
    for key, value in zip(("Threshold A", "Threshold B"), _thresholds(unit), strict=True):
        if value is not None:
            items.append((key, repr(float(value))))
    items += [
        ("Guidance Start", repr(float(unit.start))),
        ("Guidance End", repr(float(unit.end))),
        ("Pixel Perfect", str(unit.pixel_perfect)),
        ("Control Mode", MODES[unit.mode]),
    ]
    if unit.control_type:
        items.append(("Union Control Type", unit.control_type))
    return ", ".join(f"{key}: {quoted(value)}" for key, value in items)


def _thresholds(unit: ControlUnit) -> tuple[float | None, float | None]:
    """The unit's two settings as the extension writes them: the module's defaults where
    the unit leaves them unset (a module without such a setting writes none)."""
    from sdstudio.engine.control.preprocessor_modules import MODULES, module_name

    module = MODULES.get(module_name(unit.preprocessor))
    values: list[float | None] = []
    for given, setting in (
        (unit.threshold_a, module and module.a),
        (unit.threshold_b, module and module.b),
    ):
        values.append(given if given is not None else setting.default if setting else None)
    return values[0], values[1]


def model_title(model: str, recorded: object = None) -> str:
    """``control_v11p_sd15_canny [d14c016b]``: the file's stem and short hash as recorded,
    else the model's own stem (a diffusers folder by its name) without a hash."""
    entry = recorded if isinstance(recorded, dict) else {}
    name = stem(str(entry.get("name") or model))
    short_hash = str(entry.get("hash") or "")[:8]
    return f"{name} [{short_hash}]" if short_hash else name


def describe(unit: ControlUnit) -> str:
    """One line for people: model, preprocessor, weight, start–end and mode."""
    mode = {"balanced": "balanced", "prompt": "prompt first", "control": "control first"}
    return (
        f"{stem(unit.model)}, {unit.preprocessor}, weight {unit.weight:g}, "
        f"{unit.start:g}–{unit.end:g}, {mode[unit.mode.value]}"
        + (", pixel perfect" if unit.pixel_perfect else "")
    )


@dataclass(frozen=True, slots=True)
class ReadUnit:
    """A unit as a ``ControlNet N`` entry gives it: every setting but the control image."""

    key: str
    """The entry's key as written (``ControlNet 0``)."""
    values: dict[str, Any] = field(default_factory=dict)
    """:class:`ControlUnit` arguments, all but ``image``; empty when unusable."""
    model_hash: str = ""
    problem: str = ""
    """Why the entry cannot be read; empty when it can."""

    def unit(self, image: str) -> ControlUnit:
        """The unit with a control image chosen again; raises :class:`InvalidRequest`
        for an entry that could not be read."""
        if self.problem:
            raise InvalidRequest(f"{self.key} cannot be used: {self.problem}.")
        return ControlUnit(image=image, **self.values)

    def describe(self) -> str:
        """One line for people (see :func:`describe`); the problem for an unusable one."""
        if self.problem:
            return f"unreadable: {self.problem}"
        return describe(self.unit("-"))


def read_units(settings: Mapping[str, str]) -> list[ReadUnit]:
    """The ``ControlNet``/``ControlNet N`` entries of A1111 settings (keys in any case),
    in unit order, at most :data:`~sdstudio.engine.control.units.MAX_UNITS`."""
    from sdstudio.engine.metadata.ip_adapter_names import is_image_prompt

    # The extension writes an IP-Adapter as a unit too; those are image prompts.
    found = [(key, text) for key, text in entries(settings) if not is_image_prompt(text)]
    return [_read(key, text) for key, text in found[:MAX_UNITS]]


def entries(settings: Mapping[str, str]) -> list[tuple[str, str]]:
    """The ``ControlNet``/``ControlNet N`` entries (keys in any case) as ``(key, text)``,
    in unit order: ControlNets and IP-Adapters alike."""
    found: list[tuple[int, str, str]] = []
    for key, value in settings.items():
        match = _KEY.fullmatch(key.strip().casefold())
        if match and isinstance(value, str):
            found.append((int(match[1] or 0), key, value))
    return [(key, value) for _i, key, value in sorted(found)]


def entry_items(text: str) -> dict[str, str]:
    """An entry's ``Key: value`` items, keys case-folded, values unquoted."""
    return {name.casefold(): _unquoted(value.strip()) for name, value in _ITEM.findall(text)}


def notes(settings: Mapping[str, str]) -> tuple[str, ...]:
    """One note per ``ControlNet`` entry: what it needs, or why it cannot be read."""
    written: list[str] = []
    for read in read_units(settings):
        if read.problem:
            written.append(f"{read.key} is kept as written, not read: {read.problem}.")
            continue
        values = read.values
        written.append(
            f"{read.key} ({values['preprocessor']}, {stem(values['model'])}) needs its "
            "control image, which the image does not carry; its settings are kept as "
            "written, not applied."
        )
    return tuple(written)


def _read(key: str, text: str) -> ReadUnit:
    """One entry's unit, or why it cannot be read."""
    if len(text) > _MAX_TEXT:
        return ReadUnit(key, problem=f"its text is over {_MAX_TEXT} characters")
    items = entry_items(text)
    values: dict[str, Any] = {}
    title = items.get("model", "").strip()
    if not title or title.casefold() == "none":
        return ReadUnit(key, problem="it names no ControlNet model")
    titled = TITLE.fullmatch(title)
    values["model"] = titled["name"] if titled else title
    model_hash = titled["hash"].lower() if titled else ""
    values["preprocessor"] = (items.get("module") or items.get("preprocessor") or "none").strip()
    problem = _numbers(items, values) or _choices(items, values) or _pixel_perfect(items, values)
    if problem:
        return ReadUnit(key, problem=problem)
    if items.get("union control type", "").strip():
        values["control_type"] = items["union control type"].strip()
    try:
        ControlUnit(image="-", **values)
    except InvalidRequest as error:
        return ReadUnit(key, problem=str(error).rstrip("."))
    return ReadUnit(key, values, model_hash)


def _numbers(items: Mapping[str, str], values: dict[str, Any]) -> str:
    """Put the weight, start, end, resolution and thresholds in ``values``; the problem."""
    raw: dict[str, str] = {}
    for name, key in (
        ("weight", "weight"),
        ("start", "guidance start"),
        ("end", "guidance end"),
        ("resolution", "processor res"),
        ("threshold_a", "threshold a"),
        ("threshold_b", "threshold b"),
    ):
        if key in items:
            raw[name] = items[key]
    span = _parts(items.get("starting/ending", ""))
    if len(span) == 2:
        raw.setdefault("start", span[0])
        raw.setdefault("end", span[1])
    params = _parts(items.get("preprocessor params", ""))
    for name, value in zip(("resolution", "threshold_a", "threshold_b"), params, strict=False):
        raw.setdefault(name, value)
    for name, value in raw.items():
        number = as_float(value)
        if number is None:
            return f"its {name.replace('_', ' ')} {value!r:.40} is unusable"
        if name == "resolution":
            if number < 0:  # the extension's "-1": the module's default
                continue
            whole = as_int(number)
            if whole is None:
                return f"its processor resolution {value!r:.40} is unusable"
            values[name] = whole
        elif name.startswith("threshold"):
            values[name] = None if number == -1 else number
        else:
            values[name] = number
    return ""


def _choices(items: Mapping[str, str], values: dict[str, Any]) -> str:
    """Put the control and resize modes in ``values``; the problem, if any."""
    mode = items.get("control mode", "").strip()
    if mode:
        if mode.casefold() not in _MODES_READ:
            return f"its control mode {mode!r:.40} is unknown"
        values["mode"] = _MODES_READ[mode.casefold()]
    resize = items.get("resize mode", "").strip()
    if resize:
        if resize.casefold() not in _RESIZES_READ:
            return f"its resize mode {resize!r:.40} is unknown"
        values["resize"] = _RESIZES_READ[resize.casefold()]
    return ""


def _pixel_perfect(items: Mapping[str, str], values: dict[str, Any]) -> str:
    """Put "Pixel Perfect" in ``values``; the problem, if any."""
    written = items.get("pixel perfect", "").strip()
    if written:
        if written.casefold() not in ("true", "false"):
            return f"its pixel perfect {written!r:.40} is neither True nor False"
        values["pixel_perfect"] = written.casefold() == "true"
    return ""


def _parts(text: str) -> list[str]:
    """``["0", "1"]`` from ``(0, 1)``; nothing from any other text."""
    text = text.strip()
    if not (text.startswith("(") and text.endswith(")")):
        return []
    return [part.strip() for part in text[1:-1].split(",")]


def stem(model: str) -> str:
    """A ControlNet as the extension names it: a file by its stem, a folder by its name."""
    name = re.split(r"[/\\]", model.strip().rstrip("/\\"))[-1]
    if name.lower().endswith(_SUFFIXES):
        return name.rsplit(".", 1)[0]
    return name or model


def quoted(value: str) -> str:
    """A value as the unit's text holds it: JSON-quoted when it would break the text."""
    if any(c in value for c in ',:"()') or value != value.strip():
        return json.dumps(value, ensure_ascii=False)
    return value


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value
        return decoded if isinstance(decoded, str) else value
    return value
