"""The Qt-free core of sdstudio: requests, models, generation, metadata, storage.

Importing this package is cheap: torch and diffusers are imported only by the
functions that need them, so a front end can show its window first.
"""

from sdstudio.engine.errors import (
    DeviceError,
    GenerationCancelled,
    ImageInputError,
    InvalidRequest,
    ModelError,
    OutOfMemory,
    SdStudioError,
    StorageError,
)
from sdstudio.engine.request import GenerationRequest, Mode

__all__ = [
    "DeviceError",
    "GenerationCancelled",
    "GenerationRequest",
    "ImageInputError",
    "InvalidRequest",
    "Mode",
    "ModelError",
    "OutOfMemory",
    "SdStudioError",
    "StorageError",
]
