"""Tiny random annotator weights for tests, saved as the published files are
(``ControlNetHED.pth``, ``sk_model.pth`` / ``sk_model2.pth``, ``body_pose_model.pth``):
pickled state dicts with the published key names, at reduced widths (the networks read
their widths from the shapes), every weight drawn from a normal distribution so that
the maps are not flat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HED_WIDTHS = (4, 8, 8, 8, 8)
LINEART_WIDTH = 4
OPENPOSE_WIDTHS = (4, 4, 8, 8, 8, 8, 8, 8)


def randomised(network: Any, seed: int = 0, scale: float = 0.3) -> Any:
    """``network`` with every weight drawn from N(0, ``scale``) (biases made positive, so
    that the ReLUs let something through)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
            if parameter.ndim == 1:
                parameter.abs_()
    return network.eval()


def tiny_hed(seed: int = 0) -> Any:
    from sdstudio.engine.control.hed import hed_network

    return randomised(hed_network(HED_WIDTHS), seed)


def tiny_lineart(seed: int = 0) -> Any:
    from sdstudio.engine.control.lineart import lineart_network

    return randomised(lineart_network(LINEART_WIDTH), seed)


def tiny_openpose(seed: int = 0) -> Any:
    from sdstudio.engine.control.openpose import body_network

    return randomised(body_network(OPENPOSE_WIDTHS), seed, scale=0.1)


def save_state(network: Any, path: Path) -> Path:
    """``network``'s state dict pickled at ``path`` (its folders made)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), path)
    return path


def save_hed(path: Path, seed: int = 0) -> Path:
    return save_state(tiny_hed(seed), path)


def save_lineart(path: Path, seed: int = 0) -> Path:
    return save_state(tiny_lineart(seed), path)


def save_openpose(path: Path, seed: int = 0) -> Path:
    return save_state(tiny_openpose(seed), path)


def save_state_dict(state: dict[str, Any], path: Path) -> Path:
    """``state`` pickled at ``path`` (its folders made)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path
