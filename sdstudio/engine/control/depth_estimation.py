"""Depth maps with Depth Anything (V1 and V2), A1111's ``depth_anything`` and
``depth_anything_v2`` preprocessors, run with transformers'
``DepthAnythingForDepthEstimation``.

The weights are those users have (see :mod:`sdstudio.engine.control.annotators`): the
original checkpoints (A1111's ``depth_anything_vitl14.pth`` and
``depth_anything_v2_vitl.safetensors``, ComfyUI's ``.pth`` files, in any of the sizes
vits, vitb and vitl), whose keys are renamed here to transformers' layout with the
configuration read from the tensors' shapes, or a transformers folder
(``depth-anything/Depth-Anything-V2-Small-hf``). Pickles are read only as tensors.

The map is made as the extension makes it: the image at the processor resolution is
padded to a multiple of 64 (repeating its edge), scaled so that its short side is 518
(sides multiples of the patch size, 14), normalised with ImageNet's mean and deviation;
the predicted depth is scaled back, stretched from its minimum to its maximum over 0 to
255 (near: white) and the padding cut off.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.engine.control.annotators import (
    A1111_FOLDER,
    COMFYUI_FOLDER,
    FOLDER_NAME,
    WEIGHTS,
    Annotators,
)
from sdstudio.engine.errors import ModelError

if TYPE_CHECKING:
    import numpy as np

NET_SIZE = 518
"""The short side the network sees (the extension's, and the models' training size)."""

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

_ORIGINAL_NAMES = {
    1: re.compile(r"depth_anything_vit([slbg])14[\w.-]*\.(pth|pt|safetensors)"),
    2: re.compile(r"depth_anything_v2_vit([slbg])[\w.-]*\.(pth|pt|safetensors)"),
}
"""Original checkpoint names of each version (``..._fp16.safetensors`` copies too)."""

_SIZE_RANK = {"l": 0, "b": 1, "s": 2, "g": 3}
"""The larger model first, as the extension uses the large one."""

_HIDDEN_RANK = {1024: 0, 768: 1, 384: 2}

_V2_LAYERS = {12: [3, 6, 9, 12], 24: [5, 12, 18, 24], 40: [10, 20, 30, 40]}
"""The backbone layers V2's head reads (V1 reads the last four)."""


def version_of(module: str) -> int:
    """1 for ``depth_anything``, 2 for ``depth_anything_v2``."""
    return 2 if module == "depth_anything_v2" else 1


def find_depth_model(module: str, annotators: Annotators | None) -> Path:
    """The weights the module runs: an original checkpoint or a transformers folder of
    its version under the annotator folders. Raises :class:`ModelError` saying what to
    get and where it was looked for."""
    version = version_of(module)
    found = annotators.find(lambda path: _rank(path, version)) if annotators else None
    if found is not None:
        return found
    folders = annotators.folders() if annotators else []
    looked = "; ".join(str(folder) for folder in folders) or "no annotator folder exists"
    needed = WEIGHTS[module]
    hub = (
        "depth-anything/Depth-Anything-V2-Small-hf"
        if version == 2
        else "LiheYoung/depth-anything-small-hf"
    )
    return _raise_missing(module, needed.folder, needed.files[0], hub, looked)


def _raise_missing(module: str, folder: str, file: str, hub: str, looked: str) -> Path:
    raise ModelError(
        f"The {module} preprocessor needs Depth Anything{' V2' if module.endswith('v2') else ''} "
        f"weights: {file} (or its vits / vitb size) as A1111 keeps it in "
        f"{A1111_FOLDER}/{folder}/ or ComfyUI under {COMFYUI_FOLDER}/, or a transformers "
        f"folder such as {hub} in sdstudio's models/{FOLDER_NAME} (the model manager "
        f"downloads Depth Anything V2 Small there). Looked in: {looked}."
    )


def _rank(path: Path, version: int) -> int | None:
    """How good ``path`` is as the weights of ``version`` (lower first), None: not them."""
    name = path.name.lower()
    match = _ORIGINAL_NAMES[version].fullmatch(name)
    if match is not None:
        return _SIZE_RANK[match.group(1)] if path.is_file() else None
    if name != "config.json" or not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        backbone = config["backbone_config"]
        layers = int(backbone["num_hidden_layers"])
        read = list(backbone.get("out_indices") or [])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (
        config.get("model_type") != "depth_anything"
        or config.get("depth_estimation_type") == "metric"
    ):
        return None
    # V1's head reads the backbone's last four layers, V2's layers spread over its depth.
    v1 = read == list(range(layers - 3, layers + 1))
    if v1 != (version == 1) or not any(path.parent.glob("*.safetensors")):
        return None
    return 10 + _HIDDEN_RANK.get(backbone.get("hidden_size"), 3)


def load_depth_model(path: Path, module: str) -> Any:
    """``DepthAnythingForDepthEstimation`` in eval mode, from ``path``: a ``config.json``
    of a transformers folder (or the folder) or an original checkpoint."""
    import torch
    from transformers import DepthAnythingForDepthEstimation

    if path.name == "config.json":
        path = path.parent
    if path.is_dir():
        try:
            model = DepthAnythingForDepthEstimation.from_pretrained(
                path, local_files_only=True, use_safetensors=True
            )
        except Exception as error:  # any unreadable file or config of the folder
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ModelError(f"The Depth Anything folder {path} cannot be read: {first}") from None
        return model.float().eval()  # the input is float32 whatever the file holds
    state = read_original(path)
    config = infer_config(state, version_of(module), path.name)
    with torch.device("meta"):
        model = DepthAnythingForDepthEstimation(config)
    converted = convert_original(state, set(model.state_dict()), path.name)
    try:
        model.load_state_dict(converted, strict=True, assign=True)
    except RuntimeError:  # a tensor of another shape than its neighbours tell
        raise _not_depth_anything(path.name) from None
    return model.float().eval()


def read_original(path: Path) -> dict[str, Any]:
    """The tensors of an original checkpoint (safetensors, or a pickle read as tensors)."""
    from sdstudio.engine.models.loading import load_pickle_state_dict

    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as error:  # safetensors' own error for a bad header, OSError...
            raise ModelError(f"{path.name} cannot be read as safetensors: {error}") from None
    return load_pickle_state_dict(path)


def infer_config(state: dict[str, Any], version: int, name: str = "the checkpoint") -> Any:
    """The ``DepthAnythingConfig`` of an original checkpoint, from its tensors' shapes
    (the backbone's width, depth and patch size, the head's widths); the heads of
    attention are DINOv2's, 64 wide."""
    from transformers import DepthAnythingConfig, Dinov2Config

    try:
        hidden = int(state["pretrained.cls_token"].shape[-1])
        blocks = {int(k.split(".")[2]) for k in state if k.startswith("pretrained.blocks.")}
        layers = max(blocks) + 1
        patch = int(state["pretrained.patch_embed.proj.weight"].shape[-1])
        positions = int(state["pretrained.pos_embed"].shape[1]) - 1
        mlp = int(state["pretrained.blocks.0.mlp.fc1.weight"].shape[0])
        neck = [int(state[f"depth_head.projects.{i}.weight"].shape[0]) for i in range(4)]
        fusion = int(state["depth_head.scratch.layer1_rn.weight"].shape[0])
        head = int(state["depth_head.scratch.output_conv2.0.weight"].shape[0])
    except (KeyError, IndexError, ValueError, AttributeError):
        raise _not_depth_anything(name) from None
    if hidden <= 0 or mlp % hidden:
        raise _not_depth_anything(name)
    if version == 2:
        out = _V2_LAYERS.get(layers) or [round(layers * k / 4) for k in range(1, 5)]
    else:
        out = list(range(layers - 3, layers + 1))
    settings: dict[str, Any] = {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, hidden // 64),
        "mlp_ratio": mlp // hidden,
        "patch_size": patch,
        "image_size": math.isqrt(positions) * patch,
        "layer_norm_eps": 1e-6,
        "out_indices": out,  # a backbone setting the config's signature does not declare
        "apply_layernorm": True,
        "reshape_hidden_states": False,
    }
    backbone = Dinov2Config(**settings)
    return DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=hidden,
        patch_size=patch,
        fusion_hidden_size=fusion,
        neck_hidden_sizes=neck,
        head_hidden_size=head,
        depth_estimation_type="relative",
    )


def _not_depth_anything(name: str) -> ModelError:
    return ModelError(f"{name} is not a Depth Anything checkpoint (its weights do not match).")


_RENAMES = (
    (r"pretrained\.cls_token", "backbone.embeddings.cls_token"),
    (r"pretrained\.mask_token", "backbone.embeddings.mask_token"),
    (r"pretrained\.pos_embed", "backbone.embeddings.position_embeddings"),
    (r"pretrained\.patch_embed\.proj\.", "backbone.embeddings.patch_embeddings.projection."),
    (r"pretrained\.blocks\.(\d+)\.norm([12])\.", r"backbone.encoder.layer.\1.norm\2."),
    (
        r"pretrained\.blocks\.(\d+)\.ls([12])\.gamma",
        r"backbone.encoder.layer.\1.layer_scale\2.lambda1",
    ),
    (r"pretrained\.blocks\.(\d+)\.mlp\.fc([12])\.", r"backbone.encoder.layer.\1.mlp.fc\2."),
    (r"pretrained\.blocks\.(\d+)\.attn\.proj\.", r"backbone.encoder.layer.\1.attention.{out}."),
    (r"pretrained\.norm\.", "backbone.layernorm."),
    (r"depth_head\.projects\.(\d)\.", r"neck.reassemble_stage.layers.\1.projection."),
    (r"depth_head\.resize_layers\.(\d)\.", r"neck.reassemble_stage.layers.\1.resize."),
    (r"depth_head\.scratch\.layer(\d)_rn\.", "neck.convs.{layer}."),
    (
        r"depth_head\.scratch\.refinenet(\d)\.out_conv\.",
        "neck.fusion_stage.layers.{fusion}.projection.",
    ),
    (
        r"depth_head\.scratch\.refinenet(\d)\.resConfUnit([12])\.conv([12])\.",
        r"neck.fusion_stage.layers.{fusion}.residual_layer\2.convolution\3.",
    ),
    (r"depth_head\.scratch\.output_conv1\.", "head.conv1."),
    (r"depth_head\.scratch\.output_conv2\.0\.", "head.conv2."),
    (r"depth_head\.scratch\.output_conv2\.2\.", "head.conv3."),
)
"""Original name prefix → transformers' name prefix. The original's fusion blocks are
numbered from the deepest (``refinenet4`` fuses first), transformers' from 0 upwards;
its ``layer1_rn`` is ``convs.0``."""

_RULES = [(re.compile(pattern), target) for pattern, target in _RENAMES]
_QKV = re.compile(r"pretrained\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)")


def convert_original(
    state: dict[str, Any], wanted: set[str], name: str = "the checkpoint"
) -> dict[str, Any]:
    """An original checkpoint's tensors under transformers' names (``wanted``: the names
    of the model to load them into; its attention naming, older ``attention.attention.
    query`` or newer ``attention.q_proj``, is followed). Raises :class:`ModelError` for
    a tensor it does not know or one the model lacks."""
    new_style = any(".attention.q_proj." in key for key in wanted)
    projections = (
        ("q_proj", "k_proj", "v_proj")
        if new_style
        else ("attention.query", "attention.key", "attention.value")
    )
    out_name = "o_proj" if new_style else "output.dense"
    converted: dict[str, Any] = {}
    for key, value in state.items():
        qkv = _QKV.fullmatch(key)
        if qkv is not None:
            layer, kind = qkv.groups()
            for part, chunk in zip(projections, value.chunk(3, dim=0), strict=True):
                converted[f"backbone.encoder.layer.{layer}.attention.{part}.{kind}"] = chunk
            continue
        converted[_renamed(key, out_name, name)] = value
    missing = sorted(wanted - converted.keys())
    unexpected = sorted(converted.keys() - wanted)
    if missing or unexpected:
        raise ModelError(
            f"{name} is not a Depth Anything checkpoint this version reads "
            f"({len(missing)} weights missing, {len(unexpected)} unknown, such as "
            f"{(missing or unexpected)[0]})."
        )
    return converted


def _renamed(key: str, out_name: str, name: str) -> str:
    for rule, target in _RULES:
        match = rule.match(key)
        if match is None:
            continue
        new = match.expand(target).replace("{out}", out_name)
        if "{fusion}" in new:  # refinenet4 is the first fusion layer
            new = new.replace("{fusion}", str(4 - int(match.group(1))))
        if "{layer}" in new:  # layer1_rn is convs.0
            new = new.replace("{layer}", str(int(match.group(1)) - 1))
        return new + key[match.end() :]
    raise ModelError(f"{name} is not a Depth Anything checkpoint (it has {key!r}).")


def depth_map(pixels: np.ndarray, module: str, annotators: Annotators | None) -> np.ndarray:
    """The module's depth map of ``pixels`` (RGB ``uint8`` at the processor resolution):
    ``uint8``, same height and width, near white."""
    import numpy as np
    import torch

    path = find_depth_model(module, annotators)
    assert annotators is not None
    device = annotators.device
    model = annotators.cached(
        ("depth", str(path), module, device), lambda: load_depth_model(path, module).to(device)
    )
    height, width = pixels.shape[:2]
    padded = np.pad(pixels, [[0, _pad64(height)], [0, _pad64(width)], [0, 0]], mode="edge")
    tensor = _network_input(padded).to(device)
    with torch.inference_mode():
        depth = model(pixel_values=tensor).predicted_depth
        depth = torch.nn.functional.interpolate(
            depth[:, None].float(), padded.shape[:2], mode="bilinear", align_corners=False
        )[0, 0]
        low, high = depth.min(), depth.max()
        if not torch.isfinite(high - low) or float(high - low) <= 0:
            scaled = torch.zeros_like(depth)
        else:
            scaled = (depth - low) / (high - low) * 255.0
    result = scaled.cpu().numpy().astype(np.uint8)  # truncated, as the extension does
    return np.ascontiguousarray(result[:height, :width])


def _pad64(side: int) -> int:
    return -side % 64


def network_size(height: int, width: int) -> tuple[int, int]:
    """The (height, width) the network sees: the smaller side 518, both sides multiples
    of 14 (rounded half to even, never below 518)."""
    scale = max(NET_SIZE / height, NET_SIZE / width)

    def side(value: float) -> int:
        rounded = round(value / 14) * 14
        return rounded if rounded >= NET_SIZE else math.ceil(value / 14) * 14

    return side(height * scale), side(width * scale)


def _network_input(pixels: np.ndarray) -> Any:
    import cv2
    import numpy as np
    import torch

    height, width = network_size(*pixels.shape[:2])
    scaled = cv2.resize(
        pixels.astype(np.float32) / 255.0, (width, height), interpolation=cv2.INTER_CUBIC
    )
    normalised = (scaled - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))[None]
