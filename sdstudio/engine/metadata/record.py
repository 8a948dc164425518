"""sdstudio's own metadata record, stored in every image it writes."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata.safe_text import parse_json
from sdstudio.engine.metadata.safe_text import text as text_of
from sdstudio.engine.metadata.values import as_float
from sdstudio.engine.request import MAX_SEED, REQUEST_SCHEMA_VERSION, GenerationRequest

RECORD_KEY = "sdstudio"
RECORD_FORMAT = "sdstudio"
RECORD_VERSION = 1
_PATHS = ("init_image", "mask")
# No setting but the seed (up to MAX_SEED) comes near this; larger numbers would
# fill messages with digits.
_LARGEST = 2**63


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """How one image was made.

    ``request`` re-creates exactly this image: its seed is the one this image
    used and its batch size is 1, even when the image came from a batch.
    """

    request: GenerationRequest
    model_name: str = ""
    model_hash: str = ""
    device: str = ""
    duration_s: float = 0.0
    created: str = ""
    app_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The JSON text stored in the image's ``sdstudio`` chunk."""
        data = {
            "format": RECORD_FORMAT,
            "version": RECORD_VERSION,
            "request": self.request.to_dict(),
            "model_name": self.model_name,
            "model_hash": self.model_hash,
            "device": self.device,
            "duration_s": round(self.duration_s, 3),
            "created": self.created,
            "app_version": self.app_version,
        }
        if self.extra:
            data["extra"] = self.extra
        return json.dumps(data, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ImageRecord:
        """Parse the ``sdstudio`` chunk, or raise :class:`InvalidRequest`.

        Its strings are cleaned like every text read from an image (see
        :func:`~sdstudio.engine.metadata.safe_text.clean_text`).
        """
        data = parse_json(text, "The sdstudio record")
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise InvalidRequest("The sdstudio record has an unknown format.")
        version = data.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InvalidRequest(
                f"The sdstudio record is damaged: its version {_shown(version)} "
                "is not a version number."
            )
        if version > RECORD_VERSION:
            raise InvalidRequest(
                f"The sdstudio record has version {version}; this version reads up to "
                f"{RECORD_VERSION}. Please update sdstudio."
            )
        extra = data.get("extra")
        duration = as_float(data.get("duration_s"))
        return cls(
            request=_request(data.get("request")),
            model_name=text_of(data.get("model_name")),
            model_hash=text_of(data.get("model_hash")),
            device=text_of(data.get("device")),
            duration_s=duration if duration is not None and duration >= 0 else 0.0,
            created=text_of(data.get("created")),
            app_version=text_of(data.get("app_version")),
            extra=extra if isinstance(extra, dict) else {},
        )


def _request(data: object) -> GenerationRequest:
    """The record's request; values no request can hold are refused with a short message."""
    if not isinstance(data, dict):
        raise InvalidRequest("The sdstudio record holds no generation request.")
    schema = data.get("schema", REQUEST_SCHEMA_VERSION)
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        raise InvalidRequest(
            f"The sdstudio record is damaged: its request schema {_shown(schema)} "
            "is not a version number."
        )
    for name, value in data.items():
        if name in _PATHS and value is not None and not isinstance(value, str):
            raise InvalidRequest(f"The sdstudio record's {name.replace('_', ' ')} is not a path.")
        number = isinstance(value, int | float) and not isinstance(value, bool)
        largest = MAX_SEED if name in ("seed", "variation_seed") else _LARGEST
        if number and (not math.isfinite(value) or abs(value) > largest):
            raise InvalidRequest(f"The sdstudio record's {name.replace('_', ' ')} is out of range.")
    try:
        return GenerationRequest.from_dict(data)
    except InvalidRequest:
        raise
    except (TypeError, ValueError, ArithmeticError) as error:
        raise InvalidRequest(f"The sdstudio record is malformed ({error}).") from None


def _shown(value: object) -> str:
    """A short display of a JSON value for a message."""
    if not isinstance(value, str | int | float | None):
        return f"of type {type(value).__name__}"
    shown = repr(value)
    return shown if len(shown) <= 40 else f"{shown[:36]}...{shown[-1]}"
