"""Model parts kept as separate files, as ComfyUI users keep them: a transformer in
``models/diffusion_models``, text encoders in ``models/text_encoders`` (or ``clip``),
a VAE in ``models/vae``.

Each part is recognised from its safetensors header or GGUF tensor table alone
(:func:`identify_part`) and loaded with the configuration its shapes imply:

- :mod:`.denoisers` and :mod:`.gguf_files`: the transformers of the flow families;
- :mod:`.text_encoders` and :mod:`.tokenizers`: CLIP, T5 and Qwen text encoders and
  the tokenizers shipped with the app;
- :mod:`.vae_files`: the VAEs of the flow families.

Nothing in a file is executed: safetensors and GGUF hold only tensors and their names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import ModelError

PART_SUFFIXES = (".safetensors", ".gguf")


class Role(enum.StrEnum):
    """What a part file is in a pipeline."""

    TRANSFORMER = "transformer"
    TEXT_ENCODER = "text_encoder"
    VAE = "vae"


@dataclass(frozen=True, slots=True)
class Part:
    """A part file, as its header tells it."""

    role: Role
    kind: str
    """The transformer's family id, the text encoder's kind (``clip``, ``t5``,
    ``qwen3``, ``qwen2.5-vl``) or the VAE's kind (``kl16``, ``flux2``, ``qwen-image``)."""
    label: str
    width: int = 0
    """A text encoder's width (its hidden size); 0 for other parts."""
    variant: str = ""
    """A transformer's variant (``dev``, ``schnell``, ``Large`` ...)."""
    quantization: str = ""


def part_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of a safetensors or GGUF file, read from its header.

    Raises :class:`ModelError` for a truncated, damaged or foreign file.
    """
    if path.suffix.lower() == ".gguf":
        from sdstudio.engine.parts.gguf_files import gguf_shapes

        return gguf_shapes(path)
    from sdstudio.engine.models.families import read_safetensors_shapes

    return read_safetensors_shapes(path)


def identify_part(path: Path) -> Part | None:
    """What part ``path`` is, or None when it is none of the parts sdstudio assembles
    (a full SD checkpoint, a LoRA, an SD 1.x VAE ...).

    Raises :class:`ModelError` when the file cannot be read.
    """
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        from sdstudio.engine.parts.denoisers import read_denoiser_file

        denoiser = read_denoiser_file(path)
        return _transformer(denoiser) if denoiser is not None else None
    if suffix != ".safetensors":
        return None
    from sdstudio.engine.models.layouts import read_safetensors_layout

    try:
        header, data_size = read_safetensors_layout(path)
    except OSError as error:
        raise ModelError(f"{path.name} cannot be read: {error.strerror or error}.") from None
    except ValueError as error:
        raise ModelError(f"{path.name} is not a model part: {error}.") from None
    return identify_header(header, data_size)


def identify_header(header: dict[str, Any], data_size: int) -> Part | None:
    """:func:`identify_part` from a safetensors header already read (see
    :func:`~sdstudio.engine.models.layouts.read_safetensors_layout`)."""
    from sdstudio.engine.models.layouts import header_shapes
    from sdstudio.engine.parts.denoisers import identify_denoiser
    from sdstudio.engine.parts.text_encoders import identify_text_encoder
    from sdstudio.engine.parts.vae_files import identify_vae_file

    try:
        shapes = header_shapes(header, data_size)
    except ValueError:
        return None
    dtypes = {
        name: str(entry.get("dtype", ""))
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict)
    }
    denoiser = identify_denoiser(shapes, quantization=_fp8(shapes, dtypes))
    if denoiser is not None:
        return _transformer(denoiser)
    encoder = identify_text_encoder(shapes, dtypes=dtypes)
    if encoder is not None:
        return Part(
            Role.TEXT_ENCODER,
            encoder.kind,
            encoder.label,
            width=encoder.width,
            quantization=encoder.quantization,
        )
    vae = identify_vae_file(shapes)
    if vae is not None and vae.kind != "kl4":
        return Part(Role.VAE, vae.kind, vae.label)
    return None


def _transformer(denoiser: Any) -> Part:
    """The part a :class:`~sdstudio.engine.parts.denoisers.DenoiserFile` describes."""
    return Part(
        Role.TRANSFORMER,
        denoiser.family,
        denoiser.label,
        variant=denoiser.variant,
        quantization=denoiser.quantization,
    )


def _fp8(shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str]) -> str:
    """``"fp8"`` when most of a file's weight matrices are stored as 8-bit floats."""
    matrices = [name for name, shape in shapes.items() if len(shape) >= 2]
    fp8 = sum(dtypes.get(name, "").startswith("F8") for name in matrices)
    return "fp8" if matrices and fp8 * 2 >= len(matrices) else ""


def identify_part_quietly(path: Path) -> Part | None:
    """:func:`identify_part`, with None for a file that cannot be read."""
    try:
        return identify_part(path)
    except (ModelError, OSError):
        return None
