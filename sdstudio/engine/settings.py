"""User settings, stored as versioned JSON in the config folder.

Keys this version does not know (written by a newer one) are kept when the
file is saved again, so going back and forth between versions loses nothing.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.fileio import write_atomically
from sdstudio.engine.paths import AppPaths

SETTINGS_VERSION = 1


@dataclass(frozen=True, slots=True)
class Settings:
    """What the user has chosen; empty values mean the default."""

    outputs_dir: str = ""
    """Where images are saved (default: the platform's Pictures folder)."""
    device: str = "auto"
    theme: str = "system"
    """The app's look: system, light or dark."""
    memory: str = "auto"
    """How models use GPU memory: auto (from the model's size and the free VRAM), fast,
    balanced (slicing and tiling), low (components offloaded to main memory), group
    (layers streamed from main memory) or sequential (each layer moved when used)."""
    previews: str = "auto"
    """How step previews are drawn: auto (the tiny VAE of the model's family where one is
    found, else the fast approximation), tiny (the same, saying when none is found) or
    linear (always the fast approximation). See :mod:`sdstudio.engine.tiny_vae`."""
    compile: str = "off"
    """Whether the denoiser is compiled with ``torch.compile``: off or on (faster on CUDA
    GPUs after a slow first image of each size; see :mod:`sdstudio.engine.compiled`)."""
    model_folders: tuple[str, ...] = ()
    """Folders the user added whose models are listed where they are (never copied)."""
    downloaded_models: tuple[str, ...] = ()
    """Hugging Face repo ids the app downloaded itself (only these may be removed by it)."""
    model_vaes: dict[str, str] = field(default_factory=dict)
    """Model path → the VAE file chosen for it (models not listed use their own)."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def compile_denoiser(self) -> bool:
        """Whether the denoiser is compiled (the ``compile`` setting is on)."""
        return self.compile == "on"

    def vae_for(self, model: str) -> str:
        """The VAE chosen for ``model``; empty for the model's own."""
        return self.model_vaes.get(model_key(model), "")

    def outputs_path(self, paths: AppPaths) -> Path:
        """The outputs folder in effect."""
        return Path(self.outputs_dir).expanduser() if self.outputs_dir else paths.outputs_dir


MEMORY_MODES = ("auto", "fast", "balanced", "low", "group", "sequential")
"""The values of ``memory`` (:data:`sdstudio.engine.memory.MEMORY_MODES`)."""
PREVIEW_MODES = ("auto", "tiny", "linear")
"""The values of ``previews`` (:data:`sdstudio.engine.tiny_vae.PREVIEW_MODES`)."""
COMPILE_MODES = ("off", "on")
"""The values of ``compile``."""
LIST_KEYS = ("model_folders", "downloaded_models")
"""Settings that hold a list of text; changed by their own commands, not by ``change_setting``."""
MAP_KEYS = ("model_vaes",)
"""Settings that map text to text; changed by their own commands."""
KEYS = tuple(f.name for f in fields(Settings) if f.name not in ("extra", *LIST_KEYS, *MAP_KEYS))
"""Settings that hold one text value."""


def load_settings(paths: AppPaths) -> Settings:
    """Read the settings file; a missing or unreadable file gives the defaults."""
    data: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads(paths.settings_file.read_text("utf-8"))
        if isinstance(loaded, dict):
            data = loaded
    known: dict[str, Any] = {k: str(data[k]) for k in KEYS if isinstance(data.get(k), str)}
    for key in LIST_KEYS:
        value = data.get(key)
        if isinstance(value, list):
            known[key] = tuple(str(item) for item in value if isinstance(item, str) and item)
    for key in MAP_KEYS:
        value = data.get(key)
        if isinstance(value, dict):
            known[key] = {
                str(k): v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)
            }
    extra = {k: v for k, v in data.items() if k not in (*KEYS, *LIST_KEYS, *MAP_KEYS, "version")}
    return Settings(**known, extra=extra)


def save_settings(paths: AppPaths, settings: Settings) -> None:
    """Write the settings file atomically."""
    data = {**settings.extra, "version": SETTINGS_VERSION}
    data.update({key: getattr(settings, key) for key in KEYS})
    data.update({key: list(getattr(settings, key)) for key in LIST_KEYS})
    data.update({key: dict(getattr(settings, key)) for key in MAP_KEYS})
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    write_atomically(paths.settings_file, text.encode("utf-8"))


def choose_vae(settings: Settings, model: str, vae: str) -> Settings:
    """A copy where ``model`` uses ``vae`` (empty: the model's own VAE)."""
    key = model_key(model)
    chosen = {k: v for k, v in settings.model_vaes.items() if k != key}
    if vae:
        chosen[key] = vae
    return replace(settings, model_vaes=chosen)


def model_key(model: str) -> str:
    """How a model is named in settings: its absolute path when it exists."""
    path = Path(model).expanduser()
    with contextlib.suppress(OSError):
        if path.exists():
            return str(path.resolve())
    return model


def change_setting(settings: Settings, key: str, value: str) -> Settings:
    """A copy with one setting changed, or :class:`InvalidRequest` for unknown keys."""
    if key not in KEYS:
        raise InvalidRequest(f"Unknown setting {key!r}; settings: {', '.join(KEYS)}.")
    if key == "device" and value not in ("auto", "cpu", "cuda", "mps"):
        raise InvalidRequest("device must be one of: auto, cpu, cuda, mps.")
    if key == "theme" and value not in ("system", "light", "dark"):
        raise InvalidRequest("theme must be one of: system, light, dark.")
    if key == "memory" and value not in MEMORY_MODES:
        raise InvalidRequest(f"memory must be one of: {', '.join(MEMORY_MODES)}.")
    if key == "previews" and value not in PREVIEW_MODES:
        raise InvalidRequest(f"previews must be one of: {', '.join(PREVIEW_MODES)}.")
    if key == "compile" and value not in COMPILE_MODES:
        raise InvalidRequest(f"compile must be one of: {', '.join(COMPILE_MODES)}.")
    if key == "outputs_dir" and value:
        value = str(Path(value).expanduser().resolve())
    changes: dict[str, Any] = {key: value}
    return replace(settings, **changes)
