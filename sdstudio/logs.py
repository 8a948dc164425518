"""Logging to a file in the app's log folder, and keeping libraries quiet."""

from __future__ import annotations

import logging
import logging.handlers
import os
import warnings
from pathlib import Path

_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"


def configure_logging(log_file: Path, level: int = logging.INFO) -> Path | None:
    """Send sdstudio's log records to ``log_file`` (rotated at 2 MB).

    Returns the file, or ``None`` when it cannot be written (logging then
    stays off rather than failing the program).
    """
    root = logging.getLogger("sdstudio")
    root.setLevel(level)
    for handler in list(root.handlers):
        if isinstance(handler, logging.handlers.RotatingFileHandler):
            root.removeHandler(handler)
            handler.close()
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=2_000_000, backupCount=3, encoding="utf-8", delay=True
        )
    except OSError:
        return None
    handler.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(handler)
    root.propagate = False
    return log_file


def quiet_third_party() -> None:
    """Silence the progress bars and advice that diffusers and transformers print.

    Call before they are imported; their errors still reach sdstudio as
    exceptions.
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for module in ("diffusers", "transformers", "torchsde", "torch", "huggingface_hub"):
        warnings.filterwarnings("ignore", module=module)
    warnings.filterwarnings("ignore", category=FutureWarning)
