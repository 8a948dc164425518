"""Finding, loading and running the annotator networks written in sdstudio (HED,
the "informative drawings" line art generator, OpenPose's body model), beside Depth
Anything (:mod:`~sdstudio.engine.control.depth_estimation`).

Each network's file is looked for under its A1111 name (``ControlNetHED.pth``,
``sk_model.pth``...) in the annotator folders, where A1111 keeps it in
``annotator/downloads/<module>/`` and ComfyUI in ``ckpts/lllyasviel/Annotators/``
(the Hugging Face repository all of them come from). The file is read as tensors only
and loaded with every key checked, so another file of the same name is refused with a
clear message rather than making a map of noise.
"""

from __future__ import annotations

from collections.abc import Callable
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

HUB_REPO = "lllyasviel/Annotators"
"""Where every file these modules read is published (ComfyUI keeps the repository's
layout under its ``ckpts`` folder)."""

DEPTH_MODULES = frozenset({"depth_anything", "depth_anything_v2"})


def find_annotator_file(module: str, annotators: Annotators | None) -> Path:
    """The module's weights file (its A1111 name, any case) under the annotator folders.
    Raises :class:`ModelError` naming the file, where the tools keep it and the folders
    looked in."""
    needed = WEIGHTS[module]
    wanted = needed.files[0].lower()

    def rank(path: Path) -> int | None:
        return 0 if path.name.lower() == wanted and path.is_file() else None

    found = annotators.find(rank) if annotators else None
    if found is not None:
        return found
    folders = annotators.folders() if annotators else []
    looked = "; ".join(str(folder) for folder in folders) or "no annotator folder exists"
    raise ModelError(
        f"The {module} preprocessor needs {needed.files[0]}: A1111 keeps it in "
        f"{A1111_FOLDER}/{needed.folder}/, ComfyUI in {COMFYUI_FOLDER}/{HUB_REPO}/ "
        f"(it is in the Hugging Face repository {HUB_REPO}); sdstudio also looks in its "
        f"models/{FOLDER_NAME} folder. Looked in: {looked}."
    )


def load_network(path: Path, build: Callable[[dict[str, Any]], Any], what: str) -> Any:
    """The network ``build`` makes for the tensors of ``path`` (a pickle read as tensors
    only), with every weight loaded and checked: a file with other weights is refused as
    not being ``what``. In eval mode, float32, on the CPU."""
    from sdstudio.engine.models.loading import load_pickle_state_dict

    try:
        state = load_pickle_state_dict(path)
    except ModelError:
        raise
    except Exception as error:  # a damaged file can fail deeper in the unpickler
        raise ModelError(f"{path} cannot be read as a PyTorch checkpoint ({error}).") from None
    try:
        network = build(state)
    except (KeyError, IndexError, ValueError, AttributeError):
        raise _not_the_network(path, what, "its layers are not the ones expected") from None
    wanted = set(network.state_dict())
    missing = sorted(wanted - state.keys())
    unknown = sorted(state.keys() - wanted)
    if missing or unknown:
        raise _not_the_network(
            path,
            what,
            f"{len(missing)} weights missing, {len(unknown)} unknown, such as "
            f"{(missing or unknown)[0]!r}",
        )
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError:  # a tensor of another shape than the layers around it tell
        raise _not_the_network(path, what, "a weight has another shape") from None
    return network.float().eval()


def _not_the_network(path: Path, what: str, why: str) -> ModelError:
    return ModelError(f"{path} is not the {what} weights ({why}).")


def shape_of(state: dict[str, Any], key: str) -> tuple[int, ...]:
    """The shape of a tensor of ``state`` (``KeyError`` when it is absent)."""
    return tuple(int(side) for side in state[key].shape)


def padded_to_64(pixels: np.ndarray) -> np.ndarray:
    """The image with its bottom and right edges repeated to sides that are multiples of
    64, as A1111 pads every image before an annotator (the map is cut back after)."""
    import numpy as np

    height, width = pixels.shape[:2]
    pad = [[0, -height % 64], [0, -width % 64]] + [[0, 0]] * (pixels.ndim - 2)
    return np.pad(pixels, pad, mode="edge")


def find_weights(module: str, annotators: Annotators | None) -> Path:
    """The weights the module runs (see :func:`find_annotator_file`; Depth Anything has
    its own search). Raises :class:`ModelError` when they are not there."""
    if module in DEPTH_MODULES:
        from sdstudio.engine.control.depth_estimation import find_depth_model

        return find_depth_model(module, annotators)
    return find_annotator_file(module, annotators)


def annotator_map(pixels: np.ndarray, module: str, annotators: Annotators | None) -> np.ndarray:
    """The module's map of ``pixels`` (RGB ``uint8`` at the processor resolution): RGB
    ``uint8`` of the same height and width."""
    import numpy as np

    pixels = np.ascontiguousarray(pixels)
    if module in DEPTH_MODULES:
        from sdstudio.engine.control.depth_estimation import depth_map

        made = depth_map(pixels, module, annotators)
    elif module in HED_MODULES:
        from sdstudio.engine.control.hed import hed_map

        made = hed_map(pixels, module, annotators)
    elif module in LINEART_MODULES:
        from sdstudio.engine.control.lineart import lineart_map

        made = lineart_map(pixels, module, annotators)
    elif module == "openpose":
        from sdstudio.engine.control.openpose import openpose_map

        made = openpose_map(pixels, annotators)
    else:
        raise ModelError(f"sdstudio does not run the {module} annotator.")
    if made.ndim == 2:
        made = np.repeat(made[:, :, None], 3, axis=2)
    return np.ascontiguousarray(made)


HED_MODULES = frozenset({"hed", "softedge_hed", "hed_safe", "softedge_hedsafe", "scribble_hed"})
LINEART_MODULES = frozenset({"lineart", "lineart_realistic", "lineart_coarse"})

RUNS = (*sorted(DEPTH_MODULES), *sorted(HED_MODULES), *sorted(LINEART_MODULES), "openpose")
"""Every module whose annotator sdstudio runs."""
