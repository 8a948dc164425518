"""Errors the engine reports to users.

Every error a user can cause or meet (a bad setting, a missing model, an
unreadable image, a full disk, no memory) is an :class:`SdStudioError` whose
message is one clear sentence; front ends show it as it is.
"""

from __future__ import annotations


class SdStudioError(Exception):
    """An error with a message meant for the user."""


class InvalidRequest(SdStudioError, ValueError):
    """A generation setting is out of range or unknown."""


class ModelError(SdStudioError):
    """A model cannot be found, read or used."""


class ImageInputError(SdStudioError):
    """An input image or mask cannot be used."""


class DeviceError(SdStudioError):
    """The requested device is not available."""


class OutOfMemory(SdStudioError):
    """The device ran out of memory."""


class StorageError(SdStudioError):
    """An image or file could not be written."""


class GenerationCancelled(SdStudioError):
    """The user cancelled the generation; nothing was written."""

    def __init__(self, message: str = "Generation cancelled.") -> None:
        super().__init__(message)


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its type name when it has none),
    cut to ``limit`` characters: libraries' errors can run to pages."""
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line[:limit] if limit is not None else line
