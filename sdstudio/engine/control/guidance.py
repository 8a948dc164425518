"""Running a request's control units on the model's pipeline."""

from __future__ import annotations

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.request import GenerationRequest


def check_control(request: GenerationRequest) -> None:
    """Refuse, before any model loads, control units that cannot guide this request."""
    if request.control:
        raise InvalidRequest(
            "ControlNet units cannot guide a generation yet; remove them to generate."
        )
