"""How much memory a model needs, read from its files before anything is loaded.

A safetensors header lists every tensor's shape and type, a GGUF file its tensor table
with the quantized sizes: the bytes a model takes are the sum, per tensor, of its
element count times the size of the type it will run in (floating tensors take the
compute dtype, except the fp8 weights of linear layers in transformer and text encoder
files, which the loaders keep in fp8, one byte each; integer tensors keep theirs; GGUF
tensors stay quantized). A diffusers folder is summed per component, a transformer
file kept alone with the text encoders and VAE that complete it. Activations (the latents, attention
and the VAE decode) grow with the image's area. Only headers are read: a few
kilobytes per file.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.engine.errors import ModelError

if TYPE_CHECKING:
    from sdstudio.engine.models.split_layout import SplitModel

log = logging.getLogger(__name__)

GB = 1_000_000_000
MIB = 1024**2
ITEMSIZES = {"float32": 4, "float16": 2, "bfloat16": 2}
INTEGER_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "U32": 4, "I32": 4}
INTEGER_SIZES |= {"U64": 8, "I64": 8}
WEIGHT_SUFFIXES = (".safetensors", ".gguf")
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")
ACTIVATION_BASE = 512 * MIB
ACTIVATION_PER_PIXEL = 1280
"""Bytes per pixel for each byte of the compute dtype: with the base, about 3 GiB at
1024 x 1024 in 16 bits, which is what SDXL and Flux take beyond their weights."""
TILED_SHARE = 3
"""Attention slicing and VAE tiling cut the activations to about a third."""
NO_WEIGHTS = frozenset({"safety_checker"})
"""Folder components sdstudio does not load."""
CHECKPOINT_PARTS = (
    ("model.diffusion_model.", "unet"),
    ("first_stage_model.", "vae"),
    ("cond_stage_model.", "text_encoder"),
    ("conditioner.", "text_encoder"),
)
SKIPPED_PREFIXES = ("model_ema.",)
"""Checkpoint tensors the loaders drop (the EMA copy some training checkpoints keep)."""
FP8_TYPES = frozenset({"F8_E4M3", "F8_E5M2"})
EMBEDDING_TABLES = frozenset(
    {"embed_tokens", "token_embedding", "position_embedding", "relative_attention_bias", "shared"}
)
"""Modules of text encoders whose ``weight`` is a matrix but no linear layer's."""


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """The memory a model needs to run, in bytes."""

    components: tuple[tuple[str, int], ...]
    """Each component's weights (``transformer``, ``text_encoder_2``, ``vae`` ...)."""
    activations: int
    """Beyond the weights, at :attr:`size` pixels square with nothing sliced or tiled."""
    tiled_activations: int
    """The same with VAE tiling (attention is fused, never sliced, on CUDA)."""
    precision: str
    size: int
    unknown: tuple[str, ...] = ()
    """What the files could not tell (a pickle's contents, parts not found)."""
    family_id: str = ""
    """The model's family where the files tell (``flux1``, ``sdxl`` ...)."""

    @property
    def weights(self) -> int:
        """All the weights."""
        return sum(size for _name, size in self.components)

    @property
    def largest(self) -> int:
        """The largest component: what model offload keeps on the GPU at once."""
        return max((size for _name, size in self.components), default=0)

    @property
    def total(self) -> int:
        """Weights and activations: what running fully on one device takes."""
        return self.weights + self.activations

    @property
    def certain(self) -> bool:
        """Whether every file was read (no guess from a file's size, no part missing)."""
        return not self.unknown


def itemsize(precision: str) -> int:
    """Bytes per value of a precision name (``float32``, ``float16``, ``bfloat16``)."""
    return ITEMSIZES.get(precision, 4)


def tensor_bytes(
    dtype: str, shape: Sequence[int], compute_itemsize: int, *, kept_fp8: bool = False
) -> int:
    """Bytes a tensor of safetensors type ``dtype`` takes once loaded: integers keep
    their size, floating types (fp8 to float64) take ``compute_itemsize``, but an fp8
    tensor ``kept_fp8`` (see :func:`stays_fp8`) one byte per value."""
    count = 1
    for size in shape:
        count *= int(size)
    if kept_fp8 and dtype in FP8_TYPES:
        return count
    return count * INTEGER_SIZES.get(dtype, compute_itemsize)


def stays_fp8(name: str, dtype: str, shape: Sequence[int]) -> bool:
    """Whether a tensor of a transformer or text encoder file stays fp8 when the loaders
    keep fp8 weights: an fp8 matrix named as a linear layer's weight (not an embedding
    table's)."""
    parts = name.split(".")
    return (
        dtype in FP8_TYPES
        and len(shape) == 2
        and parts[-1] == "weight"
        and (len(parts) < 2 or parts[-2] not in EMBEDDING_TABLES)
    )


def header_bytes(
    header: Mapping[str, Any],
    compute_itemsize: int,
    prefix: str = "",
    exclude: Iterable[str] = (),
    *,
    fp8_storage: bool = False,
) -> int:
    """Bytes of the tensors of a parsed safetensors header whose names start with
    ``prefix`` and with none of ``exclude``; with ``fp8_storage``, fp8 linear weights
    count one byte per value (:func:`stays_fp8`)."""
    excluded = tuple(exclude)
    total = 0
    for name, entry in header.items():
        if name == "__metadata__" or not name.startswith(prefix):
            continue
        if excluded and name.startswith(excluded):
            continue
        dtype, shape = str(entry.get("dtype", "")), entry["shape"]
        kept = fp8_storage and stays_fp8(name, dtype, shape)
        total += tensor_bytes(dtype, shape, compute_itemsize, kept_fp8=kept)
    return total


def gguf_bytes(layout: Any, compute_itemsize: int) -> int:
    """Bytes of a GGUF tensor table (:class:`~sdstudio.engine.parts.gguf_files.GgufLayout`):
    quantized tensors as stored, float ones in the compute dtype."""
    from sdstudio.engine.parts.gguf_files import FLOAT_TYPES

    total = 0
    for tensor in layout.tensors.values():
        if tensor.kind in FLOAT_TYPES:
            total += tensor_bytes("", tensor.shape, compute_itemsize)
        else:
            total += tensor.nbytes
    return total


def file_bytes(path: Path, compute_itemsize: int, *, fp8_storage: bool | None = False) -> int:
    """Bytes the weights of one ``.safetensors`` or ``.gguf`` file take once loaded;
    with ``fp8_storage`` as a transformer or text encoder file whose fp8 linear weights
    stay fp8 (None: as the loaders do by default).

    Raises :class:`ModelError` for a file that cannot be read, is damaged or is of
    another format.
    """
    if path.suffix.lower() == ".gguf":
        from sdstudio.engine.parts.gguf_files import read_gguf_layout

        return gguf_bytes(read_gguf_layout(path), compute_itemsize)
    header = _checked_header(path)
    if fp8_storage is None:
        fp8 = any(
            isinstance(entry, dict) and entry.get("dtype") in FP8_TYPES for entry in header.values()
        )
        fp8_storage = fp8 and _loaders_keep_fp8()
    return header_bytes(header, compute_itemsize, fp8_storage=fp8_storage)


def _loaders_keep_fp8() -> bool:
    from sdstudio.engine.parts.fp8_storage import fp8_storage_default

    return fp8_storage_default()


def activation_bytes(size: int, compute_itemsize: int, *, tiled: bool = False) -> int:
    """Room beyond the weights for an image ``size`` pixels square."""
    extra = size * size * ACTIVATION_PER_PIXEL * compute_itemsize
    return ACTIVATION_BASE + (extra // TILED_SHARE if tiled else extra)


def estimate_model(
    path: Path,
    precision: str,
    *,
    split: SplitModel | None = None,
    size: int | None = None,
    text_dirs: Iterable[Path] = (),
    vae_dirs: Iterable[Path] = (),
    fp8_storage: bool | None = None,
) -> MemoryEstimate:
    """The memory the model at ``path`` needs in ``precision``, from its files alone.

    ``split`` (a :class:`~sdstudio.engine.models.split_layout.SplitModel`) gives the
    parts of a transformer kept alone; without it they are looked for as the engine
    would, in the model's tool folders and ``text_dirs`` / ``vae_dirs``. ``size`` is
    the image's side (default: the family's native size). ``fp8_storage`` says whether
    the fp8 linear weights of transformer and text encoder files stay fp8, as the
    loaders are told (None: their default). Files that cannot be read are counted by
    their size and named in :attr:`MemoryEstimate.unknown`.
    """
    from sdstudio.engine.families import family

    compute = itemsize(precision)
    unknown: list[str] = []
    if split is not None:
        components = _split_components(split, compute, unknown, fp8_storage)
        family_id = split.family.id
    elif path.is_dir():
        components, family_id = _folder_components(path, compute, unknown)
    else:
        components, family_id = _file_components(
            path, compute, unknown, (text_dirs, vae_dirs), fp8_storage
        )
    side = size or family(family_id).native_size
    return MemoryEstimate(
        tuple(components),
        activation_bytes(side, compute),
        activation_bytes(side, compute, tiled=True),
        precision,
        side,
        tuple(unknown),
        family_id,
    )


def _file_components(
    path: Path,
    compute: int,
    unknown: list[str],
    folders: tuple[Iterable[Path], Iterable[Path]],
    fp8_storage: bool | None,
) -> tuple[list[tuple[str, int]], str]:
    """A transformer file kept alone with the parts the engine would complete it with,
    or a checkpoint."""
    from sdstudio.engine.models.split_layout import complete, transformer_part

    part = transformer_part(path)
    if part is None:
        return _checkpoint_components(path, compute, unknown)
    try:
        split = complete(path, part, (), "", text_dirs=folders[0], vae_dirs=folders[1])
    except ModelError as error:
        unknown.append(f"its text encoders and VAE ({error})")
        return [("transformer", _file_or_size(path, compute, unknown, fp8_storage))], part.kind
    return _split_components(split, compute, unknown, fp8_storage), part.kind


def _split_components(
    split: SplitModel, compute: int, unknown: list[str], fp8_storage: bool | None
) -> list[tuple[str, int]]:
    """A :class:`~sdstudio.engine.models.split_layout.SplitModel`'s part files."""
    transformer = _file_or_size(split.transformer, compute, unknown, fp8_storage)
    components = [("transformer", transformer)]
    layout = split.family.split
    slots = layout.text if layout is not None else ()
    for slot, encoder in zip(slots, split.text_encoders, strict=False):
        if encoder is not None:
            size = _file_or_size(encoder, compute, unknown, fp8_storage)
            components.append((slot.component, size))
    components.append(("vae", _file_or_size(split.vae, compute, unknown)))
    return components


def _folder_components(
    folder: Path, compute: int, unknown: list[str]
) -> tuple[list[tuple[str, int]], str]:
    from sdstudio.engine.models.families import detect_folder_family

    family_id = ""
    with contextlib.suppress(ModelError):
        family_id = detect_folder_family(folder).family.value
    try:
        index = json.loads((folder / "model_index.json").read_text("utf-8"))
    except (OSError, ValueError):
        unknown.append(f"{folder.name} (no readable model_index.json)")
        return [], family_id
    components = []
    for name, value in index.items() if isinstance(index, dict) else ():
        if name.startswith("_") or name in NO_WEIGHTS or not isinstance(value, list):
            continue
        if not (folder / name).is_dir() or None in value:
            continue
        files = weight_files(folder / name)
        if files:
            components.append((name, sum(_file_or_size(f, compute, unknown) for f in files)))
        elif (folder / name / "config.json").is_file():
            unknown.append(f"{name} (no weight files)")
    return components, family_id


def weight_files(component: Path) -> list[Path]:
    """The weight files diffusers loads from a component folder: the plain ones
    (``model.safetensors``, or its shards), else a variant's (``model.fp16.safetensors``);
    safetensors before pickles."""
    files = sorted(p for p in component.iterdir() if p.is_file())
    for suffixes in (WEIGHT_SUFFIXES, PICKLE_SUFFIXES):
        found = [p for p in files if p.name.lower().endswith(suffixes)]
        plain = [p for p in found if p.name.count(".") == 1]
        if plain or found:
            return plain or found
    return []


def _checkpoint_components(
    path: Path, compute: int, unknown: list[str]
) -> tuple[list[tuple[str, int]], str]:
    if path.suffix.lower() != ".safetensors":
        return [("checkpoint", _file_or_size(path, compute, unknown))], ""
    from sdstudio.engine.models.families import detect_family_from_header

    try:
        header = _checked_header(path)
    except ModelError:
        return [("checkpoint", _file_or_size(path, compute, unknown))], ""
    shapes = {k: v["shape"] for k, v in header.items() if k != "__metadata__"}
    family_id = detect_family_from_header(shapes).family.value
    parts: dict[str, int] = {}
    for prefix, name in CHECKPOINT_PARTS:
        parts[name] = parts.get(name, 0) + header_bytes(header, compute, prefix)
    named = tuple(prefix for prefix, _name in CHECKPOINT_PARTS)
    rest = header_bytes(header, compute, exclude=(*named, *SKIPPED_PREFIXES))
    if rest:
        parts["other"] = rest
    return [(name, size) for name, size in parts.items() if size], family_id


def _file_or_size(
    path: Path, compute: int, unknown: list[str], fp8_storage: bool | None = False
) -> int:
    """:func:`file_bytes`, or the file's size (noted as unknown) where it cannot tell."""
    if path.suffix.lower() in WEIGHT_SUFFIXES:
        try:
            return file_bytes(path, compute, fp8_storage=fp8_storage)
        except ModelError as error:
            log.info("Counting %s by its size: %s", path, error)
    unknown.append(path.name)
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _checked_header(path: Path) -> dict[str, Any]:
    """A safetensors header whose entries are checked against the file's size."""
    from sdstudio.engine.models.layouts import header_shapes, read_safetensors_layout

    try:
        header, data_size = read_safetensors_layout(path)
        header_shapes(header, data_size)
    except OSError as error:
        raise ModelError(f"{path.name} cannot be read: {error.strerror or error}.") from None
    except ValueError as error:
        raise ModelError(f"{path.name} is not a readable safetensors file ({error}).") from None
    return header
