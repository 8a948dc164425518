"""``generate --ip-adapter "model=NAME,image=PATH,weight=0.6,..."``: one image prompt
(IP-Adapter) per option, repeatable; ``image=`` repeated inside one spec gives it several
reference images. Keys not given take A1111's defaults (weight 1, start 0, end 1, no
mask, the encoder the adapter needs)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from sdstudio.engine.control.image_prompts import MAX_IMAGE_PROMPTS, ImagePrompt
from sdstudio.engine.errors import InvalidRequest

KEYS = {
    "model": "model",
    "image": "images",
    "weight": "weight",
    "start": "start",
    "end": "end",
    "mask": "mask",
    "encoder": "encoder",
}
"""Each key of an ``--ip-adapter`` spec and its :class:`ImagePrompt` field."""

_NUMBERS = ("weight", "start", "end")
EXAMPLE = "model=ip-adapter_sd15,image=PATH,weight=0.6"


def add_ip_adapter_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--ip-adapter``."""
    parser.add_argument(
        "--ip-adapter",
        action="append",
        default=None,
        metavar="SPEC",
        help=f"an image prompt (IP-Adapter), as '{EXAMPLE}' (repeat for each, at most "
        f"{MAX_IMAGE_PROMPTS}); keys: {', '.join(KEYS)}; repeat image= for several "
        "reference images; mask a white-where-it-guides image; encoder a CLIP vision file "
        "(default: the one the adapter needs)",
    )


def ip_adapter_options(args: argparse.Namespace) -> tuple[ImagePrompt, ...]:
    """The image prompts ``--ip-adapter`` asks for (refused before a model loads)."""
    specs = getattr(args, "ip_adapter", None) or ()
    if len(specs) > MAX_IMAGE_PROMPTS:
        raise InvalidRequest(
            f"--ip-adapter is given {len(specs)} times; at most {MAX_IMAGE_PROMPTS} image "
            "prompts guide one image."
        )
    return tuple(parse_ip_adapter(spec) for spec in specs)


def parse_ip_adapter(spec: str) -> ImagePrompt:
    """One ``--ip-adapter`` spec as an image prompt: the images and mask made absolute
    (they must exist), the model and encoder made absolute where they are paths (else
    names to find in the folders).

    A part without ``=`` continues the value before it, so a path may hold commas.
    """
    values: dict[str, str] = {}
    images: list[str] = []
    last = ""
    for part in spec.split(","):
        key, equals, value = part.partition("=")
        if not equals:
            if not last:
                raise InvalidRequest(
                    f"--ip-adapter {spec!r:.80}: write key=value pairs, as {EXAMPLE}."
                )
            if last == "images":
                images[-1] += "," + part
            else:
                values[last] += "," + part
            continue
        key = key.strip().casefold()
        if key not in KEYS:
            raise InvalidRequest(
                f"--ip-adapter: the key {key!r:.40} is unknown; the keys are {', '.join(KEYS)}."
            )
        last = KEYS[key]
        if last == "images":
            images.append(value.strip())
            continue
        if last in values:
            raise InvalidRequest(f"--ip-adapter: {key} is given twice in {spec!r:.80}.")
        values[last] = value.strip()
    if not values.get("model"):
        raise InvalidRequest(f"--ip-adapter needs model=...; for example '{EXAMPLE}'.")
    if not images or not all(images):
        raise InvalidRequest(f"--ip-adapter needs image=...; for example '{EXAMPLE}'.")
    fields: dict[str, object] = dict(values)
    for name in _NUMBERS:
        if name in values:
            fields[name] = _number(name, values[name])
    fields["images"] = tuple(_existing(image, "reference image") for image in images)
    if values.get("mask"):
        fields["mask"] = _existing(values["mask"], "mask")
    for name in ("model", "encoder"):
        if values.get(name):
            fields[name] = _name_or_path(values[name])
    return ImagePrompt(**fields)  # type: ignore[arg-type]


def _existing(text: str, what: str) -> str:
    path = Path(text).expanduser()
    if not path.is_file():
        raise InvalidRequest(f"--ip-adapter: the {what} {path} does not exist.")
    return str(path.resolve())


def _name_or_path(text: str) -> str:
    return str(Path(text).expanduser().resolve()) if os.path.exists(text) else text


def _number(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidRequest(f"--ip-adapter: {name}={text!r:.40} is not a number.") from None


def recorded_image_prompts(prompts: tuple[ImagePrompt, ...]) -> tuple[ImagePrompt, ...]:
    """Image prompts read from an image that is not sdstudio's own: an IP-Adapter or
    encoder recorded as a path is looked for by file name only, in its folders (a recorded
    path could name any file on this computer); a name is kept."""
    return tuple(
        dataclasses.replace(
            prompt,
            model=_file_name(prompt.model) if _is_path(prompt.model) else prompt.model,
            encoder=_file_name(prompt.encoder) if _is_path(prompt.encoder) else prompt.encoder,
        )
        for prompt in prompts
    )


def check_recorded_reference_images(
    prompts: tuple[ImagePrompt, ...], source: str, inputs_dir: Path
) -> None:
    """Recorded reference images and masks are used only from the inputs folder, where
    sdstudio keeps a copy of every one it used: a record read from elsewhere could name
    any file."""
    from sdstudio.engine.models.lookup import is_inside

    for prompt in prompts:
        for path, what in [(image, "reference image") for image in prompt.images] + (
            [(prompt.mask, "image prompt mask")] if prompt.mask else []
        ):
            if not is_inside(Path(path), [inputs_dir]):
                raise InvalidRequest(
                    f"The {what} of {source} is missing: sdstudio re-runs only {what}s kept "
                    f"in its inputs folder ({inputs_dir}), and {path} is not there. Start "
                    "again with 'sdstudio-cli generate --ip-adapter'."
                )
            if not Path(path).is_file():
                raise InvalidRequest(f"The {what} {path} of {source} is gone.")


def _is_path(name: str) -> bool:
    text = name.replace("\\", "/")
    return text.startswith(("/", "~", ".")) or "/.." in text or (len(text) > 1 and text[1] == ":")


def _file_name(name: str) -> str:
    return Path(name.replace("\\", "/")).name
