"""Generation settings stored inside images: writing sdstudio's, reading them back.

Every image sdstudio writes carries two PNG text chunks: ``parameters``
(AUTOMATIC1111's format, which most tools read) and ``sdstudio`` (the full
:class:`ImageRecord` as JSON, which re-creates the image exactly).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from sdstudio.engine.errors import ImageInputError, InvalidRequest
from sdstudio.engine.metadata.a1111 import PARAMETERS_KEY, format_parameters, parse_parameters
from sdstudio.engine.metadata.record import RECORD_KEY, ImageRecord
from sdstudio.engine.request import GenerationRequest

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
    """Which format they came from: ``"sdstudio"`` or ``"a1111"``."""
    request: GenerationRequest
    record: ImageRecord | None = None
    parameters: str = ""


def png_info(record: ImageRecord) -> PngInfo:
    """The PNG text chunks for an image: A1111 ``parameters`` and the sdstudio record."""
    info = PngInfo()
    info.add_text(
        PARAMETERS_KEY,
        format_parameters(
            record.request,
            model_name=record.model_name,
            model_hash=record.model_hash,
            version=f"sdstudio {record.app_version}".strip(),
        ),
    )
    info.add_text(RECORD_KEY, record.to_json())
    return info


def read_image_settings(path: str | Path) -> ImageSettings:
    """Read the generation settings stored in an image file.

    sdstudio's own record is preferred; A1111 ``parameters`` are the fallback.
    Raises :class:`ImageInputError` when the file is not a readable image and
    :class:`InvalidRequest` when it holds no settings sdstudio can read.
    """
    texts = _text_chunks(path)
    parameters = texts.get(PARAMETERS_KEY, "")
    record_error: InvalidRequest | None = None
    if RECORD_KEY in texts:
        try:
            record = ImageRecord.from_json(texts[RECORD_KEY])
        except InvalidRequest as error:
            record_error = error
        else:
            return ImageSettings("sdstudio", record.request, record, parameters)
    if parameters:
        return ImageSettings("a1111", parse_parameters(parameters), None, parameters)
    if record_error is not None:
        raise record_error
    raise InvalidRequest(f"{Path(path).name} holds no generation settings.")


def _text_chunks(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise ImageInputError(f"The image {path} does not exist.")
    try:
        with warnings.catch_warnings():
            # Only the header and text chunks are read, never the pixels.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                raw = dict(image.info)
                if image.format == "PNG" and not raw.keys() & {PARAMETERS_KEY, RECORD_KEY}:
                    # Chunks written after the pixel data are read only on load.
                    raw.update(image.text)  # type: ignore[attr-defined]
    except UnidentifiedImageError:
        raise ImageInputError(f"The file {path} is not an image sdstudio can read.") from None
    except Image.DecompressionBombError:
        raise ImageInputError(f"The image {path} is too large to open safely.") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageInputError(f"The image {path} is damaged or truncated ({error}).") from None
    return {str(k): v for k, v in raw.items() if isinstance(v, str)}
