"""Union ControlNets (xinsir's controlnet-union-sdxl-1.0 and its ProMax): one ControlNet
that reads any of several kinds of control map, told which by the unit's control type.

The types are numbered as diffusers' ``ControlNetUnionModel`` and the model card number
them (``control_mode``): 0 openpose, 1 depth, 2 thick lines (HED, PiDiNet, scribble,
soft edge), 3 thin lines (canny, lineart, anime lineart, MLSD), 4 normal map,
5 segmentation, and in ProMax (8 types) 6 tile, 7 repaint (inpaint). The names A1111's
ControlNet extension writes ("Soft Edge", "Hard Edge", "Normal Map", "Segmentation"...),
ComfyUI's ``SetUnionControlNetType`` names ("hed/pidi/scribble/ted",
"canny/lineart/anime_lineart/mlsd") and the preprocessor names users know are read.

diffusers runs Union ControlNets with SDXL only, and not mixed with plain ControlNets in
one pipeline; several Union units run together (``MultiControlNetUnionModel``).
"""

from __future__ import annotations

import inspect
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import InvalidRequest, ModelError

TYPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("openpose", ("openpose", "pose", "dwpose", "openpose full")),
    ("depth", ("depth", "depth midas", "depth zoe", "depth anything")),
    ("softedge", ("softedge", "soft edge", "hed", "pidi", "pidinet", "scribble", "sketch", "ted")),
    ("canny", ("canny", "lineart", "anime lineart", "mlsd", "hard edge", "lineart anime")),
    ("normal", ("normal", "normal map", "normalbae", "normal bae")),
    ("segment", ("segment", "segmentation", "seg", "semantic segmentation")),
    ("tile", ("tile", "blur")),
    ("repaint", ("repaint", "inpaint", "outpaint")),
)
"""Each ``control_mode`` index's name and the names that choose it."""

PIPELINES = {
    "txt2img": "StableDiffusionXLControlNetUnionPipeline",
    "img2img": "StableDiffusionXLControlNetUnionImg2ImgPipeline",
    "inpaint": "StableDiffusionXLControlNetUnionInpaintPipeline",
}


def control_mode(control_type: str, count: int, name: str) -> int:
    """diffusers' ``control_mode`` index of a unit's control type for a Union ControlNet
    reading ``count`` types; :class:`InvalidRequest` listing the valid names otherwise."""
    valid = ", ".join(kind for kind, _ in TYPES[:count])
    if not control_type.strip() or _normal(control_type) == "unknown":
        raise InvalidRequest(
            f"The Union ControlNet {name} needs a control type telling which control it "
            f"reads; valid: {valid}."
        )
    wanted = set()
    for part in control_type.split("/"):  # "dw_openpose_full" is read by its words too
        wanted |= {_normal(part), *_normal(part).split(" ")}
    for index, (_kind, names) in enumerate(TYPES):
        if wanted & {_normal(n) for n in names}:
            if index >= count:
                raise InvalidRequest(
                    f"The Union ControlNet {name} reads {count} control types; "
                    f"{control_type!r:.60} is not one of them (valid: {valid})."
                )
            return index
    raise InvalidRequest(
        f"The control type {control_type!r:.60} is unknown to the Union ControlNet {name}; "
        f"valid: {valid}."
    )


def check_plain_type(control_type: str, name: str) -> None:
    """Refuse a control type given to a ControlNet that reads one kind of map (Forge
    writes "Unknown" for those, which is accepted)."""
    if control_type.strip() and _normal(control_type) != "unknown":
        raise InvalidRequest(
            f"A control type ({control_type!r:.40}) chooses the control of a Union "
            f"ControlNet; {name} reads one kind of map. Clear the control type."
        )


def union_family(family: tuple[str, str], name: str) -> tuple[str, str]:
    """A Union ControlNet's family, refusing the families diffusers runs none for."""
    if family[0] not in ("sdxl", "unknown"):
        raise ModelError(
            f"{name} is a {family[1]} Union ControlNet; Union ControlNets run with SDXL "
            "models only."
        )
    return family


def load_union(path: Path, *, folder: bool, dtype: Any, config: Path | None) -> Any:
    """The ``ControlNetUnionModel`` at ``path``: a diffusers folder, or one file with
    diffusers' key names (its config from ``config``, or made from SDXL's UNet config and
    the file's number of control types)."""
    from diffusers import ControlNetUnionModel

    if folder:
        return ControlNetUnionModel.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
    from safetensors.torch import load_file

    from sdstudio.engine.models.loading import load_pickle_state_dict

    if path.suffix.lower() == ".safetensors":
        state = load_file(str(path))
    else:
        state = load_pickle_state_dict(path)
    if not any(key.startswith("controlnet_cond_embedding.") for key in state):
        raise ModelError(
            f"The Union ControlNet {path.name} is not in diffusers' layout; use it as a "
            "diffusers folder (with its config.json) or a file with diffusers' key names."
        )
    with tempfile.TemporaryDirectory(prefix="sdstudio-union-") as scratch:
        if config is None or _class_of(config) != "ControlNetUnionModel":
            config = _sdxl_config(Path(scratch), state)
        model = ControlNetUnionModel.from_config(ControlNetUnionModel.load_config(config))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        names = ", ".join([*missing, *unexpected][:3])
        raise ModelError(f"The Union ControlNet {path.name} does not load ({names}).")
    return model.to(dtype)


def type_count(model: Any) -> int:
    """How many control types a loaded Union ControlNet reads."""
    return int(model.config.num_control_type)


def _sdxl_config(folder: Path, state: dict[str, Any]) -> Path:
    """SDXL's UNet config with the file's number of control types and widths of its
    control-image encoder."""
    from diffusers import ControlNetUnionModel

    from sdstudio.engine.models.loading import configs_root

    unet = json.loads((configs_root() / "sdxl" / "unet" / "config.json").read_text("utf-8"))
    accepted = set(inspect.signature(ControlNetUnionModel.__init__).parameters)
    config = {k: v for k, v in unet.items() if k in accepted}
    count = int(state["task_embedding"].shape[0])
    config |= {"_class_name": "ControlNetUnionModel", "num_control_type": count}
    embedding = "controlnet_cond_embedding."
    widths = [int(state[embedding + "conv_in.weight"].shape[0])]
    index = 1
    while embedding + f"blocks.{index}.weight" in state:
        widths.append(int(state[embedding + f"blocks.{index}.weight"].shape[0]))
        index += 2
    config["conditioning_embedding_out_channels"] = widths
    (folder / "config.json").write_text(json.dumps(config), "utf-8")
    return folder


def _class_of(folder: Path) -> str:
    try:
        return str(json.loads((folder / "config.json").read_text("utf-8")).get("_class_name"))
    except (OSError, ValueError, AttributeError):
        return ""


def _normal(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", text.strip().lower()).strip()
