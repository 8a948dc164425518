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
    (a full checkpoint, a LoRA, an SD 1.x VAE ...).

    Raises :class:`ModelError` when the file cannot be read.
    """
    if path.suffix.lower() not in PART_SUFFIXES:
        return None
    from sdstudio.engine.parts.denoisers import read_denoiser_file

    denoiser = read_denoiser_file(path)
    if denoiser is not None:
        return Part(
            Role.TRANSFORMER,
            denoiser.family,
            denoiser.label,
            variant=denoiser.variant,
            quantization=denoiser.quantization,
        )
    if path.suffix.lower() == ".gguf":
        return None
    from sdstudio.engine.parts.text_encoders import inspect_text_encoder

    encoder = inspect_text_encoder(path)
    if encoder is not None:
        return Part(
            Role.TEXT_ENCODER,
            encoder.kind,
            encoder.label,
            width=encoder.width,
            quantization=encoder.quantization,
        )
    from sdstudio.engine.parts.vae_files import identify_vae_file

    vae = identify_vae_file(part_shapes(path))
    if vae is not None and vae.kind != "kl4":
        return Part(Role.VAE, vae.kind, vae.label)
    return None


def identify_part_quietly(path: Path) -> Part | None:
    """:func:`identify_part`, with None for a file that cannot be read."""
    try:
        return identify_part(path)
    except (ModelError, OSError):
        return None
