"""Body poses with OpenPose, A1111's ``openpose`` preprocessor (body only), from
``body_pose_model.pth``.

The network is CMU's body model (Cao et al., 2017), as converted from Caffe with its
layer names: VGG-19's first ten convolutions and two more (``conv4_3_CPM``,
``conv4_4_CPM``) make 128 features at an eighth of the size; six stages follow, each
with two branches, ``L1`` giving 38 part affinity fields (an x and a y channel for each
of 19 limbs) and ``L2`` 19 heat maps (18 keypoints and the background); from the second
stage on each reads the features beside the previous stage's two outputs. Every
convolution but a branch's last is followed by a ReLU; the last stage's heat maps keep
the ReLU the converted model has always had (a name was listed twice among those
without).

The extension's steps are followed: the image (BGR) is scaled so that its height is
184 (half of 368), padded on the right and bottom to a multiple of 8 with grey, read as
``x / 256 - 0.5``; the outputs are scaled back to the image; keypoints and people are
found by :mod:`~sdstudio.engine.control.openpose_draw`, which draws them.
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

BOX_SIZE = 368
SCALE = 0.5
"""The network sees the image at a height of ``BOX_SIZE * SCALE`` (the extension's one
scale)."""

STRIDE = 8
PAD_VALUE = 128

PAFS = 38
HEATMAPS = 19

WIDTHS = (64, 128, 256, 512, 256, 128, 512, 128)
"""The published widths: VGG's four (``conv1`` to ``conv4``), ``conv4_3_CPM``,
``conv4_4_CPM`` (the features), the first stage's wide 1x1 layer and the later stages'."""


def _layer_table(widths: tuple[int, ...]) -> list[tuple[str, int, int, int, bool]]:
    """(name, inputs, outputs, kernel, ReLU after) of every convolution, in order; a
    name starting with ``pool`` is a 2x2 max-pool."""
    vgg1, vgg2, vgg3, vgg4, cpm3, features, wide, hidden = widths
    table: list[tuple[str, int, int, int, bool]] = []

    def conv(name: str, inputs: int, outputs: int, kernel: int = 3, relu: bool = True) -> None:
        table.append((name, inputs, outputs, kernel, relu))

    conv("conv1_1", 3, vgg1)
    conv("conv1_2", vgg1, vgg1)
    conv("pool1_stage1", 0, 0, 2)
    conv("conv2_1", vgg1, vgg2)
    conv("conv2_2", vgg2, vgg2)
    conv("pool2_stage1", 0, 0, 2)
    conv("conv3_1", vgg2, vgg3)
    for index in (2, 3, 4):
        conv(f"conv3_{index}", vgg3, vgg3)
    conv("pool3_stage1", 0, 0, 2)
    conv("conv4_1", vgg3, vgg4)
    conv("conv4_2", vgg4, vgg4)
    conv("conv4_3_CPM", vgg4, cpm3)
    conv("conv4_4_CPM", cpm3, features)
    for branch, out in (("L1", PAFS), ("L2", HEATMAPS)):
        for index in (1, 2, 3):
            conv(f"conv5_{index}_CPM_{branch}", features, features)
        conv(f"conv5_4_CPM_{branch}", features, wide, 1)
        conv(f"conv5_5_CPM_{branch}", wide, out, 1, relu=False)
    for stage in range(2, 7):
        for branch, out in (("L1", PAFS), ("L2", HEATMAPS)):
            conv(f"Mconv1_stage{stage}_{branch}", PAFS + HEATMAPS + features, hidden, 7)
            for index in (2, 3, 4, 5):
                conv(f"Mconv{index}_stage{stage}_{branch}", hidden, hidden, 7)
            conv(f"Mconv6_stage{stage}_{branch}", hidden, hidden, 1)
            last_relu = stage == 6 and branch == "L2"
            conv(f"Mconv7_stage{stage}_{branch}", hidden, out, 1, relu=last_relu)
    return table


def body_network(widths: tuple[int, ...] = WIDTHS) -> Any:
    """The body model at ``widths`` with the published weights' names (``conv1_1``,
    ``Mconv7_stage6_L2``...); its forward gives the last stage's (fields, heat maps)."""
    import torch
    from torch import nn

    table = _layer_table(widths)

    class BodyPoseModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, inputs, outputs, kernel, _relu in table:
                if not name.startswith("pool"):
                    self.add_module(name, nn.Conv2d(inputs, outputs, kernel, padding=kernel // 2))

        def _run(self, x: torch.Tensor, names: list[tuple[str, bool]]) -> torch.Tensor:
            for name, relu in names:
                if name.startswith("pool"):
                    x = nn.functional.max_pool2d(x, 2, 2)
                    continue
                x = getattr(self, name)(x)
                if relu:
                    x = nn.functional.relu(x)
            return x

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            features = self._run(x, _BACKBONE)
            hidden = features
            fields = heat = features
            for stage in range(1, 7):
                fields = self._run(hidden, _BRANCHES[(stage, "L1")])
                heat = self._run(hidden, _BRANCHES[(stage, "L2")])
                hidden = torch.cat([fields, heat, features], 1)
            return fields, heat

    return BodyPoseModel()


def _grouped() -> tuple[list[tuple[str, bool]], dict[tuple[int, str], list[tuple[str, bool]]]]:
    backbone: list[tuple[str, bool]] = []
    branches: dict[tuple[int, str], list[tuple[str, bool]]] = {}
    for name, _inputs, _outputs, _kernel, relu in _layer_table(WIDTHS):
        if name.endswith(("_L1", "_L2")):
            stage = 1 if name.startswith("conv5") else int(name.split("stage")[1][0])
            branches.setdefault((stage, name[-2:]), []).append((name, relu))
        else:
            backbone.append((name, relu))
    return backbone, branches


_BACKBONE, _BRANCHES = _grouped()


def network_from_state(state: dict[str, Any]) -> Any:
    """The body model the tensors of ``state`` fit (its widths read from them)."""
    names = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv4_3_CPM", "conv4_4_CPM")
    widths = [shape_of(state, f"{name}.weight")[0] for name in names]
    widths.append(shape_of(state, "conv5_4_CPM_L1.weight")[0])
    widths.append(shape_of(state, "Mconv1_stage2_L1.weight")[0])
    if shape_of(state, "Mconv7_stage6_L1.weight")[0] != PAFS:
        raise ValueError("not 19 limbs")
    return body_network(tuple(widths))


def _resized(values: np.ndarray, width: int, height: int) -> np.ndarray:
    """``values`` at (``width``, ``height``): area-averaged when it shrinks, Lanczos when
    it grows (the extension's choice, made on the sum of the sides)."""
    import cv2

    grows = (width + height) / (values.shape[1] + values.shape[0]) >= 1
    interpolation = cv2.INTER_LANCZOS4 if grows else cv2.INTER_AREA
    if values.ndim == 3 and values.shape[2] > 4:
        import numpy as np

        # OpenCV does not shrink more than 4 channels at a time by area.
        parts = [
            _resized(values[:, :, i : i + 4], width, height) for i in range(0, values.shape[2], 4)
        ]
        return np.concatenate([p if p.ndim == 3 else p[:, :, None] for p in parts], axis=2)
    return cv2.resize(values, (width, height), interpolation=interpolation)


def body_outputs(
    network: Any, pixels: np.ndarray, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """The network's heat maps (height, width, 19) and part affinity fields (height,
    width, 38) of ``pixels`` (RGB ``uint8``), at the image's size."""
    import numpy as np
    import torch

    height, width = pixels.shape[:2]
    scale = SCALE * BOX_SIZE / height
    scaled = _resized(pixels[:, :, ::-1].copy(), int(width * scale), int(height * scale))
    seen_h, seen_w = scaled.shape[:2]
    padded = np.pad(
        scaled,
        [[0, -seen_h % STRIDE], [0, -seen_w % STRIDE], [0, 0]],
        constant_values=PAD_VALUE,
    )
    tensor = torch.from_numpy(padded.astype(np.float32).transpose(2, 0, 1) / 256.0 - 0.5)
    with torch.inference_mode():
        fields, heat = network(tensor[None].to(device))
    outputs = []
    for output in (heat, fields):
        values = output[0].float().cpu().numpy().transpose(1, 2, 0)
        values = _resized(values, values.shape[1] * STRIDE, values.shape[0] * STRIDE)
        outputs.append(_resized(values[:seen_h, :seen_w], width, height))
    return outputs[0], outputs[1]


def openpose_map(pixels: np.ndarray, annotators: Annotators | None) -> np.ndarray:
    """The ``openpose`` map of ``pixels`` (RGB ``uint8`` at the processor resolution):
    RGB ``uint8``, same height and width, the bodies' skeletons on black."""
    from sdstudio.engine.control.openpose_draw import draw_bodies, find_bodies

    path = find_annotator_file("openpose", annotators)
    assert annotators is not None
    device = annotators.device
    network = annotators.cached(
        ("openpose", str(path), device),
        lambda: load_network(path, network_from_state, "OpenPose body (body_pose_model.pth)").to(
            device
        ),
    )
    height, width = pixels.shape[:2]
    padded = padded_to_64(pixels)
    heatmaps, fields = body_outputs(network, padded, device)
    peaks, people = find_bodies(heatmaps, fields)
    return draw_bodies(padded.shape[:2], peaks, people)[:height, :width]
