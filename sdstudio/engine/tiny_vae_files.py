"""Tiny VAE files (TAESD and its kin): where users keep them and how they load.

madebyollin's tiny autoencoders decode latents many times faster than a model's own
VAE, a little softer. They come two ways:

- diffusers ``AutoencoderTiny`` folders (``config.json`` + weights), as the Hub repos
  ``madebyollin/taesd``, ``taesdxl``, ``taesd3`` and ``taef1`` hold them (the model
  manager fetches them into ``models/vae_approx`` in the Hub's cache layout);
- the original single files, decoder and encoder apart: ComfyUI's
  ``models/vae_approx/taesd_decoder.safetensors`` (or ``.pth``), ``taesdxl_decoder``,
  ``taesd3_decoder``, ``taef1_decoder`` and the ``*_encoder`` files; AUTOMATIC1111's
  ``models/VAE-approx/taesd_decoder.pt`` (beside its own ``model.pt``, another kind of
  approximation, which is not one of these).

diffusers reads no single tiny VAE file, so the original layout is mapped here. The
original decoder is an ``nn.Sequential`` that starts with a clamp layer (no weights)
and diffusers' ``DecoderTiny.layers`` is the same sequence without it: key ``n.x`` is
``decoder.layers.(n-1).x``. The encoders are the same sequence in both: ``n.x`` is
``encoder.layers.n.x``. The blocks' own names (``conv.0``, ``skip``) are the same.

The file's family is told by its name (the four decoders of 4 and of 16 latent
channels have the same shapes). Pickles are read only through the restricted loader.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import ModelError, first_line

log = logging.getLogger(__name__)

FOLDER_NAME = "vae_approx"
"""sdstudio's folder of tiny VAEs in its models folder (ComfyUI's name)."""
FOLDER_NAMES = ("vae_approx", "VAE-approx", "tiny_vae")
"""Folder names that hold tiny VAEs: ComfyUI's, AUTOMATIC1111's, a plain one."""
SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


@dataclass(frozen=True, slots=True)
class TinyKind:
    """One published tiny VAE and the model families whose latents it decodes."""

    name: str
    """``taesd``, ``taesdxl``, ``taesd3``, ``taef1``: the file-name stem of its files."""
    label: str
    families: tuple[str, ...]
    latent_channels: int
    repo: str
    """The Hub repo of its diffusers folder."""


KINDS = (
    TinyKind("taesdxl", "TAESDXL", ("sdxl", "sdxl-refiner"), 4, "madebyollin/taesdxl"),
    TinyKind("taesd3", "TAESD3", ("sd3",), 16, "madebyollin/taesd3"),
    TinyKind("taesd", "TAESD", ("sd1", "sd2"), 4, "madebyollin/taesd"),
    TinyKind("taef1", "TAEF1", ("flux1", "zimage", "chroma"), 16, "madebyollin/taef1"),
)
"""In the order names are matched (``taesdxl`` and ``taesd3`` before ``taesd``). Flux.2
(32 channels) and Qwen-Image (a Wan VAE) have no published image tiny VAE here: their
previews stay the linear projection."""


@dataclass(frozen=True, slots=True)
class TinyVaeFile:
    """A tiny VAE found on disk."""

    kind: TinyKind
    path: Path
    """The diffusers folder, or the decoder file."""
    encoder: Path | None = None
    """The original layout's encoder file beside the decoder (not needed to decode)."""

    @property
    def diffusers(self) -> bool:
        """Whether it is a diffusers ``AutoencoderTiny`` folder."""
        return self.path.is_dir()


def kind_of(name: str) -> TinyKind | None:
    """The tiny VAE a file or folder name means (``taesdxl_decoder.pth``,
    ``models--madebyollin--taef1``), or None."""
    lowered = name.lower()
    for kind in KINDS:
        if kind.name in lowered:
            return kind
    return None


def kind_for_family(family: str) -> TinyKind | None:
    """The tiny VAE that decodes the latents of ``family`` (a family id), or None."""
    return next((kind for kind in KINDS if family in kind.families), None)


def approx_folders(folders: Iterable[Path]) -> list[Path]:
    """The tiny-VAE folders of ``folders``: each one named as such, or the tiny-VAE
    folders inside it (a models folder holding ``vae_approx``)."""
    found: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if folder.name.lower() in {name.lower() for name in FOLDER_NAMES}:
            found.append(folder)
        else:
            found += [folder / name for name in FOLDER_NAMES if (folder / name).is_dir()]
    return [folder for folder in dict.fromkeys(found) if folder.is_dir()]


def find_tiny_vaes(folders: Iterable[Path]) -> list[TinyVaeFile]:
    """Every tiny VAE in the tiny-VAE folders of ``folders`` (see :func:`approx_folders`):
    diffusers folders (also in the Hub's cache layout) and original decoder files."""
    found: list[TinyVaeFile] = []
    for folder in approx_folders(folders):
        try:
            children = sorted(folder.iterdir())
        except OSError as error:
            log.warning("Cannot list %s: %s", folder, error)
            continue
        for child in children:
            kind = kind_of(child.name)
            if kind is None:
                continue
            if child.is_dir():
                snapshot = diffusers_folder(child)
                if snapshot is not None:
                    found.append(TinyVaeFile(kind, snapshot))
            elif _is_decoder_file(child):
                encoder = _encoder_beside(child)
                found.append(TinyVaeFile(kind, child, encoder))
    return found


def find_for_family(family: str, folders: Iterable[Path]) -> TinyVaeFile | None:
    """The tiny VAE for ``family`` in ``folders``: a diffusers folder first, then a
    decoder file; None when there is none (or the family has no tiny VAE)."""
    kind = kind_for_family(family)
    if kind is None:
        return None
    candidates = [found for found in find_tiny_vaes(folders) if found.kind == kind]
    candidates.sort(key=lambda found: (not found.diffusers, str(found.path)))
    return candidates[0] if candidates else None


def catalog_family(name: str) -> tuple[str, str] | None:
    """The (family id, label) the catalog lists a tiny VAE file or folder under, told by
    its name; None for a file that is not one (A1111's own ``model.pt``, an encoder)."""
    kind = kind_of(name)
    if kind is None or (Path(name).suffix and "decoder" not in name.lower()):
        return None
    return kind.families[0], f"{kind.label} (tiny VAE)"


def _is_decoder_file(path: Path) -> bool:
    stem = path.stem.lower()
    return path.suffix.lower() in SUFFIXES and "decoder" in stem


def _encoder_beside(decoder: Path) -> Path | None:
    name = decoder.name.replace("decoder", "encoder").replace("Decoder", "Encoder")
    for suffix in SUFFIXES:
        candidate = decoder.with_name(Path(name).stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def diffusers_folder(folder: Path) -> Path | None:
    """``folder`` itself when it is an ``AutoencoderTiny`` folder, or the newest complete
    snapshot of a download in the Hub's cache layout (``folder`` is ``models--owner--name``
    or holds one, as the model manager's downloads do)."""
    if _is_tiny_config(folder / "config.json"):
        return folder
    complete = [
        snapshot
        for snapshots in (folder / "snapshots", *folder.glob("models--*/snapshots"))
        if snapshots.is_dir()
        for snapshot in snapshots.iterdir()
        if _is_tiny_config(snapshot / "config.json")
    ]
    complete.sort(key=lambda s: s.stat().st_mtime, reverse=True)
    return complete[0] if complete else None


def _is_tiny_config(config: Path) -> bool:
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("_class_name") == "AutoencoderTiny"


def load_tiny_vae(found: TinyVaeFile, dtype: Any, device: Any = "cpu") -> Any:
    """A diffusers ``AutoencoderTiny`` for ``found`` in ``dtype`` on ``device``.

    Raises :class:`ModelError` with the reason when the files are not a tiny VAE of
    their kind.
    """
    from diffusers import AutoencoderTiny

    log.info("Loading tiny VAE %s", found.path)
    vae: Any
    try:
        if found.diffusers:
            vae = AutoencoderTiny.from_pretrained(found.path, local_files_only=True)
            channels = vae.config.latent_channels
            if channels != found.kind.latent_channels:
                raise ModelError(
                    f"{found.path.name} decodes {channels}-channel latents, not the "
                    f"{found.kind.latent_channels} of {found.kind.label}."
                )
        else:
            vae = AutoencoderTiny(**tiny_config(found.kind))
            state = {
                f"decoder.layers.{_shift(key, found.path)}": value
                for key, value in _original_state(found.path, "decoder").items()
            }
            if found.encoder is not None:
                encoder = _original_state(found.encoder, "encoder")
                state |= {f"encoder.layers.{key}": value for key, value in encoder.items()}
            else:  # decoding needs no encoder: its initial weights stay
                state |= {f"encoder.{k}": v for k, v in vae.encoder.state_dict().items()}
            _load_exactly(vae, state, found.path)
    except ModelError:
        raise
    except MemoryError:
        raise ModelError(f"Not enough memory to load the tiny VAE {found.path.name}.") from None
    except Exception as error:  # diffusers and torch raise many types for a foreign file
        log.exception("Loading the tiny VAE %s failed", found.path)
        raise ModelError(
            f"{found.path.name} is not a tiny VAE that sdstudio can read "
            f"({first_line(error, 300)})."
        ) from None
    return vae.to(device=device, dtype=dtype).eval().requires_grad_(False)


def tiny_config(kind: TinyKind) -> dict[str, Any]:
    """The ``AutoencoderTiny`` config of the original files of ``kind`` (the published
    ones: four levels of 64 channels)."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "encoder_block_out_channels": (64, 64, 64, 64),
        "decoder_block_out_channels": (64, 64, 64, 64),
        "act_fn": "relu",
        "latent_channels": kind.latent_channels,
        "upsampling_scaling_factor": 2,
        "num_encoder_blocks": (1, 3, 3, 3),
        "num_decoder_blocks": (3, 3, 3, 1),
    }


def _original_state(path: Path, part: str) -> dict[str, Any]:
    """The tensors of an original decoder or encoder file, keys ``n.…`` (a ComfyUI
    ``taesd_decoder.`` prefix and its ``vae_scale`` / ``vae_shift`` are dropped)."""
    from sdstudio.engine.models.loading import PICKLE_SUFFIXES, load_pickle_state_dict

    if path.suffix.lower() in PICKLE_SUFFIXES:
        state = load_pickle_state_dict(path)
    else:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise ModelError(
                f"The tiny VAE {path.name} could not be read: it is truncated or damaged "
                f"({first_line(error, 300)})."
            ) from None
    cleaned = {}
    for key, value in state.items():
        for prefix in (f"taesd_{part}.", f"{part}."):
            key = key.removeprefix(prefix)
        if key.split(".", 1)[0].isdigit():
            cleaned[key] = value
    if not cleaned:
        raise ModelError(f"{path.name} holds no tiny VAE {part} weights.")
    return cleaned


def _shift(key: str, path: Path) -> str:
    """An original decoder key ``n.x`` as diffusers' ``(n-1).x`` (no clamp layer)."""
    index, _, rest = key.partition(".")
    if index == "0":
        raise ModelError(f"{path.name} is not a tiny VAE decoder (it has a layer 0 with weights).")
    return f"{int(index) - 1}.{rest}"


def _load_exactly(vae: Any, state: dict[str, Any], path: Path) -> None:
    ours = {key: tuple(value.shape) for key, value in vae.state_dict().items()}
    theirs = {key: tuple(value.shape) for key, value in state.items()}
    if ours != theirs:
        missing = sorted(ours.keys() - theirs.keys())[:3]
        wrong = sorted(k for k in ours.keys() & theirs.keys() if ours[k] != theirs[k])[:3]
        detail = f"missing {missing}" if missing else f"other shapes for {wrong}"
        if not missing and not wrong:
            detail = f"unknown {sorted(theirs.keys() - ours.keys())[:3]}"
        raise ModelError(
            f"{path.name} does not have the layout of a published tiny VAE ({detail})."
        )
    vae.load_state_dict(state, strict=True)
