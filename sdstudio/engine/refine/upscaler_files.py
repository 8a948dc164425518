"""Upscaler model files (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT and the other
architectures spandrel knows): finding them by name where users keep them, and
loading them without running any code they hold.

A1111 names its upscalers by file stem (``4x-UltraSharp``) and a few built-in ones
by display names (``R-ESRGAN 4x+``) whose files it downloads under known stems
(``RealESRGAN_x4plus.pth``); both kinds of names are found here, as are paths.

Loading reads tensors only: ``.safetensors`` with safetensors, pickles (``.pth``,
``.pt``, ``.ckpt``) with ``torch.load(weights_only=True)``, which refuses anything
but tensors and plain containers. spandrel then recognises the architecture from the
tensor names and shapes. (spandrel's own ``load_from_file`` would open ``.pt`` files
as TorchScript, which runs code, so it is not used.)
"""

from __future__ import annotations

import contextlib
import logging
import threading
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import ModelError
from sdstudio.engine.network_files import find_file

log = logging.getLogger(__name__)

UPSCALER_SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt")
RESIZES = {"lanczos": "Lanczos", "nearest": "Nearest", "none": "None"}
"""Built-in upscalers that resize with Pillow; A1111's ``None`` is a Lanczos resize."""

A1111_UPSCALERS: dict[str, tuple[str, ...]] = {
    "ESRGAN_4x": ("ESRGAN_4x", "ESRGAN"),
    "R-ESRGAN 4x+": ("RealESRGAN_x4plus",),
    "R-ESRGAN 4x+ Anime6B": ("RealESRGAN_x4plus_anime_6B",),
    "R-ESRGAN 2x+": ("RealESRGAN_x2plus",),
    "R-ESRGAN General 4xV3": ("realesr-general-x4v3",),
    "R-ESRGAN General WDN 4xV3": ("realesr-general-wdn-x4v3",),
    "R-ESRGAN AnimeVideo": ("realesr-animevideov3",),
    "SwinIR 4x": ("SwinIR_4x", "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN"),
    "ScuNET": ("scunet_color_real_psnr", "scunet_color_real_gan"),
    "ScuNET GAN": ("scunet_color_real_gan",),
    "ScuNET PSNR": ("scunet_color_real_psnr",),
    "DAT x2": ("DAT_x2",),
    "DAT x3": ("DAT_x3",),
    "DAT x4": ("DAT_x4",),
}
"""A1111's display names of the upscalers it downloads, and the file stems it (and
ComfyUI users) keep them under."""

UNSUPPORTED_A1111 = {
    "ldsr": "LDSR is a latent diffusion upscaler, not an image model sdstudio can run",
}

CHECKPOINT_PREFIXES = (
    "model.diffusion_model.",
    "first_stage_model.",
    "cond_stage_model.",
    "conditioner.",
)
"""Tensor names of Stable Diffusion checkpoints (never an upscaler's)."""


def resize_upscaler(name: str) -> str | None:
    """``Lanczos``, ``Nearest`` or ``None`` (any case), as A1111 spells it, else ``None``."""
    return RESIZES.get(name.strip().casefold())


def display_name(upscaler: str | Path) -> str:
    """The name A1111 records for an upscaler: a file's stem (``4x-UltraSharp`` for
    ``/models/ESRGAN/4x-UltraSharp.pth``), else the name as given."""
    text = str(upscaler).strip()
    name = Path(text.replace("\\", "/")).name
    if Path(name).suffix.lower() in UPSCALER_SUFFIXES:
        return Path(name).stem
    return name if "/" in text or "\\" in text else text


def find_upscaler(
    upscaler: str | Path,
    folders: Iterable[Path],
    *,
    built_in: Iterable[str] = (),
    what: str = "upscaler",
) -> Path:
    """The upscaler file ``upscaler`` names: a path, a file name or stem (any case) in
    ``folders`` and their sub-folders, or one of A1111's display names
    (:data:`A1111_UPSCALERS`).

    Raises :class:`ModelError` naming the folders searched and the ``built_in``
    upscalers the caller offers instead (``what`` names the setting: ``hires upscaler``).
    """
    text = str(upscaler).strip()
    folders = [Path(folder) for folder in folders]
    if not text:
        raise ModelError("No upscaler was given.")
    reason = UNSUPPORTED_A1111.get(text.casefold())
    if reason:
        raise ModelError(f"{reason}; choose another upscaler.")
    path = Path(text).expanduser()
    with contextlib.suppress(OSError):
        if path.is_file():
            if path.suffix.lower() not in UPSCALER_SUFFIXES:
                raise ModelError(
                    f"{path.name} is not an upscaler file: upscalers are "
                    f"{', '.join(UPSCALER_SUFFIXES)} files."
                )
            return path.resolve()
    for stem in _stems(text):
        found = find_file(stem, folders, UPSCALER_SUFFIXES)
        if found is not None:
            return found.resolve()
    where = ", ".join(str(folder) for folder in folders)
    missing = (
        f"no upscaler file (.pth, .safetensors) of that name is in {where}"
        if where
        else "it is no file, and no upscaler folders are set to look in"
    )
    offered = ", ".join(built_in) or ", ".join(RESIZES.values())
    raise ModelError(
        f"The {what} {text!r} was not found: {missing}. Built-in upscalers: {offered}. "
        "Upscaler files are found in A1111's models/ESRGAN, ComfyUI's "
        "models/upscale_models and sdstudio's models/upscalers folders."
    )


def _stems(text: str) -> list[str]:
    """The file stems a name may be kept under: its A1111 files, then itself."""
    aliases = {key.casefold(): stems for key, stems in A1111_UPSCALERS.items()}
    name = Path(text.replace("\\", "/")).name
    own = Path(name).stem if Path(name).suffix.lower() in UPSCALER_SUFFIXES else name
    stems = [*aliases.get(text.casefold(), ()), own]
    return [s for s in dict.fromkeys(stems) if s and s not in (".", "..")]


@dataclass(frozen=True, slots=True)
class UpscalerModel:
    """A loaded upscaler: spandrel's model descriptor and what it says of the model."""

    path: Path
    architecture: str
    """spandrel's name of the architecture (``ESRGAN``, ``RealESRGAN Compact``, ...)."""
    scale: int
    """How many times larger the model makes an image (1 for a restoration model)."""
    descriptor: Any
    """The ``spandrel.ImageModelDescriptor``, on its device in its precision."""

    @property
    def name(self) -> str:
        """The file's stem, as A1111 names the upscaler."""
        return self.path.stem

    @property
    def tiles(self) -> bool:
        """Whether the model may be run in tiles (spandrel's ``INTERNAL`` models tile or
        need the whole image themselves)."""
        from spandrel import ModelTiling

        return bool(self.descriptor.tiling is not ModelTiling.INTERNAL)


def load_upscaler(path: Path, device: str = "cpu") -> UpscalerModel:
    """Load an upscaler file on ``device`` (float32 on the CPU and MPS; half or bfloat16
    on CUDA where the architecture supports it), in eval mode.

    Raises :class:`ModelError` for a pickle that holds code, a truncated or damaged
    file, a Stable Diffusion checkpoint or part, an architecture spandrel does not
    know, and a model that is not an image upscaler (face restoration, inpainting).
    """
    import torch
    from spandrel import ModelLoader, UnsupportedModelError

    state_dict = read_state_dict(path)
    try:
        descriptor = ModelLoader().load_from_state_dict(state_dict)
    except UnsupportedModelError:
        raise ModelError(
            f"{path.name} is not an upscaler model sdstudio knows: its weights are of no "
            "architecture spandrel recognises (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT and "
            "others)."
        ) from None
    except Exception as error:  # a known architecture's loader failing on odd weights
        log.info("spandrel could not load %s: %s", path, error)
        raise ModelError(
            f"{path.name} looks like an upscaler but its weights do not fit its "
            "architecture: the file is damaged or of a variant spandrel does not know."
        ) from None
    check_usable(descriptor, path)
    descriptor.to(torch.device(device), dtype=run_dtype(descriptor, device)).eval()
    return UpscalerModel(path, str(descriptor.architecture.name), int(descriptor.scale), descriptor)


def check_usable(descriptor: Any, path: Path) -> None:
    """Refuse a spandrel model that does not upscale (or restore) an image alone: a face
    restoration model (GFPGAN, CodeFormer), an inpainting model (LaMa)."""
    from spandrel import ImageModelDescriptor

    architecture = str(descriptor.architecture.name)
    if not isinstance(descriptor, ImageModelDescriptor):
        raise ModelError(f"{path.name} is an inpainting model ({architecture}), not an upscaler.")
    if descriptor.purpose == "FaceSR":
        raise ModelError(
            f"{path.name} is a face restoration model ({architecture}), not an upscaler."
        )
    if descriptor.purpose not in ("SR", "Restoration"):
        raise ModelError(f"{path.name} ({architecture}) is not an upscaler.")


def run_dtype(descriptor: Any, device: str) -> Any:
    """The precision an upscaler runs in on ``device``: float32 but on CUDA, where half
    precision (or bfloat16) is used when the architecture supports it."""
    import torch

    if device.startswith("cuda"):
        if descriptor.supports_half:
            return torch.float16
        if descriptor.supports_bfloat16 and torch.cuda.is_bf16_supported():
            return torch.bfloat16
    return torch.float32


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of an upscaler file, unwrapped from the containers training tools
    save them in (``params_ema``, ``params``, ``state_dict``, ``model``, ...).

    Raises :class:`ModelError` when the file cannot be read, holds code (a pickle that
    needs more than tensors), is TorchScript, or is a Stable Diffusion checkpoint.
    """
    import torch
    from spandrel import canonicalize_state_dict

    suffix = path.suffix.lower()
    if suffix not in UPSCALER_SUFFIXES:
        raise ModelError(f"{path.name} is not an upscaler file ({', '.join(UPSCALER_SUFFIXES)}).")
    data = _read_safetensors(path) if suffix == ".safetensors" else _read_pickle(path)
    if not isinstance(data, dict):
        raise ModelError(f"{path.name} holds no weights (no state dict).")
    data = canonicalize_state_dict(data)
    tensors = {str(k): v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelError(f"{path.name} holds no weights.")
    _refuse_other_models(path, tensors)
    return tensors


def _read_safetensors(path: Path) -> dict[str, Any]:
    """A safetensors file's tensors; its header is read first, so that a checkpoint or
    a LoRA is refused without loading gigabytes."""
    from safetensors.torch import load_file

    from sdstudio.engine.models.layouts import read_safetensors_header

    try:
        header = read_safetensors_header(path)
    except (OSError, ValueError) as error:
        log.info("Cannot read %s: %s", path, error)
        header = None
    if header is not None:
        _refuse_other_models(path, [key for key in header if key != "__metadata__"])
    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises its own error type for bad files
        log.info("Cannot read %s: %s", path, error)
        raise ModelError(
            f"{path.name} could not be read: it is not a complete .safetensors file "
            "(truncated or damaged)."
        ) from None


def _read_pickle(path: Path) -> Any:
    """A pickle's content, rebuilt from tensors and plain containers only."""
    import pickle

    import torch

    from sdstudio.engine.models.loading import pickle_refusal

    if _is_torchscript(path):
        raise ModelError(
            f"{path.name} is a TorchScript file, which runs its own code; sdstudio opens "
            "upscalers saved as weights only (.pth or .safetensors)."
        )
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy format
    except pickle.UnpicklingError:
        raise pickle_refusal(path) from None
    except (OSError, EOFError, RuntimeError, ValueError) as error:
        log.info("Cannot read %s: %s", path, error)
        raise ModelError(f"{path.name} could not be read: it is truncated or damaged.") from None


def _is_torchscript(path: Path) -> bool:
    """Whether a zip-format ``torch.save`` file is a TorchScript archive (``code/``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in f"/{name}" for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _refuse_other_models(path: Path, names: Iterable[str]) -> None:
    """Refuse, with what it is, a Stable Diffusion checkpoint, LoRA, embedding or VAE
    (told by its tensor ``names``)."""
    from sdstudio.engine.models.layouts import kind_from_header

    names = list(names)
    if any(key.startswith(CHECKPOINT_PREFIXES) for key in names):
        raise ModelError(f"{path.name} is a Stable Diffusion checkpoint, not an upscaler.")
    kind = kind_from_header(dict.fromkeys(names), "upscaler")
    if kind != "upscaler":
        label = {"lora": "a LoRA", "embedding": "an embedding", "vae": "a VAE"}[kind]
        raise ModelError(f"{path.name} is {label}, not an upscaler.")


class UpscalerCache:
    """The last upscaler loaded, kept while its file is unchanged (same path, size and
    modification time) and the device the same, so that a batch, or the hires pass of
    every image, loads it once. Only one is kept: loading another frees it first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[object, ...] | None = None
        self._model: UpscalerModel | None = None
        self._hashes: dict[tuple[object, ...], str] = {}

    def get(self, path: Path, device: str = "cpu") -> UpscalerModel:
        """The upscaler in ``path`` on ``device``, loaded unless it is the one kept."""
        key = (*_file_key(path), device)
        with self._lock:
            if self._model is not None and self._key == key:
                return self._model
            self._model = self._key = None  # free the old one before loading
            model = load_upscaler(path, device)
            self._key, self._model = key, model
            return model

    def short_hash(self, path: Path) -> str:
        """A1111's short hash of the file (10 hex digits of its SHA-256), remembered."""
        from sdstudio.engine.hashing import file_sha256

        key = _file_key(path)
        with self._lock:
            if key not in self._hashes:
                self._hashes[key] = file_sha256(path)[:10]
            return self._hashes[key]

    def clear(self) -> None:
        """Forget the upscaler kept, freeing its memory."""
        with self._lock:
            self._model = self._key = None


def _file_key(path: Path) -> tuple[object, ...]:
    """What identifies a file's content cheaply: its path, size and modification time."""
    try:
        stat = path.stat()
    except OSError as error:
        raise ModelError(f"The upscaler file {path} cannot be read: {error.strerror}.") from None
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
