"""Loading ControlNets offline, keeping them while they are used, and the control
pipelines that share the loaded model's weights.

A diffusers folder loads with ``from_pretrained``; a single file (lllyasviel's
``control_model.`` layout or diffusers' own key names) with ``from_single_file``, its
config made from the family's UNet config shipped in ``resources/model_configs`` (or a
folder given as ``single_file_config``), never downloading anything. Pickles are read
only through the restricted loader.

"My prompt is more important" (A1111's Control Mode) is A1111's soft injection: the
ControlNet's residuals are scaled by ``0.825 ** (n - 1 - i)`` from the shallowest
(``i = 0``) to the middle block (``i = n - 1``); for SD's 13 residuals that is A1111's
``0.825 ** (12 - i)``. It is a forward hook on each loaded ControlNet that scales its
outputs for the units that have this mode.

"ControlNet is more important" for one unit among units of other modes (diffusers'
``guess_mode`` is one switch for them all) is the same hook doing what ``guess_mode``
does for that ControlNet alone: its residuals for the unguided half of CFG are zeroed
and the rest scaled from 0.1 at the shallowest to 1 at the middle block. The modes are
set per unit by :func:`set_unit_modes`; a ControlNet that guides several units (one
file, two control images) is called once per unit, in order, each step, and the hook
counts the calls to tell them apart.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from sdstudio.engine.control.control_files import ControlNetFile
from sdstudio.engine.errors import ModelError, first_line
from sdstudio.engine.fileio import file_key
from sdstudio.engine.models.loading import configs_root, load_pickle_state_dict
from sdstudio.engine.pipeline_sharing import share_pipeline

log = logging.getLogger(__name__)

SOFT_INJECTION_BASE = 0.825
"""A1111's factor per layer for "My prompt is more important"."""

_PIPELINES = {
    ("txt2img", False): "StableDiffusionControlNetPipeline",
    ("img2img", False): "StableDiffusionControlNetImg2ImgPipeline",
    ("inpaint", False): "StableDiffusionControlNetInpaintPipeline",
    ("txt2img", True): "StableDiffusionXLControlNetPipeline",
    ("img2img", True): "StableDiffusionXLControlNetImg2ImgPipeline",
    ("inpaint", True): "StableDiffusionXLControlNetInpaintPipeline",
}


class ControlNetCache:
    """The ControlNets loaded, by file (path, size and modification time), dtype and device."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[Any, ...], Any] = {}

    def holds(self, file: ControlNetFile, *, dtype: Any, device: str) -> bool:
        """Whether ``file`` (unchanged since) is loaded in ``dtype`` on ``device``."""
        return (*file_key(file.path), str(dtype), device) in self._loaded

    def load(
        self,
        file: ControlNetFile,
        *,
        dtype: Any,
        device: str,
        config: Path | None = None,
        base: Any = None,
    ) -> Any:
        """The ``ControlNetModel`` of ``file`` in ``dtype`` on ``device`` (loaded once);
        ``base`` is the model's transformer config, for a transformer family's single
        file (what its weights cannot tell)."""
        key = (*file_key(file.path), str(dtype), device)
        model = self._loaded.get(key)
        if model is None:
            model = _load_kind(file, dtype, config, base)
            model.to(device)
            model.eval()
            if file.kind != "t2i_adapter":
                model.register_forward_hook(_control_mode)
            self._loaded[key] = model
        return model

    def keep_only(self, models: list[Any]) -> None:
        """Free the ControlNets that are not among ``models``."""
        wanted = {id(model) for model in models}
        self._loaded = {k: m for k, m in self._loaded.items() if id(m) in wanted}

    def __len__(self) -> int:
        return len(self._loaded)


def control_pipeline(base: Any, task: str, models: list[Any]) -> Any:
    """The ControlNet pipeline for ``task`` (``txt2img``, ``img2img``, ``inpaint``) built
    on ``base``'s components (no weights copied); several ControlNets are combined.
    Union ControlNets run in diffusers' Union pipelines; T2I-Adapters among ``models``
    are added by :class:`~sdstudio.engine.control.t2i_adapters.AdapterGuided` (with no
    ControlNet, around ``base`` itself)."""
    import diffusers
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    from sdstudio.engine.control.t2i_adapters import AdapterGuided
    from sdstudio.engine.control.union import PIPELINES as UNION_PIPELINES

    adapters = [m for m in models if type(m).__name__ == "T2IAdapter"]
    nets = [m for m in models if type(m).__name__ != "T2IAdapter"]
    if not nets:
        return AdapterGuided(base)
    xl = getattr(base, "text_encoder_2", None) is not None
    if any(type(m).__name__ == "ControlNetUnionModel" for m in nets):
        from diffusers.models.controlnets.multicontrolnet_union import MultiControlNetUnionModel

        factory = getattr(diffusers, UNION_PIPELINES[task])
        controlnet = nets[0] if len(nets) == 1 else MultiControlNetUnionModel(nets)
    else:
        factory = getattr(diffusers, _PIPELINES[(task, xl)])
        controlnet = nets[0] if len(nets) == 1 else MultiControlNetModel(nets)
    pipe = share_pipeline(factory, base, controlnet=controlnet)
    return AdapterGuided(pipe) if adapters else pipe


def set_unit_modes(models: list[Any], modes: list[Any], *, every: bool, halves: bool) -> None:
    """Give each ControlNet the control modes of the units it guides, in order:
    ``every``: all units are "ControlNet is more important" (then diffusers' guess mode
    runs them); ``halves``: the batch holds both halves of CFG (unguided first)."""
    from sdstudio.engine.control.units import ControlMode

    for model in models:
        model.unit_modes = []
        model.mode_calls = 0
        model.guess_halves = halves
    for model, mode in zip(models, modes, strict=True):
        soft = mode is ControlMode.PROMPT
        alone = mode is ControlMode.CONTROL and not every
        model.unit_modes.append((soft, alone))


def _control_mode(module: Any, _inputs: Any, output: Any) -> Any:
    """Scale a ControlNet's residuals for its unit's control mode (none for balanced)."""
    modes = getattr(module, "unit_modes", None)
    if not modes:
        return None
    soft, alone = modes[module.mode_calls % len(modes)]
    module.mode_calls += 1
    if not soft and not alone:
        return None
    if isinstance(output, tuple):
        down, mid = output[0], output[1]
    else:
        down, mid = output.down_block_res_samples, output.mid_block_res_sample
    count = len(down) + 1
    if soft:
        factors = [SOFT_INJECTION_BASE ** (count - 1 - i) for i in range(count)]
    else:  # diffusers' guess-mode scales: logspace(-1, 0, count)
        factors = [10.0 ** (-1 + i / (count - 1)) for i in range(count)]
    half = down[0].shape[0] // 2 if alone and getattr(module, "guess_halves", False) else 0
    scaled = [_prompt_half(s * f, half) for s, f in zip([*down, mid], factors, strict=True)]
    scaled_down, scaled_mid = tuple(scaled[:-1]), scaled[-1]
    if isinstance(output, tuple):
        return (scaled_down, scaled_mid, *output[2:])
    output.down_block_res_samples = scaled_down
    output.mid_block_res_sample = scaled_mid
    return output


def _prompt_half(sample: Any, half: int) -> Any:
    """``sample`` with its first ``half`` (the unguided half of CFG) zeroed."""
    if not half:
        return sample
    import torch

    return torch.cat([torch.zeros_like(sample[:half]), sample[half:]])


def _load_kind(file: ControlNetFile, dtype: Any, config: Path | None, base: Any = None) -> Any:
    """Load a ControlNet, Union ControlNet or T2I-Adapter, as its kind is."""
    from sdstudio.engine.control.flow_control_files import FLOW_LABELS, load_flow_controlnet

    flow = file.family in FLOW_LABELS
    if file.kind == "controlnet" and not flow:
        return _load(file, dtype, config)
    from sdstudio.engine.control.t2i_adapters import load_adapter
    from sdstudio.engine.control.union import load_union

    what = "T2I-Adapter" if file.kind == "t2i_adapter" else "Union ControlNet"
    what = "ControlNet" if flow and file.kind == "controlnet" else what
    try:
        if flow:
            return load_flow_controlnet(
                file.path, file.family, folder=file.folder, dtype=dtype, base=base
            )
        if file.kind == "t2i_adapter":
            return load_adapter(file.path, folder=file.folder, dtype=dtype)
        return load_union(file.path, folder=file.folder, dtype=dtype, config=config)
    except ModelError:
        raise
    except MemoryError:
        raise ModelError(f"Not enough memory to load the {what} {file.path.name}.") from None
    except Exception as error:  # diffusers and torch raise many types for a bad file
        log.exception("Loading the %s %s failed", what, file.path)
        message = f"Could not load the {what} {file.path.name}: {first_line(error)}"
        raise ModelError(message) from None


def _load(file: ControlNetFile, dtype: Any, config: Path | None) -> Any:
    from diffusers import ControlNetModel

    try:
        if file.folder:
            return ControlNetModel.from_pretrained(
                file.path, torch_dtype=dtype, local_files_only=True
            )
        state = _state_dict(file.path)
        with tempfile.TemporaryDirectory(prefix="sdstudio-controlnet-") as scratch:
            folder = config if config is not None else _config_folder(file, Path(scratch))
            return ControlNetModel.from_single_file(
                state, config=str(folder), torch_dtype=dtype, local_files_only=True
            )
    except ModelError:
        raise
    except MemoryError:
        raise ModelError(f"Not enough memory to load the ControlNet {file.path.name}.") from None
    except Exception as error:  # diffusers raises many types for a bad file
        log.exception("Loading the ControlNet %s failed", file.path)
        raise ModelError(
            f"Could not load the ControlNet {file.path.name}: {first_line(error)}"
        ) from None


def _state_dict(path: Path) -> dict[str, Any]:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return load_pickle_state_dict(path)


def _config_folder(file: ControlNetFile, scratch: Path) -> Path:
    """A ControlNet config made from the family's shipped UNet config."""
    import inspect

    from diffusers import ControlNetModel

    if file.family == "unknown":
        raise ModelError(
            f"The ControlNet {file.path.name} is for no model family sdstudio knows; use it "
            "as a diffusers folder (with its config.json)."
        )
    unet = json.loads((configs_root() / file.family / "unet" / "config.json").read_text("utf-8"))
    accepted = set(inspect.signature(ControlNetModel.__init__).parameters)
    config = {k: v for k, v in unet.items() if k in accepted}
    config["_class_name"] = "ControlNetModel"
    (scratch / "config.json").write_text(json.dumps(config), "utf-8")
    return scratch
