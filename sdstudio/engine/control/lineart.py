"""Line art with the "informative drawings" generator (Chan, Durand and Isola, 2022),
A1111's ``lineart_realistic`` (``lineart``, from ``sk_model.pth``) and
``lineart_coarse`` (from ``sk_model2.pth``) preprocessors.

The generator is a CycleGAN-style residual network: a 7x7 convolution (64 wide) after
a 3-pixel reflection pad, two stride-2 convolutions down (128, 256), three residual
blocks (reflection-padded 3x3 convolutions), two transposed convolutions up and a 7x7
convolution to one channel with a sigmoid; every hidden convolution is followed by an
instance norm without weights and a ReLU. It draws dark lines on white from the image
in 0..1; the extension inverts that, white lines on black, as the lineart ControlNet
reads them.
"""

from __future__ import annotations

import re
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

WIDTH = 64
"""The published first layer's width (doubled by each step down)."""

BLOCKS = 3
"""The published residual blocks."""

_BLOCK_KEY = re.compile(r"model2\.(\d+)\.conv_block\.1\.weight")


def lineart_network(width: int = WIDTH, blocks: int = BLOCKS) -> Any:
    """A generator ``width`` wide at its ends with ``blocks`` residual blocks, with the
    published weights' names (``model0`` to ``model4``)."""
    import torch
    from torch import nn

    def norm(channels: int) -> nn.Module:
        return nn.InstanceNorm2d(channels)

    class ResidualBlock(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.conv_block = nn.Sequential(
                nn.ReflectionPad2d(1),
                nn.Conv2d(channels, channels, 3),
                norm(channels),
                nn.ReLU(),
                nn.ReflectionPad2d(1),
                nn.Conv2d(channels, channels, 3),
                norm(channels),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv_block(x)

    class Generator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model0 = nn.Sequential(
                nn.ReflectionPad2d(3), nn.Conv2d(3, width, 7), norm(width), nn.ReLU()
            )
            down: list[nn.Module] = []
            for factor in (1, 2):
                channels = width * factor
                down += [
                    nn.Conv2d(channels, channels * 2, 3, stride=2, padding=1),
                    norm(channels * 2),
                    nn.ReLU(),
                ]
            self.model1 = nn.Sequential(*down)
            self.model2 = nn.Sequential(*(ResidualBlock(width * 4) for _ in range(blocks)))
            up: list[nn.Module] = []
            for factor in (4, 2):
                channels = width * factor
                up += [
                    nn.ConvTranspose2d(
                        channels, channels // 2, 3, stride=2, padding=1, output_padding=1
                    ),
                    norm(channels // 2),
                    nn.ReLU(),
                ]
            self.model3 = nn.Sequential(*up)
            self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(width, 1, 7), nn.Sigmoid())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for stage in (self.model0, self.model1, self.model2, self.model3, self.model4):
                x = stage(x)
            return x

    return Generator()


def network_from_state(state: dict[str, Any]) -> Any:
    """The generator the tensors of ``state`` fit (width and blocks read from them)."""
    width = shape_of(state, "model0.1.weight")[0]
    blocks = sum(1 for key in state if _BLOCK_KEY.fullmatch(key))
    if blocks == 0:
        raise KeyError("model2")
    return lineart_network(width, blocks)


def drawn_lines(network: Any, pixels: np.ndarray, device: str = "cpu") -> np.ndarray:
    """What the generator draws from ``pixels`` (RGB ``uint8``, sides multiples of 4):
    ``uint8``, dark lines on white."""
    import numpy as np
    import torch

    tensor = torch.from_numpy(pixels.astype(np.float32).transpose(2, 0, 1) / 255.0)
    with torch.inference_mode():
        lines = network(tensor[None].to(device))[0, 0].float().cpu().numpy()
    return (lines * 255.0).clip(0, 255).astype(np.uint8)


def lineart_map(pixels: np.ndarray, module: str, annotators: Annotators | None) -> np.ndarray:
    """The module's map of ``pixels`` (RGB ``uint8`` at the processor resolution):
    ``uint8``, same height and width, lines white on black."""
    path = find_annotator_file(module, annotators)
    assert annotators is not None
    device = annotators.device
    file = path.name
    network = annotators.cached(
        ("lineart", str(path), device),
        lambda: load_network(path, network_from_state, f"line art ({file})").to(device),
    )
    height, width = pixels.shape[:2]
    lines = drawn_lines(network, padded_to_64(pixels), device)
    return 255 - lines[:height, :width]
