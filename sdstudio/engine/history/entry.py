"""What the history returns: one entry per image, and which entries to list."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdstudio.engine.request import GenerationRequest


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One image in the history."""

    id: int
    path: str
    created: str
    prompt: str
    negative_prompt: str
    model_name: str
    model_hash: str
    seed: int
    width: int
    height: int
    mode: str
    sampler: str
    duration_s: float
    source: str
    favorite: bool
    request_json: str
    record_json: str

    @property
    def request(self) -> GenerationRequest:
        """The request that re-creates this image."""
        return GenerationRequest.from_json(self.request_json)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary, with the full request."""
        return {
            "id": self.id,
            "path": self.path,
            "created": self.created,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "model": self.model_name,
            "model_hash": self.model_hash,
            "seed": self.seed,
            "width": self.width,
            "height": self.height,
            "mode": self.mode,
            "sampler": self.sampler,
            "duration_s": self.duration_s,
            "source": self.source,
            "favorite": self.favorite,
            "request": self.request.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """Which entries to list: all by default, newest first."""

    search: str = ""
    favorites: bool = False
    model: str = ""
