"""``generate --control "model=NAME,image=PATH,preprocessor=canny,..."``: one ControlNet
unit per option, repeatable. Keys not given take A1111's defaults (weight 1, start 0,
end 1, balanced, crop, resolution 512, the preprocessor's own thresholds, no pixel
perfect)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from sdstudio.engine.control.units import ControlUnit
from sdstudio.engine.errors import InvalidRequest

KEYS = {
    "model": "model",
    "image": "image",
    "preprocessor": "preprocessor",
    "module": "preprocessor",
    "weight": "weight",
    "start": "start",
    "end": "end",
    "mode": "mode",
    "resize": "resize",
    "res": "resolution",
    "resolution": "resolution",
    "a": "threshold_a",
    "b": "threshold_b",
    "type": "control_type",
    "pixel_perfect": "pixel_perfect",
    "pp": "pixel_perfect",
}
"""Each key of a ``--control`` spec and its :class:`ControlUnit` field."""

_NUMBERS = {"weight", "start", "end", "threshold_a", "threshold_b"}
EXAMPLE = "model=NAME,image=PATH,preprocessor=canny,weight=0.8"


def add_control_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--control``."""
    parser.add_argument(
        "--control",
        action="append",
        default=None,
        metavar="SPEC",
        help=f"a ControlNet unit, as '{EXAMPLE}' (repeat for each); keys: "
        f"{', '.join(KEYS)}; mode balanced|prompt|control, resize crop|resize|fill, "
        "a/b the preprocessor's thresholds, type a Union model's control type, "
        "pixel_perfect (pp) true|false: the preprocessor works at the generated size",
    )


def control_options(args: argparse.Namespace) -> tuple[ControlUnit, ...]:
    """The units ``--control`` asks for, their preprocessors checked (refused before a
    model loads)."""
    from sdstudio.engine.control.preprocessors import check_preprocessor

    units = tuple(parse_control(spec) for spec in getattr(args, "control", None) or ())
    for unit in units:
        check_preprocessor(unit)
    return units


def parse_control(spec: str) -> ControlUnit:
    """One ``--control`` spec as a unit: the image path made absolute (it must exist),
    the model path made absolute where it is one (else a name to find).

    A part without ``=`` continues the value before it, so a path may hold commas.
    """
    values: dict[str, str] = {}
    last = ""
    for part in spec.split(","):
        key, equals, value = part.partition("=")
        if not equals:
            if not last:
                raise InvalidRequest(
                    f"--control {spec!r:.80}: write key=value pairs, as {EXAMPLE}."
                )
            values[last] += "," + part
            continue
        key = key.strip().casefold()
        if key not in KEYS:
            raise InvalidRequest(
                f"--control: the key {key!r:.40} is unknown; the keys are {', '.join(KEYS)}."
            )
        if KEYS[key] in values:
            raise InvalidRequest(f"--control: {key} is given twice in {spec!r:.80}.")
        last = KEYS[key]
        values[last] = value.strip()
    for needed in ("model", "image"):
        if not values.get(needed):
            raise InvalidRequest(f"--control needs {needed}=...; for example '{EXAMPLE}'.")
    fields: dict[str, object] = dict(values)
    for name in _NUMBERS & values.keys():
        fields[name] = _number(name, values[name], float)
    if "resolution" in values:
        fields["resolution"] = _number("res", values["resolution"], int)
    if "pixel_perfect" in values:
        fields["pixel_perfect"] = _switch("pixel_perfect", values["pixel_perfect"])
    image = Path(values["image"]).expanduser()
    if not image.is_file():
        raise InvalidRequest(f"--control: the control image {image} does not exist.")
    fields["image"] = str(image.resolve())
    model = values["model"]
    fields["model"] = str(Path(model).expanduser().resolve()) if os.path.exists(model) else model
    return ControlUnit(**fields)  # type: ignore[arg-type]


def _number(name: str, text: str, kind: type[float] | type[int]) -> float | int:
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise InvalidRequest(f"--control: {name}={text!r:.40} is not {what}.") from None


def _switch(name: str, text: str) -> bool:
    if text.casefold() not in ("true", "false"):
        raise InvalidRequest(f"--control: {name}={text!r:.40} must be true or false.")
    return text.casefold() == "true"


def recorded_control(units: tuple[ControlUnit, ...]) -> tuple[ControlUnit, ...]:
    """Units read from an image that is not sdstudio's own: a ControlNet recorded as a
    path is looked for by file name only, in the ControlNet folders (a recorded path
    could name any file on this computer); a name (``org/name`` on the hub) is kept."""
    return tuple(
        dataclasses.replace(unit, model=_file_name(unit.model)) if _is_path(unit.model) else unit
        for unit in units
    )


def _is_path(model: str) -> bool:
    text = model.replace("\\", "/")
    return text.startswith(("/", "~", ".")) or "/.." in text or (len(text) > 1 and text[1] == ":")


def _file_name(model: str) -> str:
    return Path(model.replace("\\", "/")).name


def check_recorded_control_images(
    units: tuple[ControlUnit, ...], source: str, inputs_dir: Path
) -> None:
    """A recorded control image is used only from the inputs folder, where sdstudio keeps
    a copy of every one it used: a record read from elsewhere could name any file."""
    from sdstudio.engine.models.lookup import is_inside

    for unit in units:
        if not is_inside(Path(unit.image), [inputs_dir]):
            raise InvalidRequest(
                f"The control image of {source} is missing: sdstudio re-runs only control "
                f"images kept in its inputs folder ({inputs_dir}), and {unit.image} is not "
                "there. Start again with 'sdstudio-cli generate --control'."
            )
        if not Path(unit.image).is_file():
            raise InvalidRequest(f"The control image {unit.image} of {source} is gone.")
