"""Random tiny VAEs (``AutoencoderTiny``) in the layouts users have them.

The published tiny VAEs are small already (about a million weights a decoder), so the
test models have their real architecture with random weights: they load through the
same config as the real files. ``write_original`` saves one as madebyollin's decoder and
encoder files (ComfyUI's ``models/vae_approx/taesd_decoder.safetensors``; the original
keys are written from diffusers' ones, the inverse of what
:mod:`sdstudio.engine.tiny_vae_files` reads); ``write_diffusers`` as a diffusers folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def build_tiny_vae(name: str = "taesd", seed: int = 0) -> Any:
    """A random ``AutoencoderTiny`` with the config of the published ``name``
    (``taesd``, ``taesdxl``, ``taesd3``, ``taef1``), its weights drawn from ``seed``."""
    import torch
    from diffusers import AutoencoderTiny

    from sdstudio.engine.tiny_vae_files import KINDS, tiny_config

    kind = next(kind for kind in KINDS if kind.name == name)
    torch.manual_seed(seed)
    vae = AutoencoderTiny(**tiny_config(kind))
    with torch.no_grad():  # small weights keep the random decoder's output in range
        for parameter in vae.parameters():
            parameter.mul_(0.5)
        vae.decoder.layers[-1].bias.fill_(0.5)  # mid-grey pictures, not black ones
    return vae.eval()


def original_state(vae: Any, part: str) -> dict[str, Any]:
    """The ``decoder`` or ``encoder`` weights of ``vae`` under madebyollin's keys."""
    shift = 1 if part == "decoder" else 0  # the original decoder starts with a clamp layer
    state = {}
    for key, value in getattr(vae, part).state_dict().items():
        index, _, rest = key.removeprefix("layers.").partition(".")
        state[f"{int(index) + shift}.{rest}"] = value.detach().clone().contiguous()
    return state


def write_original(
    vae: Any, folder: Path, name: str = "taesd", suffix: str = ".safetensors"
) -> tuple[Path, Path]:
    """Save ``vae`` as ``{name}_decoder{suffix}`` and ``{name}_encoder{suffix}`` in
    ``folder`` (``.safetensors``, or a ``.pth`` pickle); the two paths."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for part in ("decoder", "encoder"):
        path = folder / f"{name}_{part}{suffix}"
        state = original_state(vae, part)
        if suffix == ".safetensors":
            save_file(state, str(path))
        else:
            torch.save(state, path)
        paths.append(path)
    return paths[0], paths[1]


def write_diffusers(vae: Any, folder: Path) -> Path:
    """Save ``vae`` as a diffusers ``AutoencoderTiny`` folder; the folder."""
    vae.save_pretrained(folder)
    return folder
