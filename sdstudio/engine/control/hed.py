"""Soft edges with HED, A1111's ``softedge_hed`` (``hed``), ``softedge_hedsafe``
(``hed_safe``) and ``scribble_hed`` preprocessors, from ``ControlNetHED.pth``.

The network is lllyasviel's Apache-2 re-implementation of HED for ControlNet 1.1: five
VGG-like blocks of 3x3 convolutions (2, 2, 3, 3 and 3 of them, 64 to 512 wide), each
after the first starting with a 2x2 max-pool, each giving a one-channel edge map through
a 1x1 projection; the image goes in as 0..255 RGB minus a learned mean (``norm``).

The map is made as the extension makes it: the five edge maps are scaled to the image
(bilinear), averaged, put through a sigmoid; ``safe`` quantises that to three levels
(0, 0.5, 1) so the ControlNet cannot read hidden detail in faint edges; the scribble
keeps the thin strong lines (non-maximum suppression, blur, threshold) as white on
black.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sdstudio.engine.control.annotator_files import (
    find_annotator_file,
    load_network,
    padded_to_64,
    shape_of,
)

if TYPE_CHECKING:
    import numpy as np

    from sdstudio.engine.control.annotators import Annotators

LAYERS = (2, 2, 3, 3, 3)
"""The convolutions of each block."""

WIDTHS = (64, 128, 256, 512, 512)
"""The published blocks' widths (a file's own are read from its shapes)."""


def hed_network(widths: tuple[int, ...] = WIDTHS) -> Any:
    """An HED network of the blocks' ``widths``, with the published weights' names."""
    import torch
    from torch import nn

    class DoubleConvBlock(nn.Module):
        """Convolutions with ReLU, then a 1x1 projection to one edge channel."""

        def __init__(self, inputs: int, width: int, layers: int) -> None:
            super().__init__()
            self.convs = nn.Sequential(
                *(
                    nn.Conv2d(inputs if i == 0 else width, width, 3, padding=1)
                    for i in range(layers)
                )
            )
            self.projection = nn.Conv2d(width, 1, 1)

        def forward(self, x: torch.Tensor, pool: bool) -> tuple[torch.Tensor, torch.Tensor]:
            if pool:
                x = nn.functional.max_pool2d(x, 2, 2)
            for conv in self.convs:
                x = nn.functional.relu(conv(x))
            return x, self.projection(x)

    class ControlNetHED(nn.Module):
        """The five blocks; gives their edge maps, coarser each time."""

        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
            inputs = 3
            for index, (width, layers) in enumerate(zip(widths, LAYERS, strict=True), 1):
                self.add_module(f"block{index}", DoubleConvBlock(inputs, width, layers))
                inputs = width

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            hidden = x - self.norm
            edges = []
            for index in range(len(LAYERS)):
                block = getattr(self, f"block{index + 1}")
                hidden, edge = block(hidden, index > 0)
                edges.append(edge)
            return edges

    return ControlNetHED()


def network_from_state(state: dict[str, Any]) -> Any:
    """The HED network the tensors of ``state`` fit (its widths read from them)."""
    widths = tuple(shape_of(state, f"block{i}.convs.0.weight")[0] for i in range(1, 6))
    return hed_network(widths)


def hed_edges(network: Any, pixels: np.ndarray, device: str = "cpu") -> np.ndarray:
    """The averaged edges of ``pixels`` (RGB ``uint8``) after the sigmoid: float 0..1 of
    the image's height and width."""
    import cv2
    import numpy as np
    import torch

    height, width = pixels.shape[:2]
    tensor = torch.from_numpy(pixels.astype(np.float32).transpose(2, 0, 1))[None].to(device)
    with torch.inference_mode():
        edges = [edge[0, 0].float().cpu().numpy() for edge in network(tensor)]
    scaled = [cv2.resize(edge, (width, height), interpolation=cv2.INTER_LINEAR) for edge in edges]
    mean = np.mean(np.stack(scaled, axis=2), axis=2).astype(np.float64)
    with np.errstate(over="ignore"):  # exp of a large negative edge: 0 after the sigmoid
        return 1.0 / (1.0 + np.exp(-mean))


def safe_step(edges: np.ndarray, steps: int = 2) -> np.ndarray:
    """``edges`` (0..1) quantised to ``steps + 1`` levels: 0, 1/steps... 1 (and the
    value 1 itself to (steps + 1) / steps, as the extension's rounding down gives)."""
    import numpy as np

    scaled = edges.astype(np.float32) * float(steps + 1)
    return scaled.astype(np.int32).astype(np.float32) / float(steps)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """0..1 to 0..255, truncated as the extension does."""
    import numpy as np

    return (values * 255.0).clip(0, 255).astype(np.uint8)


def scribble(edges: np.ndarray) -> np.ndarray:
    """The scribble of an edge map (``uint8``): the ridges of edges above half,
    thickened by a blur, white on black."""
    import cv2
    import numpy as np

    blurred = cv2.GaussianBlur(edges.astype(np.float32), (0, 0), 3.0)
    ridges = np.zeros_like(blurred)
    for kernel in _DIRECTIONS:
        # A pixel no smaller than its two neighbours along a direction is on a ridge.
        np.putmask(ridges, cv2.dilate(blurred, kernel=kernel) == blurred, blurred)
    thin = np.where(ridges > 127, 255, 0).astype(np.uint8)
    thick = cv2.GaussianBlur(thin, (0, 0), 3.0)
    return np.where(thick > 4, 255, 0).astype(np.uint8)


def _directions() -> list[Any]:
    import numpy as np

    lines = (
        [[0, 0, 0], [1, 1, 1], [0, 0, 0]],
        [[0, 1, 0], [0, 1, 0], [0, 1, 0]],
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        [[0, 0, 1], [0, 1, 0], [1, 0, 0]],
    )
    return [np.array(line, dtype=np.uint8) for line in lines]


_DIRECTIONS = _directions()


def hed_map(pixels: np.ndarray, module: str, annotators: Annotators | None) -> np.ndarray:
    """The module's map of ``pixels`` (RGB ``uint8`` at the processor resolution):
    ``uint8``, same height and width, edges white."""
    path = find_annotator_file(module, annotators)
    assert annotators is not None
    device = annotators.device
    network = annotators.cached(
        ("hed", str(path), device),
        lambda: load_network(path, network_from_state, "HED (ControlNetHED.pth)").to(device),
    )
    height, width = pixels.shape[:2]
    edges = hed_edges(network, padded_to_64(pixels), device)
    if module in ("hed_safe", "softedge_hedsafe"):
        edges = safe_step(edges)
    made = to_uint8(edges)[:height, :width]
    return scribble(made) if module == "scribble_hed" else made
