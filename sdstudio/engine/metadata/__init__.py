"""Generation settings stored inside images: writing sdstudio's, reading them back.

Every image sdstudio writes carries two PNG text chunks: ``parameters``
(AUTOMATIC1111's format, which most tools read) and ``sdstudio`` (the full
:class:`ImageRecord` as JSON, which re-creates the image exactly).

Images from other tools are read too, each format in its own module:
AUTOMATIC1111 (``a1111``, also from JPEG/WebP EXIF through ``exif``),
ComfyUI (``comfyui``), InvokeAI (``invokeai``, ``invokeai2``), Fooocus
(``fooocus``), NovelAI (``novelai``), SwarmUI (``swarmui``), Stability
Matrix (``stabilitymatrix``), TensorArt (``tensorart``) and the settings
JSON of diffusers web demos (``webdemo``); ``stealth``
reads the settings some tools hide in the pixels' lowest bits; ``names``
maps their sampler names onto sdstudio's and ``values`` makes their values
valid for a :class:`GenerationRequest`.
``files`` reads the texts from a file without decoding its pixels, within
size limits, and makes them safe to store and print.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from PIL.PngImagePlugin import PngInfo

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import upscale_names
from sdstudio.engine.metadata.a1111 import (
    PARAMETERS_KEY,
    format_parameters,
    parse_parameters,
    read_parameters,
)
from sdstudio.engine.metadata.comfyui import PROMPT_KEY, WORKFLOW_KEY, read_comfyui
from sdstudio.engine.metadata.files import read_texts
from sdstudio.engine.metadata.fooocus import SCHEME_KEY, read_fooocus
from sdstudio.engine.metadata.invokeai import METADATA_KEY, read_invokeai
from sdstudio.engine.metadata.invokeai2 import DREAM_KEY, SD_METADATA_KEY, read_invokeai2
from sdstudio.engine.metadata.novelai import KEYS as NOVELAI_KEYS
from sdstudio.engine.metadata.novelai import read_novelai
from sdstudio.engine.metadata.record import RECORD_KEY, ImageRecord
from sdstudio.engine.metadata.stabilitymatrix import KEYS as STABILITY_MATRIX_KEYS
from sdstudio.engine.metadata.stabilitymatrix import read_stability_matrix
from sdstudio.engine.metadata.stealth import StealthTexts, stealth_texts
from sdstudio.engine.metadata.swarmui import read_swarmui
from sdstudio.engine.metadata.tensorart import GENERATION_DATA_KEY, read_tensorart
from sdstudio.engine.metadata.values import Parsed, guarded
from sdstudio.engine.metadata.webdemo import KEYS as WEBDEMO_KEYS
from sdstudio.engine.metadata.webdemo import read_webdemo
from sdstudio.engine.request import GenerationRequest

# The text chunks any reader looks at.
_KNOWN_KEYS = {
    PARAMETERS_KEY,
    RECORD_KEY,
    SCHEME_KEY,
    PROMPT_KEY,
    WORKFLOW_KEY,
    METADATA_KEY,
    SD_METADATA_KEY,
    DREAM_KEY,
    *NOVELAI_KEYS,
    *STABILITY_MATRIX_KEYS,
    GENERATION_DATA_KEY,
    *WEBDEMO_KEYS,
}

__all__ = [
    "ImageRecord",
    "ImageSettings",
    "format_parameters",
    "parse_parameters",
    "png_info",
    "read_image_settings",
]


@dataclass(frozen=True, slots=True)
class ImageSettings:
    """The generation settings found in an image."""

    source: str
    """Which format they came from: ``"sdstudio"``, ``"a1111"``, ``"comfyui"``,
    ``"invokeai"``, ``"fooocus"``, ``"novelai"`` or ``"swarmui"`` (also when the
    text was hidden in the pixels; the notes then say so)."""
    request: GenerationRequest
    record: ImageRecord | None = None
    parameters: str = ""
    model_name: str = ""
    """The model as the image names it (another tool's file name or path)."""
    notes: tuple[str, ...] = ()
    """What was changed to make the settings valid here, and what was left out."""
    model_hash: str = ""
    """The model's hash as the image gives it (see :attr:`Parsed.model_hash`)."""
    extras: Mapping[str, str] = field(default_factory=dict)
    """Settings read that sdstudio does not apply, by the source's key (see
    :attr:`Parsed.extras`)."""
    read: frozenset[str] = frozenset()
    """The request fields whose values the image held (see :attr:`Parsed.read`); the
    others are sdstudio's defaults. Every field for sdstudio's own record; ``model``
    when the image names a model."""


_ALL_FIELDS = frozenset(f.name for f in dataclasses.fields(GenerationRequest))


def _settings(
    source: str, parsed: Parsed, parameters: str, notes: tuple[str, ...]
) -> ImageSettings:
    """The settings another tool's metadata gave, with what was read from it."""
    read = parsed.read | ({"model"} if parsed.model_name.strip() else set())
    return ImageSettings(
        source,
        parsed.request,
        None,
        parameters,
        parsed.model_name,
        notes,
        parsed.model_hash,
        parsed.extras,
        frozenset(read),
    )


@guarded
def _read_a1111(texts: Mapping[str, str], size: tuple[int, int]) -> Parsed:
    return read_parameters(texts.get(PARAMETERS_KEY, ""))


# Formats other than sdstudio's own record, the most specific shapes first.
# SwarmUI (a ``sui_image_params`` object) and NovelAI (``Software`` "NovelAI")
# are recognised by a mark no other tool writes, and their JSON would
# otherwise be offered to the looser Fooocus reader. Then the most complete:
# Fooocus and AUTOMATIC1111 write one flat, curated set of settings
# (Fooocus's ``parameters`` would also read as A1111 text, but its scheme
# says more); InvokeAI's metadata is flat too; a ComfyUI graph may hold
# several samplers, so its settings are a best guess. The first format that
# yields settings wins.
# Stability Matrix and TensorArt come before AUTOMATIC1111 and ComfyUI: each
# writes its own JSON (``parameters-json``, ``generation_data``) next to A1111
# text or a ComfyUI graph, and that JSON holds the fuller settings. A web
# demo's JSON has a strict shape that excludes Fooocus's, but Fooocus (whose
# scheme names it) is asked first.
_READERS: tuple[tuple[str, Callable[[Mapping[str, str], tuple[int, int]], Parsed]], ...] = (
    ("swarmui", read_swarmui),
    ("novelai", read_novelai),
    ("stabilitymatrix", read_stability_matrix),
    ("tensorart", read_tensorart),
    ("fooocus", read_fooocus),
    ("webdemo", read_webdemo),
    ("a1111", _read_a1111),
    ("invokeai", read_invokeai),
    ("invokeai", read_invokeai2),
    ("comfyui", read_comfyui),
)


def png_info(record: ImageRecord) -> PngInfo:
    """The PNG text chunks for an image: A1111 ``parameters`` (with ``postprocessing`` for
    an image upscaled alone) and the sdstudio record."""
    info = PngInfo()
    parameters = format_parameters(
        record.request,
        model_name=record.model_name,
        model_hash=record.model_hash,
        version=f"sdstudio {record.app_version}".strip(),
        extra=record.extra,
    )
    if parameters:  # an image upscaled from one without settings has none
        info.add_text(PARAMETERS_KEY, parameters)
    postprocessing = upscale_names.postprocessing_text(record.request)
    if postprocessing:
        info.add_text(upscale_names.POSTPROCESSING_KEY, postprocessing)
    info.add_text(RECORD_KEY, record.to_json())
    return info


def read_image_settings(path: str | Path) -> ImageSettings:
    """Read the generation settings stored in an image file.

    sdstudio's own record is preferred; then SwarmUI, NovelAI, Stability
    Matrix, TensorArt, Fooocus, web demos' JSON, AUTOMATIC1111 ``parameters``
    (PNG text, or EXIF UserComment in JPEG and WebP), InvokeAI and ComfyUI, in
    that order. Only the metadata is read
    (see :mod:`~sdstudio.engine.metadata.files` for the limits); the pixels
    are decoded only when it holds nothing, to look for settings hidden in
    them (see :mod:`~sdstudio.engine.metadata.stealth`). Raises
    :class:`~sdstudio.engine.errors.ImageInputError` when the file is not a
    readable PNG, JPEG or WebP image and :class:`InvalidRequest` when it holds
    no settings sdstudio can read.
    """
    found = read_texts(path, _KNOWN_KEYS)
    texts, size = found.texts, found.size
    parameters = texts.get(PARAMETERS_KEY, "")
    record_error: InvalidRequest | None = None
    if RECORD_KEY in texts:
        try:
            record = ImageRecord.from_json(texts[RECORD_KEY])
        except InvalidRequest as error:
            record_error = error
        else:
            return ImageSettings(
                "sdstudio",
                record.request,
                record,
                parameters,
                model_name=record.model_name,
                notes=found.notes,
                model_hash=record.model_hash,
                read=_ALL_FIELDS,
            )
    reading = _first_reading(texts, size)
    if reading is not None:
        source, parsed = reading
        return _settings(source, parsed, parameters, parsed.notes + found.notes)
    if record_error is not None:
        raise record_error
    # Only now, with no other metadata, are the pixels decoded for hidden settings.
    hidden = stealth_texts(path) if not texts and not found.notes else StealthTexts({})
    reading = _first_reading(hidden.texts, size) if hidden.texts else None
    if reading is not None:
        source, parsed = reading
        notes = parsed.notes + hidden.notes + found.notes
        return _settings(source, parsed, hidden.texts.get(PARAMETERS_KEY, ""), notes)
    notes = found.notes + (hidden.notes if not hidden.texts else ())
    left_out = f" {notes[0]}" if notes else ""
    raise InvalidRequest(f"{Path(path).name} holds no generation settings.{left_out}")


def _first_reading(texts: Mapping[str, str], size: tuple[int, int]) -> tuple[str, Parsed] | None:
    """The source and settings of the first reader that recognises ``texts``."""
    for source, read in _READERS:
        try:
            return source, read(texts, size)
        except InvalidRequest:
            continue
    return None
