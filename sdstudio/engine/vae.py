"""VAE override files: found by path or by name, loaded to fit the model in memory.

A VAE file replaces the model's own autoencoder (the part that turns latents
into pixels); users pick one to fix washed-out colours or NaN images in half
precision. Files in the original layout (``encoder.down.0…``, as A1111 and
ComfyUI keep them, with or without the ``first_stage_model.`` prefix) and in
the diffusers layout both load, as do diffusers VAE folders. The new VAE takes
the configuration of the model's own (scaling factor, upcasting), so a file of
another architecture is refused with a message instead of giving noise.

A VAE the user names (``--vae``, the app's VAE box, the settings) is found by
path or by name with :func:`find_vae`; one named by an image's metadata only
in the VAE folders, with :func:`find_recorded_vae`.

Pickles are read only through the restricted loader of
:mod:`sdstudio.engine.models.loading`. Nothing here imports Qt.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import InvalidRequest, ModelError, first_line
from sdstudio.engine.models.lookup import is_inside
from sdstudio.engine.network_files import find_file

log = logging.getLogger(__name__)

VAE_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")
VAE_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def find_vae(value: str, folders: Iterable[Path]) -> Path:
    """The VAE that ``value`` names: a path, or a file name or stem in ``folders``.

    Records written by AUTOMATIC1111 name the VAE by file name
    (``VAE: vae-ft-mse-840000-ema-pruned.safetensors``); a re-run finds it in
    the user's VAE folders.
    """
    path = Path(value).expanduser()
    if path.exists():
        return path.resolve()
    folders = [Path(folder) for folder in folders]
    found = _find_by_name(value, folders)
    if found is None:
        raise InvalidRequest(f"The VAE '{value}' was not found (looked in {_where(folders)}).")
    return found


def find_recorded_vae(value: str, folders: Iterable[Path], also: Iterable[Path] = ()) -> Path:
    """The VAE that an image's metadata names, found only in the VAE ``folders``.

    A path is taken when it lies in ``folders`` or ``also`` (the Hugging Face
    cache); otherwise its file name is looked up in ``folders``, as for a name
    recorded by AUTOMATIC1111. Raises :class:`InvalidRequest` when nothing
    there has the name.
    """
    folders = [Path(folder) for folder in folders]
    path = None
    with contextlib.suppress(RuntimeError):  # ~user of an unknown user
        path = Path(value).expanduser()
    if path is not None and path.is_absolute() and is_inside(path, [*folders, *also]):
        with contextlib.suppress(OSError, ValueError):
            if path.exists():
                return path.resolve()
    found = _find_by_name(value, folders)
    if found is None:
        raise InvalidRequest(
            f"The VAE '{value}' named by the image is not in the VAE folders "
            f"(looked in {_where(folders)})."
        )
    return found


def _find_by_name(value: str, folders: list[Path]) -> Path | None:
    """The VAE file in ``folders`` whose name is the last part of ``value``."""
    name = Path(value.replace("\\", "/")).name  # ComfyUI on Windows records "SDXL\\x.safetensors"
    stem = Path(name).stem if Path(name).suffix.lower() in VAE_SUFFIXES else name
    if not stem or stem in (".", ".."):
        return None
    found = find_file(stem, folders, VAE_SUFFIXES)
    return found.resolve() if found is not None else None


def _where(folders: list[Path]) -> str:
    return ", ".join(str(folder) for folder in folders) or "no VAE folders are set"


def vae_display_name(path: Path) -> str:
    """The name A1111 records: the file name, or the folder name of a diffusers VAE."""
    return path.name


def load_vae(path: Path, reference: Any) -> Any:
    """An ``AutoencoderKL`` from ``path`` with ``reference``'s config, dtype and device.

    Raises :class:`ModelError` with the reason when the file is not a VAE
    for this model.
    """
    from diffusers import AutoencoderKL

    log.info("Loading VAE %s", path)
    try:
        if path.is_dir():
            vae = AutoencoderKL.from_pretrained(path, local_files_only=True, dtype=reference.dtype)
            _check_same_shape(vae, reference, path)
        else:
            state = _read_state_dict(path)
            _check_is_vae(state, path)
            with tempfile.TemporaryDirectory(prefix="sdstudio-vae-") as config:
                reference.save_config(config)
                vae = AutoencoderKL.from_single_file(
                    state, config=config, local_files_only=True, dtype=reference.dtype
                )
    except ModelError:
        raise
    except MemoryError:
        raise ModelError(f"Not enough memory to load the VAE {path.name}.") from None
    except Exception as error:  # diffusers raises many types for a mismatched file
        log.exception("Loading the VAE %s failed", path)
        raise ModelError(
            f"{path.name} does not fit this model's VAE ({first_line(error, 300)}); "
            "choose a VAE made for the model's family."
        ) from None
    return vae.to(reference.device)


def _read_state_dict(path: Path) -> dict[str, Any]:
    from sdstudio.engine.models.loading import PICKLE_SUFFIXES, load_pickle_state_dict

    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return load_pickle_state_dict(path)
    if suffix != ".safetensors":
        raise ModelError(f"{path.name} is not a VAE file (.safetensors, .pt, .ckpt or .bin).")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(
            f"The VAE {path.name} could not be read: it is truncated or damaged "
            f"({first_line(error, 300)})."
        ) from None


def _check_is_vae(state: dict[str, Any], path: Path) -> None:
    """Refuse files that hold no autoencoder (a LoRA, an embedding)."""
    keys = [key.removeprefix("first_stage_model.") for key in state]
    if not any(key.startswith("decoder.") for key in keys):
        raise ModelError(
            f"{path.name} is not a VAE: it holds no decoder weights "
            "(LoRA and embedding files go in the prompt instead)."
        )


def _check_same_shape(vae: Any, reference: Any, path: Path) -> None:
    ours = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    theirs = {key: tuple(value.shape) for key, value in vae.state_dict().items()}
    if ours != theirs:
        raise ModelError(
            f"{path.name} is a VAE of another architecture; choose one made for this model's "
            "family."
        )


LARGE_DECODE_PIXELS = 1536 * 1536
"""Above this many pixels a VAE decode on the CPU goes tile by tile (diffusers' tiling:
tiles of the VAE's own size that overlap and blend), so its memory stays bounded: the
untiled decode of SD's VAE holds several full-size 128-channel activations at once,
about 8 GB in float32 at 2048x2048. Below it the decode stays whole, as before."""


def guard_cpu_decode(vae: Any, large_pixels: int = LARGE_DECODE_PIXELS) -> None:
    """Make ``vae``'s decode on the CPU safe and bounded, in place.

    A decode in half precision (bfloat16) that gives NaN or infinity from finite latents
    is done again in float32, with a float32 copy of the VAE made for it and dropped
    after, and the log says so once for the VAE; the result is then exact, so a re-run
    on the same machine takes the same way. Images over ``large_pixels`` pixels decode
    in tiles (:data:`LARGE_DECODE_PIXELS`); a VAE the memory plan tiles stays tiled.
    Calling it again on the same VAE changes nothing; a copy of the VAE (``deepcopy``)
    keeps the guard, bound to the copy.
    """
    if getattr(vae, "_sdstudio_tiling", None) is not None or not hasattr(vae, "decode"):
        return
    vae._sdstudio_tiling = (bool(getattr(vae, "use_tiling", False)), large_pixels)
    vae.decode = types.MethodType(_guarded_decode, vae)


def _guarded_decode(vae: Any, z: Any, *args: Any, **kwargs: Any) -> Any:
    """The decode :func:`guard_cpu_decode` puts in ``vae``."""
    import torch

    planned, large_pixels = vae._sdstudio_tiling
    factor = 2 ** (len(getattr(vae.config, "block_out_channels", (0,) * 4)) - 1)
    tiled = planned or int(z.shape[-1]) * int(z.shape[-2]) * factor * factor > large_pixels
    vae.use_tiling = tiled
    try:
        result = type(vae).decode(vae, z, *args, **kwargs)
    finally:
        vae.use_tiling = planned  # an encode (image-to-image) tiles only as planned
    if z.dtype == torch.float32:
        return result
    sample = result[0] if isinstance(result, tuple) else result.sample
    if bool(torch.isfinite(sample).all()):
        return result
    if not bool(torch.isfinite(z).all()):
        log.warning("The latents to decode hold NaN or infinity: the image will be black.")
        return result
    if not getattr(vae, "_sdstudio_fell_back", False):
        log.warning(
            "The VAE decode in %s gave NaN or infinity; decoding again in float32 "
            "(slower; said once for this VAE).",
            str(z.dtype).removeprefix("torch."),
        )
        vae._sdstudio_fell_back = True
    else:
        log.info("Decoding again in float32 (NaN or infinity in %s).", z.dtype)
    return _decode_float32(vae, z, tiled, args, kwargs)


def _decode_float32(vae: Any, z: Any, tiled: bool, args: tuple[Any, ...], kwargs: Any) -> Any:
    """``z`` decoded by a float32 copy of ``vae`` (the result in float32)."""
    import copy

    import torch

    exact = copy.deepcopy(vae).float()
    with contextlib.suppress(AttributeError):
        del exact.decode  # the copy's own class method, not the guard
    exact.use_tiling = tiled
    with torch.inference_mode():
        return exact.decode(z.to(torch.float32), *args, **kwargs)
