"""Telling a model's family (SD 1.x, SD 2.x, SDXL) without loading its weights.

A single-file checkpoint is recognised from its safetensors header alone: the tensor
names and shapes tell which text encoder it carries (CLIP ViT-L, OpenCLIP ViT-H or
both CLIP-L and OpenCLIP bigG), the UNet's cross-attention width and whether its first
convolution takes 9 channels (an inpainting model). A diffusers folder is recognised from
its ``model_index.json`` and ``unet/config.json``.

Whether an SD 2.x model predicts ``v`` cannot be read from its weights (AUTOMATIC1111
runs the model to guess); as in AUTOMATIC1111 and ComfyUI, a ``.yaml`` file next to the
checkpoint with ``parameterization: "v"`` says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sdstudio.engine.errors import ModelError
from sdstudio.engine.models.layouts import (
    header_shapes,
    kind_from_header,
    read_safetensors_layout,
)

UNET = "model.diffusion_model."
CONV_IN = UNET + "input_blocks.0.0.weight"
LABEL_EMB = UNET + "label_emb.0.0.weight"

Shapes = Mapping[str, Sequence[int]]


class Family(StrEnum):
    """The model families sdstudio knows."""

    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"
    SDXL_REFINER = "sdxl-refiner"
    SD3 = "sd3"
    FLUX1 = "flux1"
    CHROMA = "chroma"
    FLUX2_KLEIN = "flux2-klein"
    ZIMAGE = "zimage"
    QWEN_IMAGE = "qwen-image"
    UNKNOWN = "unknown"


LOADABLE_FAMILIES = (Family.SD1, Family.SD2, Family.SDXL, Family.SDXL_REFINER)
"""The families whose single-file checkpoints load (with the configs shipped); an SDXL
refiner loads only as a refiner."""
_LABELS = {
    Family.SD1: "SD 1.x",
    Family.SD2: "SD 2.x",
    Family.SDXL: "SDXL",
    Family.SDXL_REFINER: "SDXL refiner",
    Family.SD3: "SD 3.x",
    Family.FLUX1: "Flux.1",
    Family.CHROMA: "Chroma",
    Family.FLUX2_KLEIN: "Flux.2 Klein",
    Family.ZIMAGE: "Z-Image",
    Family.QWEN_IMAGE: "Qwen-Image",
    Family.UNKNOWN: "unknown model type",
}
_CONTEXT_DIMS = {768: Family.SD1, 1024: Family.SD2, 2048: Family.SDXL, 1280: Family.SDXL_REFINER}
_FOLDER_CLASSES = {
    "StableDiffusionXLPipeline": Family.SDXL,
    "StableDiffusionXLImg2ImgPipeline": Family.SDXL,
    "StableDiffusionXLInpaintPipeline": Family.SDXL,
}


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a model is: its family, whether it inpaints and what it predicts.

    ``prediction_type`` is ``"epsilon"`` or ``"v_prediction"`` when known, else ``None``
    (then the family's default, epsilon, is used).
    """

    family: Family
    inpainting: bool = False
    prediction_type: str | None = None
    variant: str = ""
    """Which model of the family, where its config tells (``"dev"``, ``"schnell"``,
    ``"Fill"``, ``"Large"``)."""

    @property
    def label(self) -> str:
        """A name for users, such as ``"SD 1.x inpainting"`` or ``"Flux.1 dev"``."""
        label = _LABELS[self.family]
        if self.variant:
            label += f" {self.variant}"
        if self.inpainting:
            label += " inpainting"
        if self.prediction_type == "v_prediction":
            label += " (v-prediction)"
        return label


def detect_family(path: Path) -> ModelInfo:
    """The family of a diffusers folder or a ``.safetensors`` checkpoint.

    Only the header of a checkpoint is read. A truncated or foreign file raises
    :class:`ModelError`.
    """
    if path.is_dir():
        return detect_folder_family(path)
    info = detect_family_from_header(read_safetensors_shapes(path))
    return with_sidecar_prediction(info, path)


def detect_family_from_header(shapes: Shapes) -> ModelInfo:
    """The family of an original-layout (LDM) checkpoint from its tensor names and shapes."""
    conv_in = shapes.get(CONV_IN)
    if conv_in is None or len(conv_in) < 2:
        return ModelInfo(Family.UNKNOWN)
    inpainting = conv_in[1] == 9
    prediction = "v_prediction" if "v_pred" in shapes else None
    label_emb = shapes.get(LABEL_EMB)
    family = Family.UNKNOWN
    if label_emb is not None and _has_prefix(shapes, "conditioner.embedders."):
        refiner = not _has_prefix(shapes, "conditioner.embedders.1.")
        family = Family.SDXL_REFINER if refiner else Family.SDXL
    elif _has_prefix(shapes, "cond_stage_model.model."):
        family = Family.SD2
    elif _has_prefix(shapes, "cond_stage_model.transformer."):
        family = Family.SD1
    else:
        context = _context_dim(shapes)
        family = _CONTEXT_DIMS.get(context or 0, Family.UNKNOWN)
        if family in (Family.SDXL, Family.SDXL_REFINER) and label_emb is None:
            family = Family.UNKNOWN
    return ModelInfo(family, inpainting, prediction)


def detect_folder_family(folder: Path) -> ModelInfo:
    """The family of a diffusers folder from ``model_index.json`` and, for UNet models,
    ``unet/config.json``; a transformer model's pipeline class names its family."""
    from sdstudio.engine.families import family_of_pipeline

    try:
        index = json.loads((folder / "model_index.json").read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(f"{folder.name} is not a readable diffusers model folder.") from error
    if not isinstance(index, dict):
        raise ModelError(f"{folder.name} is not a readable diffusers model folder.")
    flow = family_of_pipeline(str(index.get("_class_name")))
    if flow is not None and flow.flow:
        return ModelInfo(Family(flow.id), variant=_variant(Family(flow.id), folder))
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(f"{folder.name} is not a readable diffusers model folder.") from error
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    prediction = None
    if scheduler_file.is_file():
        try:
            prediction = json.loads(scheduler_file.read_text("utf-8")).get("prediction_type")
        except ValueError:
            prediction = None
    context = unet.get("cross_attention_dim")
    if isinstance(context, list):
        context = context[0] if context else None
    family = _FOLDER_CLASSES.get(str(index.get("_class_name")))
    if family is None:
        family = _CONTEXT_DIMS.get(context if isinstance(context, int) else 0, Family.UNKNOWN)
        if family in (Family.SDXL, Family.SDXL_REFINER) and not unet.get("addition_embed_type"):
            family = Family.UNKNOWN
    if family is Family.UNKNOWN and "text_encoder" in index and "text_encoder_2" not in index:
        family = Family.SD1  # small or custom SD 1.x-style folders (other text widths)
    if family is Family.SDXL and not _has_component(index, "text_encoder"):
        family = Family.SDXL_REFINER  # the refiner's index lists its first encoder as null
    return ModelInfo(family, unet.get("in_channels") == 9, prediction)


def _has_component(index: Mapping[str, object], name: str) -> bool:
    """Whether a ``model_index.json`` names a component (``[null, null]`` names none)."""
    value = index.get(name)
    return isinstance(value, list) and bool(value) and value[0] is not None


def _variant(family: Family, folder: Path) -> str:
    """The variant a transformer's config tells: Flux.1 Fill (the mask and masked image
    among its inputs), dev (a guidance embedding) or schnell; SD 3.x Large (38 blocks) or
    Medium."""
    from sdstudio.engine.families.flux import FILL_CHANNELS

    try:
        config = json.loads((folder / "transformer" / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(config, dict):
        return ""
    if family is Family.FLUX1:
        if config.get("in_channels") == FILL_CHANNELS:
            return "Fill"
        return "dev" if config.get("guidance_embeds") else "schnell"
    if family is Family.SD3 and isinstance(config.get("num_layers"), int):
        return "Large" if config["num_layers"] >= 38 else "Medium"
    return ""


def with_sidecar_prediction(info: ModelInfo, checkpoint: Path) -> ModelInfo:
    """``info`` with ``prediction_type`` from a ``.yaml`` next to ``checkpoint``, if any."""
    if info.prediction_type is not None:
        return info
    sidecar = checkpoint.with_suffix(".yaml")
    if not sidecar.is_file():
        return info
    try:
        text = sidecar.read_text("utf-8", errors="replace")
    except OSError:
        return info
    if re.search(r"^\s*parameterization:\s*[\"']?v[\"']?\s*$", text, re.MULTILINE):
        return ModelInfo(info.family, info.inpainting, "v_prediction")
    if re.search(r"^\s*parameterization:\s*[\"']?eps[\"']?\s*$", text, re.MULTILINE):
        return ModelInfo(info.family, info.inpainting, "epsilon")
    return info


def read_safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header, without reading any tensor.

    Raises :class:`ModelError` when the file is shorter than its header says (truncated),
    is not a safetensors file, or has a header larger than any model's.
    """
    try:
        header, data_size = read_safetensors_layout(path)
        return header_shapes(header, data_size)
    except OSError as error:
        raise ModelError(f"{path.name} cannot be read: {error.strerror or error}.") from None
    except ValueError as error:
        if "limit" in str(error):
            raise ModelError(f"{path.name} is not a model: its {error}.") from None
        raise ModelError(
            f"{path.name} is truncated or damaged: it is not a valid safetensors file."
        ) from None


TEXT_PREFIXES = ("cond_stage_model.", "conditioner.embedders.")
"""Where original-layout checkpoints keep their text encoders (SD 1.x and 2.x, SDXL)."""
VAE_PREFIX = "first_stage_model."


@dataclass(frozen=True, slots=True)
class Widths:
    """The sizes that tell a model's architecture; ``None`` or empty for a missing part."""

    unet_channels: int | None = None
    """The width of the UNet's first block (320 in SD 1.x, SD 2.x and SDXL)."""
    context: int | None = None
    """The width of the text the UNet attends to (768, 1024 or 2048)."""
    input_blocks: int = 0
    """The UNet's down path: 12 blocks in SD 1.x and 2.x, 9 in SDXL."""
    text: tuple[int, ...] = ()
    """The width of each text encoder, smallest first."""
    vae: bool = False


def checkpoint_widths(shapes: Shapes) -> Widths:
    """The :class:`Widths` of an original-layout (LDM) checkpoint, from its header."""
    conv_in = shapes.get(CONV_IN)
    blocks = {
        key[len(UNET + "input_blocks.") :].split(".", 1)[0]
        for key in shapes
        if key.startswith(UNET + "input_blocks.")
    }
    return Widths(
        unet_channels=int(conv_in[0]) if conv_in else None,
        context=_context_dim(shapes),
        input_blocks=len(blocks),
        text=tuple(
            sorted(int(shape[-1]) for key, shape in shapes.items() if _is_tokens(key, shape))
        ),
        vae=_has_prefix(shapes, VAE_PREFIX + "decoder."),
    )


def width_differences(found: Widths, expected: Widths, name: str) -> list[str]:
    """How a checkpoint's :class:`Widths` differ from those ``name`` (a family or folder) has."""
    if found.unet_channels is None:
        return ["it holds no UNet weights"]
    differences = []
    if expected.unet_channels and found.unet_channels != expected.unet_channels:
        differences.append(
            f"its UNet is {found.unet_channels} channels wide ({name}: {expected.unet_channels})"
        )
    if expected.context and found.context != expected.context:
        differences.append(f"{_attention(found.context)} ({name}: {expected.context})")
    if expected.input_blocks and found.input_blocks != expected.input_blocks:
        differences.append(
            f"its UNet has {found.input_blocks} input blocks ({name}: {expected.input_blocks})"
        )
    if expected.text and not found.text:
        differences.append("it holds no text encoder")
    elif expected.text and found.text != expected.text:
        wanted = " and ".join(str(w) for w in expected.text)
        differences.append(f"{_text_widths(found.text)} ({name}: {wanted})")
    if expected.vae and not found.vae:
        differences.append("it holds no VAE weights")
    return differences


def describe_checkpoint(shapes: Shapes, name: str = "NAME") -> str:
    """What a file that is no model sdstudio knows looks like, in words, from its header.

    ``name`` is the file's name without its suffix, for the advice.
    """
    kind = kind_from_header(dict(shapes), "")
    if kind == "lora":
        return f"it looks like a LoRA, not a model (use it in the prompt: <lora:{name}:1>)"
    if kind == "embedding":
        return "it looks like a textual-inversion embedding, not a model (use its name in a prompt)"
    if kind == "vae":
        return "it looks like a VAE, not a model (choose it as a model's VAE)"
    widths = checkpoint_widths(shapes)
    if widths.unet_channels is None:
        names = ", ".join(repr(key) for key in list(shapes)[:2])
        return f"it holds no UNet weights (its {len(shapes)} tensors are named like {names})"
    known = ", ".join(f"{_LABELS[family]}: {width}" for width, family in _CONTEXT_DIMS.items())
    look = f"{_attention(widths.context)} ({known})"
    look += f" and {_text_widths(widths.text)}" if widths.text else " and it holds no text encoder"
    return look + ", like no family sdstudio knows"


def _is_tokens(key: str, shape: Sequence[int]) -> bool:
    """Whether ``key`` is a text encoder's token embedding (its width is the encoder's)."""
    return key.startswith(TEXT_PREFIXES) and key.endswith("token_embedding.weight") and bool(shape)


def _attention(context: int | None) -> str:
    if context is None:
        return "its UNet attends to no text"
    return f"its UNet attends to text {context} wide"


def _text_widths(widths: Sequence[int]) -> str:
    if len(widths) == 1:
        return f"its text encoder is {widths[0]} wide"
    return f"its text encoders are {' and '.join(map(str, widths))} wide"


def _has_prefix(shapes: Shapes, prefix: str) -> bool:
    return any(key.startswith(prefix) for key in shapes)


def _context_dim(shapes: Shapes) -> int | None:
    """The UNet's cross-attention width (the text embedding size it attends to)."""
    for key, shape in shapes.items():
        if key.startswith(UNET) and key.endswith("attn2.to_k.weight") and len(shape) == 2:
            return int(shape[1])
    return None
