"""VAE files of the flow families, as ComfyUI keeps them alone in ``models/vae``.

Four kinds are told apart by tensor shapes alone (:func:`identify_vae_file`):

- ``kl16``: the 16-channel ``AutoencoderKL`` of Flux.1, SD 3.x and Z-Image
  (``ae.safetensors``; SD 3.5 checkpoints carry it under ``first_stage_model.``);
- ``flux2``: Flux.2's 32-channel ``AutoencoderKLFlux2`` (``flux2-vae.safetensors``):
  the same blocks, with quant convolutions and a batch norm of the packed latents;
- ``qwen-image``: Qwen-Image's causal 3D ``AutoencoderKLQwenImage``, the Wan 2.1 VAE
  (``qwen_image_vae.safetensors``);
- ``kl4``: the VAEs of SD 1.x, SD 2.x and SDXL, only recognised here
  (:mod:`sdstudio.engine.vae` loads them).

A file holds the original layout (``encoder.down.0.block.0…`` for the KL kinds, Wan's
``encoder.downsamples.0.residual…``) or the diffusers one; original names are mapped
by :mod:`sdstudio.engine.parts.vae_layouts`. :func:`load_vae_file` builds the family's
diffusers class from the config shipped in
``resources/model_configs/<folder>/vae/config.json`` (scaling and shift factors, or
latents mean and std) with the sizes the file's shapes tell, so nothing comes from the
Hugging Face hub. Flux.1's and SD3's VAEs have the same shapes: which one a file holds
cannot be told, and the family's config decides how latents are scaled.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.engine.errors import ModelError, first_line
from sdstudio.engine.parts.vae_layouts import Shapes, config_sizes, diffusers_names, squeezed
from sdstudio.resource_files import resource_path

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VaeFile:
    """A VAE file, as its tensor shapes tell it."""

    kind: str
    """``kl16``, ``flux2``, ``qwen-image`` or ``kl4``."""
    label: str
    layout: str
    """``original`` or ``diffusers``."""


VAE_KINDS_BY_FAMILY: dict[str, str] = {
    "flux1": "kl16",
    "chroma": "kl16",
    "sd3": "kl16",
    "zimage": "kl16",
    "flux2-klein": "flux2",
    "qwen-image": "qwen-image",
}
DEFAULT_CONFIG_FOLDERS: dict[str, str] = {
    "flux1": "flux1-dev",
    "chroma": "chroma",
    "sd3": "sd3",
    "zimage": "zimage",
    "qwen-image": "qwen-image",
    "flux2-klein": "flux2-klein",
}
LABELS: dict[str, str] = {
    "kl16": "16-channel VAE (Flux.1, SD3, Z-Image)",
    "flux2": "Flux.2 VAE",
    "qwen-image": "Qwen-Image VAE",
    "kl4": "SD VAE (4 channels)",
}
VAE_PREFIXES = ("first_stage_model.", "vae.")
"""Where checkpoints that carry a VAE keep it."""
VAE_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
FOLDER_WEIGHTS = (
    "diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "vae/diffusion_pytorch_model.bin",
)

_ARTICLES = {"kl16": "a", "flux2": "a", "qwen-image": "a", "kl4": "an"}
_MADE_FOR = {
    "kl16": "Flux.1, SD 3.x and Z-Image",
    "flux2": "Flux.2",
    "qwen-image": "Qwen-Image",
    "kl4": "SD 1.x, SD 2.x and SDXL",
}
_FAMILY_NAMES = {
    "flux1": "Flux.1",
    "chroma": "Chroma",
    "sd3": "SD 3.x",
    "zimage": "Z-Image",
    "qwen-image": "Qwen-Image",
    "flux2-klein": "Flux.2 Klein",
}
_EXAMPLES = {
    "flux1": "ae.safetensors",
    "chroma": "ae.safetensors (the Flux.1 VAE)",
    "sd3": "the VAE of an SD 3.x model",
    "zimage": "ae.safetensors (the Flux.1 VAE)",
    "qwen-image": "qwen_image_vae.safetensors",
    "flux2-klein": "flux2-vae.safetensors",
}
_CLASSES = {
    "kl16": "AutoencoderKL",
    "flux2": "AutoencoderKLFlux2",
    "qwen-image": "AutoencoderKLQwenImage",
}


def identify_vae_file(shapes: Shapes) -> VaeFile | None:
    """The VAE that tensor names and shapes describe (a ``first_stage_model.`` or
    ``vae.`` prefix is looked through), or None when they hold no VAE of these kinds."""
    _, vae = _vae_part(shapes)
    wan_in = vae.get("decoder.conv1.weight")
    conv_in = vae.get("decoder.conv_in.weight")
    if wan_in is not None or (conv_in is not None and len(conv_in) == 5):
        latent = wan_in if wan_in is not None else conv_in
        if latent is None or len(latent) != 5 or latent[1] != 16:
            return None
        layout = "original" if wan_in is not None else "diffusers"
        return VaeFile("qwen-image", LABELS["qwen-image"], layout)
    if conv_in is None or len(conv_in) != 4:
        return None
    original = any(key.startswith(("encoder.down.", "decoder.up.")) for key in vae)
    diffusers = any(key.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for key in vae)
    if original == diffusers:
        return None
    channels = conv_in[1]
    if "bn.running_mean" in vae:
        kind = "flux2" if channels == 32 else None
    else:
        kind = {16: "kl16", 4: "kl4"}.get(channels)
    if kind is None:
        return None
    return VaeFile(kind, LABELS[kind], "original" if original else "diffusers")


def load_vae_file(
    path: Path, family: str, *, dtype: torch.dtype, config_folder: str | None = None
) -> Any:
    """The diffusers VAE of ``family`` with the weights of ``path`` (a VAE file, a
    checkpoint that carries one, or a diffusers VAE folder), in ``dtype``, on the CPU.

    The config is the family's shipped one (``config_folder`` under
    ``resources/model_configs``, or the family's default), with the sizes the file's
    shapes tell. Raises :class:`ModelError` when the file is a VAE of another family, is
    not a VAE, is truncated or lacks weights.
    """
    path = Path(path)
    needed = VAE_KINDS_BY_FAMILY.get(family)
    if needed is None:
        known = ", ".join(_FAMILY_NAMES.values())
        raise ModelError(
            f"VAE files of this kind are loaded for {known} models only, not {family}."
        )
    source = _weights_file(path)
    shapes, state = _read_shapes(source)
    found = identify_vae_file(shapes)
    if found is None:
        raise ModelError(f"{path.name} is {_what_else(shapes)}; {_needs(family)}.")
    if found.kind != needed:
        raise ModelError(
            f"{path.name} is {_ARTICLES[found.kind]} {found.label}, made for "
            f"{_MADE_FOR[found.kind]}; {_needs(family)}."
        )
    config = _shipped_config(config_folder or DEFAULT_CONFIG_FOLDERS[family], needed)
    prefix, vae_shapes = _vae_part(shapes)
    names = diffusers_names(needed, found.layout, vae_shapes)
    converted = {new: squeezed(vae_shapes[old], flag) for new, (old, flag) in names.items()}
    try:
        config.update(config_sizes(needed, converted, config))
    except (KeyError, IndexError, ValueError, ZeroDivisionError) as error:
        such = f" (such as {error.args[0]})" if isinstance(error, KeyError) else ""
        raise ModelError(
            f"{path.name} lacks weights of the {found.label}{such}: it is incomplete or damaged."
        ) from None
    model, expected = _empty_model(needed, config)
    _check_weights(path.name, found.label, converted, expected)
    wanted = {new: names[new] for new in expected if new in names}
    tensors = _read_tensors(source, state, {prefix + old for old, _ in wanted.values()})
    weights: dict[str, torch.Tensor] = {}
    for new, (old, squeeze) in wanted.items():
        tensor = tensors[prefix + old]
        if squeeze:
            tensor = tensor[:, :, 0, 0]
        weights[new] = tensor.to(dtype).contiguous() if tensor.is_floating_point() else tensor
    if "bn.num_batches_tracked" in expected and "bn.num_batches_tracked" not in weights:
        import torch

        weights["bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    model.load_state_dict(weights, strict=True, assign=True)
    log.info("VAE %s: %s, %s layout", path.name, found.label, found.layout)
    return model.eval()


# --- reading ------------------------------------------------------------------


def _weights_file(path: Path) -> Path:
    if path.is_dir():
        for name in FOLDER_WEIGHTS:
            if (path / name).is_file():
                return path / name
        raise ModelError(
            f"The folder {path.name} holds no VAE weights (diffusion_pytorch_model.safetensors)."
        )
    if not path.is_file():
        raise ModelError(f"The VAE file {path} does not exist.")
    if path.suffix.lower() not in VAE_FILE_SUFFIXES:
        raise ModelError(f"{path.name} is not a VAE file (.safetensors, .pt, .ckpt or .bin).")
    return path


def _read_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, Any] | None]:
    """The tensor shapes of ``path``, and its tensors when it is a pickle (read whole)."""
    from sdstudio.engine.models.loading import PICKLE_SUFFIXES, load_pickle_state_dict

    if path.suffix.lower() in PICKLE_SUFFIXES:
        state = load_pickle_state_dict(path)
        return {key: tuple(value.shape) for key, value in state.items()}, state
    from sdstudio.engine.models.families import read_safetensors_shapes

    return read_safetensors_shapes(path), None


def _read_tensors(
    path: Path, state: dict[str, Any] | None, names: set[str]
) -> dict[str, torch.Tensor]:
    if state is not None:
        return {name: state[name] for name in names}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            return {name: file.get_tensor(name) for name in names}
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(
            f"The VAE {path.name} could not be read: it is truncated or damaged "
            f"({first_line(error, 200)})."
        ) from None


def _vae_part(shapes: Shapes) -> tuple[str, dict[str, tuple[int, ...]]]:
    """The prefix of the VAE's tensors, and their shapes without it."""
    for prefix in VAE_PREFIXES:
        found = {k[len(prefix) :]: tuple(v) for k, v in shapes.items() if k.startswith(prefix)}
        if found:
            return prefix, found
    return "", {key: tuple(value) for key, value in shapes.items()}


def _shipped_config(folder: str, kind: str) -> dict[str, Any]:
    path = resource_path("model_configs") / folder / "vae" / "config.json"
    try:
        config = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(
            f"The VAE config {path} cannot be read ({first_line(error, 200)}); reinstall sdstudio."
        ) from None
    if not isinstance(config, dict) or config.get("_class_name") != _CLASSES[kind]:
        raise ModelError(f"The VAE config in {path.parent} is not one of the {LABELS[kind]}.")
    return config


# --- messages -----------------------------------------------------------------


def _needs(family: str) -> str:
    kind = VAE_KINDS_BY_FAMILY[family]
    return (
        f"{_FAMILY_NAMES[family]} needs {_ARTICLES[kind]} {LABELS[kind]}, "
        f"such as {_EXAMPLES[family]}"
    )


def _what_else(shapes: Shapes) -> str:
    """What a file that holds no VAE of the known kinds holds, for a message."""
    keys = list(shapes)
    if any("lora_" in key or ".lora." in key or "lora_down" in key for key in keys):
        return "a LoRA, not a VAE"
    if any(key in ("emb_params", "clip_l", "clip_g") or "string_to_param" in key for key in keys):
        return "a textual-inversion embedding, not a VAE"
    _, vae = _vae_part(shapes)
    latent = vae.get("decoder.conv_in.weight", vae.get("decoder.conv1.weight"))
    if latent is not None and len(latent) >= 2:
        return f"a VAE of a kind sdstudio does not load ({latent[1]} latent channels)"
    markers = ("double_blocks.", "joint_blocks.", "transformer_blocks.", "layers.", "blocks.")
    if any(key.startswith(("model.diffusion_model.", *markers)) for key in keys):
        return "a diffusion model without a VAE"
    if any(m in key for key in keys for m in ("text_model.", "encoder.block.", "model.layers.")):
        return "a text encoder, not a VAE"
    return "not a VAE (it holds no decoder weights)"


def _check_weights(
    name: str, label: str, found: dict[str, tuple[int, ...]], expected: Mapping[str, Any]
) -> None:
    optional = {"bn.num_batches_tracked"}
    missing = [key for key in expected if key not in found and key not in optional]
    if missing:
        raise ModelError(
            f"{name} lacks {len(missing)} of the {label}'s weights (such as {missing[0]}): "
            "it is incomplete or damaged."
        )
    for key, tensor in expected.items():
        if key in found and tuple(found[key]) != tuple(tensor.shape):
            raise ModelError(
                f"{name} does not fit the {label}: {key} has the shape {list(found[key])}, "
                f"where {list(tensor.shape)} belongs."
            )
    extra = [
        key for key in found if key not in expected and key.startswith(("encoder.", "decoder."))
    ]
    if extra:
        raise ModelError(
            f"{name} holds weights the {label} does not have (such as {extra[0]}): "
            "it is a variant sdstudio does not load."
        )


# --- building -----------------------------------------------------------------


def _empty_model(kind: str, config: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The VAE built on the meta device (no memory, no random init), and its state's
    names and shapes."""
    import diffusers
    import torch

    model_class = getattr(diffusers, _CLASSES[kind])
    accepted = set(inspect.signature(model_class.__init__).parameters) - {"self"}
    arguments = {key: value for key, value in config.items() if key in accepted}
    try:
        with torch.device("meta"):
            model = model_class(**arguments)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ModelError(
            f"The {LABELS[kind]} these weights describe cannot be built ({first_line(error, 200)})."
        ) from None
    return model, dict(model.state_dict())
