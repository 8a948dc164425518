"""sdstudio's own metadata record, stored in every image it writes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.request import GenerationRequest

RECORD_KEY = "sdstudio"
RECORD_FORMAT = "sdstudio"
RECORD_VERSION = 1


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
        """Parse the ``sdstudio`` chunk, or raise :class:`InvalidRequest`."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError, ValueError) as error:
            raise InvalidRequest(f"The sdstudio record is not valid JSON: {error}.") from None
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise InvalidRequest("The sdstudio record has an unknown format.")
        version = data.get("version")
        if not isinstance(version, int) or version > RECORD_VERSION:
            raise InvalidRequest(
                f"The sdstudio record has version {version!r}; this version reads up to "
                f"{RECORD_VERSION}. Please update sdstudio."
            )
        request = GenerationRequest.from_dict(data.get("request"))  # type: ignore[arg-type]
        extra = data.get("extra")
        try:
            return cls(
                request=request,
                model_name=str(data.get("model_name", "")),
                model_hash=str(data.get("model_hash", "")),
                device=str(data.get("device", "")),
                duration_s=float(data.get("duration_s", 0.0)),
                created=str(data.get("created", "")),
                app_version=str(data.get("app_version", "")),
                extra=extra if isinstance(extra, dict) else {},
            )
        except (TypeError, ValueError) as error:
            raise InvalidRequest(f"The sdstudio record is malformed: {error}.") from None
