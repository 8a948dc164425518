"""How other tools lay out their model folders, and cheap reads of model files.

Nothing here loads tensors: a safetensors header is a few kilobytes of JSON,
and a diffusers folder is told by its ``model_index.json`` and ``unet/config.json``.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from sdstudio.engine.flow_loras import lora_family

FORMATS = {
    ".safetensors": "safetensors",
    ".ckpt": "ckpt",
    ".pt": "pt",
    ".bin": "bin",
    ".gguf": "gguf",
}
"""Model file suffixes and their format names."""

UPSCALER_FORMATS = {**FORMATS, ".pth": "pth"}
"""Upscaler file suffixes (A1111 and ComfyUI keep ESRGAN models as ``.pth``)."""

UPSCALER_FOLDER_NAMES = frozenset(
    {"upscalers", "upscale_models", "esrgan", "realesrgan", "swinir", "dat", "hat", "scunet"}
)
"""Sub-folder names that hold upscaler files (sdstudio's, ComfyUI's and A1111's)."""

DETECTOR_FORMATS = {".onnx": "onnx", ".pt": "pt", ".pth": "pth"}
"""Detector file suffixes: OpenCV's YuNet ONNX files, and ADetailer's YOLO files (listed
to be told apart: they cannot be used)."""

DETECTOR_FOLDER_NAMES = frozenset({"detectors", "adetailer"})
"""Sub-folder names that hold face detectors (sdstudio's, A1111's for ADetailer)."""

CONTROLNET_FORMATS = {**FORMATS, ".pth": "pth"}
"""ControlNet file suffixes (lllyasviel's original ControlNets are ``.pth``)."""

CONTROLNET_FOLDER_NAMES = frozenset({"controlnet", "control_net"})
"""Sub-folder names that hold ControlNets (sdstudio's, ComfyUI's, A1111's)."""

IPADAPTER_FOLDER_NAMES = frozenset({"ipadapter", "ip_adapter", "ip-adapter", "ipadapters"})
"""Sub-folder names that hold IP-Adapters (sdstudio's, ComfyUI's, InvokeAI's)."""

CLIP_VISION_FOLDER_NAMES = frozenset({"clip_vision", "clipvision", "image_encoder"})
"""Sub-folder names that hold CLIP vision encoders (ComfyUI's, A1111's, h94's)."""

A1111_FOLDERS = (
    ("models/Stable-diffusion", "checkpoint"),
    ("models/Lora", "lora"),
    ("models/LyCORIS", "lora"),
    ("models/hypernetworks", "hypernetwork"),
    ("embeddings", "embedding"),
    ("models/embeddings", "embedding"),
    ("models/VAE", "vae"),
    ("models/VAE-approx", "tiny_vae"),
    ("models/text_encoder", "text_encoder"),
    ("models/ESRGAN", "upscaler"),
    ("models/RealESRGAN", "upscaler"),
    ("models/SwinIR", "upscaler"),
    ("models/DAT", "upscaler"),
    ("models/HAT", "upscaler"),
    ("models/ScuNET", "upscaler"),
    ("models/adetailer", "detector"),
    ("models/ControlNet", "controlnet"),
    ("extensions/sd-webui-controlnet/models", "controlnet"),
    ("extensions/sd-webui-controlnet/annotator/downloads/clip_vision", "clip_vision"),
    ("models/clip_vision", "clip_vision"),
)
"""AUTOMATIC1111, Forge and SD.Next, relative to the tool's root (Forge keeps Flux's
text encoders in ``models/text_encoder``; upscalers are in a folder per architecture).
IP-Adapters sit among the ControlNets, where the ControlNet extension looks for them:
each file there is told by its tensors (or a pickle by its name). CLIP vision encoders are
in the extension's ``annotator/downloads/clip_vision`` (``models/clip_vision`` is
searched too where it exists)."""

COMFYUI_FOLDERS = (
    ("models/checkpoints", "checkpoint"),
    ("models/diffusers", "checkpoint"),
    ("models/loras", "lora"),
    ("models/hypernetworks", "hypernetwork"),
    ("models/embeddings", "embedding"),
    ("models/vae", "vae"),
    ("models/vae_approx", "tiny_vae"),
    ("models/diffusion_models", "checkpoint"),
    ("models/unet", "checkpoint"),
    ("models/text_encoders", "text_encoder"),
    ("models/clip", "text_encoder"),
    ("models/upscale_models", "upscaler"),
    ("models/controlnet", "controlnet"),
    ("models/ipadapter", "ipadapter"),
    ("models/xlabs/ipadapters", "ipadapter"),
    ("models/xlabs/controlnets", "controlnet"),
    ("models/clip_vision", "clip_vision"),
)
"""ComfyUI, relative to its root: transformers kept alone (``diffusion_models``, older
``unet``) are models to choose; their text encoders (``text_encoders``, older ``clip``)
and VAEs are parts. XLabs' nodes keep Flux IP-Adapters and ControlNets under
``models/xlabs``."""

INVOKEAI_BASES = ("sd-1", "sd-2", "sdxl", "sdxl-refiner", "sd-3", "flux", "any")
"""InvokeAI 3 to 5 keep models in ``models/<base>/<type>/<name>`` (upscalers in
``models/any/spandrel_image_to_image``)."""

INVOKEAI_TYPES = {
    "main": "checkpoint",
    "lora": "lora",
    "embedding": "embedding",
    "vae": "vae",
    "t5_encoder": "text_encoder",
    "clip_embed": "text_encoder",
    "qwen3_encoder": "text_encoder",
    "spandrel_image_to_image": "upscaler",
    "controlnet": "controlnet",
    "ip_adapter": "ipadapter",
    "clip_vision": "clip_vision",
}

MAX_HEADER_BYTES = 16 * 1024 * 1024
"""The largest safetensors header read here (safetensors itself allows 100 MB).

Real headers are far smaller: an SDXL checkpoint's 2,500 tensors take about
0.4 MB, a large LoRA or LyCORIS with its training metadata 1 to 2 MB. A header
entry takes about 150 bytes, so 16 MB holds :data:`MAX_TENSORS` entries, and
parsing the worst 16 MB of JSON stays near a second and 200 MB of memory per
file, where 100 MB would take several seconds and more than a gigabyte.
"""

MAX_TENSORS = 100_000
"""The most tensors a header may list (SDXL checkpoints have about 2,500, big LoRAs 6,000)."""


def detect_tool(root: Path) -> str | None:
    """``a1111``, ``comfyui`` or ``invokeai`` when ``root`` is such a tool's root, else None."""
    try:
        if (root / "models" / "Stable-diffusion").is_dir():
            return "a1111"
        if (root / "models" / "checkpoints").is_dir():
            return "comfyui"
        if (root / "invokeai.yaml").is_file() or any(
            (root / "models" / base).is_dir() for base in INVOKEAI_BASES
        ):
            return "invokeai"
    except OSError:
        return None
    return None


def model_folders(root: Path, tool: str | None) -> list[tuple[Path, str]]:
    """The folders to scan under ``root`` and the kind of model each holds."""
    if tool == "a1111":
        return _existing(root, A1111_FOLDERS)
    if tool == "comfyui":
        return _existing(root, COMFYUI_FOLDERS)
    if tool == "invokeai":
        found = []
        for base in INVOKEAI_BASES:
            for type_name, kind in INVOKEAI_TYPES.items():
                folder = root / "models" / base / type_name
                if folder.is_dir():
                    found.append((folder, kind))
        return found
    return [(root, "checkpoint")]


def kind_from_path(path: Path, root: Path, default: str) -> str:
    """A plain folder's model kind, told by the names of its sub-folders."""
    try:
        parts = {part.lower() for part in path.relative_to(root).parts[:-1]}
    except ValueError:
        return default
    if parts & {"lora", "loras", "lycoris"}:
        return "lora"
    if "hypernetworks" in parts:
        return "hypernetwork"
    if parts & {"embedding", "embeddings", "textual_inversion"}:
        return "embedding"
    if parts & {"vae_approx", "vae-approx"}:
        return "tiny_vae"
    if parts & {"vae", "vaes"}:
        return "vae"
    if parts & {"text_encoders", "text_encoder", "clip"}:
        return "text_encoder"
    if parts & UPSCALER_FOLDER_NAMES:
        return "upscaler"
    if parts & DETECTOR_FOLDER_NAMES:
        return "detector"
    if parts & CLIP_VISION_FOLDER_NAMES:
        return "clip_vision"
    if parts & IPADAPTER_FOLDER_NAMES:
        return "ipadapter"
    if parts & CONTROLNET_FOLDER_NAMES:
        return "controlnet"
    return default


def kind_from_header(header: dict[str, Any], default: str) -> str:
    """A safetensors file's model kind, told by its tensor names."""
    keys = [key for key in header if key != "__metadata__"]
    if any("lora_" in key or ".lora" in key for key in keys):
        return "lora"
    if (
        keys
        and len(keys) <= 8
        and any(
            key in ("emb_params", "clip_l", "clip_g") or "string_to_param" in key for key in keys
        )
    ):
        return "embedding"
    prefixes = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
    if keys and all(key.startswith(prefixes) for key in keys):
        return "vae"
    return default


_WIDTH_FAMILIES = {768: ("sd1", "SD 1.x"), 1024: ("sd2", "SD 2.x"), 2048: ("sdxl", "SDXL")}


def network_family(header: dict[str, Any]) -> tuple[str, str]:
    """The model family a LoRA or embedding file is made for, from its tensor names and
    shapes: ``(family id, label)``, ``("unknown", "Unknown")`` when they do not tell.

    A LoRA's cross-attention key projection takes the text encoder's width
    (768 for SD 1.x, 1024 for SD 2.x, 2048 for SDXL); an embedding's vectors
    have that width, and SDXL embeddings hold ``clip_l`` and ``clip_g``. LoRAs of the
    flow families are told by their transformer's module names and widths
    (:func:`sdstudio.engine.flow_loras.lora_family`).
    """

    def shape(key: str) -> list[int]:
        entry = header.get(key)
        value = entry.get("shape") if isinstance(entry, dict) else None
        return [v for v in value if isinstance(v, int)] if isinstance(value, list) else []

    keys = [key for key in header if key != "__metadata__"]
    if "clip_g" in keys:
        return _WIDTH_FAMILIES[2048]
    for key in keys:
        if key == "emb_params" or "string_to_param" in key:
            width = shape(key)[-1:] or [0]
            return _WIDTH_FAMILIES.get(width[0], ("unknown", "Unknown"))
    cross_width = None
    for key in keys:
        down = any(part in key for part in ("lora_down", "lora_A", "lora.down"))
        if down and "attn2" in key and "to_k" in key and len(shape(key)) == 2:
            cross_width = shape(key)[1]
            break
    if cross_width is not None and cross_width in _WIDTH_FAMILIES:
        return _WIDTH_FAMILIES[cross_width]
    flow = lora_family(header)
    if flow is not None:
        return flow
    if cross_width is not None:
        return "unknown", "Unknown"
    if any(key.startswith("lora_te2_") or "text_encoder_2." in key for key in keys):
        return _WIDTH_FAMILIES[2048]
    return "unknown", "Unknown"


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file; ``ValueError`` when it is not one.

    A header over :data:`MAX_HEADER_BYTES` or listing more than :data:`MAX_TENSORS`
    tensors is refused with ``ValueError`` too, before it is parsed where its bytes
    show it.
    """
    return read_safetensors_layout(path)[0]


def read_safetensors_layout(path: Path) -> tuple[dict[str, Any], int]:
    """The header of a safetensors file (as :func:`read_safetensors_header`) and the size
    of the tensor data that follows it."""
    with path.open("rb") as file:
        prefix = file.read(8)
        if len(prefix) != 8:
            raise ValueError("not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", prefix)
        if length > os.fstat(file.fileno()).st_size - 8:
            raise ValueError("not a safetensors file (truncated header)")
        if length > MAX_HEADER_BYTES:
            raise ValueError(
                f"safetensors header of {length / 2**20:,.0f} MB, larger than any model's "
                f"(limit {MAX_HEADER_BYTES // 2**20} MB); not read"
            )
        raw = file.read(length)
        data_size = os.fstat(file.fileno()).st_size - 8 - len(raw)
    if len(raw) != length:
        raise ValueError("not a safetensors file (truncated header)")
    _check_tensor_count(raw.count(b'"data_offsets"'))
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError("not a safetensors file (unreadable header)") from error
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file (bad header)")
    _check_tensor_count(len(header) - ("__metadata__" in header))
    return header, data_size


def _check_tensor_count(count: int) -> None:
    if count > MAX_TENSORS:
        raise ValueError(
            f"safetensors header lists {count:,} tensors, more than any model has "
            f"(limit {MAX_TENSORS:,}); not read"
        )


def header_shapes(header: dict[str, Any], data_size: int) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a parsed header; ``ValueError`` when an entry is
    malformed or points past the ``data_size`` bytes that follow the header."""
    shapes: dict[str, tuple[int, ...]] = {}
    end = 0
    try:
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            shapes[name] = tuple(int(n) for n in entry["shape"])
            end = max(end, int(entry["data_offsets"][1]))
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise ValueError("not a safetensors file (bad tensor entry)") from error
    if end > data_size:
        raise ValueError("truncated safetensors file")
    return shapes


def diffusers_family(folder: Path) -> tuple[str, str]:
    """A diffusers folder's family and label from its UNet config, or unknown."""
    try:
        config = json.loads((folder / "unet" / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return "unknown", "Unknown"
    if not isinstance(config, dict):
        return "unknown", "Unknown"
    width = config.get("cross_attention_dim")
    inpainting = " inpainting" if config.get("in_channels") == 9 else ""
    family, label = {768: ("sd1", "SD 1.x"), 1024: ("sd2", "SD 2.x"), 2048: ("sdxl", "SDXL")}.get(
        width if isinstance(width, int) else 0, ("unknown", "Unknown")
    )
    return family, label + inpainting if family != "unknown" else label


def _existing(root: Path, folders: tuple[tuple[str, str], ...]) -> list[tuple[Path, str]]:
    return [(root / relative, kind) for relative, kind in folders if (root / relative).is_dir()]
