"""One generation's ControlNet pass: the control maps and the control pipeline's arguments,
and what the record says about each unit.

The control images are stored in the inputs folder before the model loads
(:func:`store_control_images`), so the request in the record names the stored copies and
a re-run reads the same pixels. Their control maps are made once per size (per image,
with its seed, for the preprocessors that draw at random) at the generation's size.

A1111's Control Modes: "Balanced" runs each ControlNet on both halves of CFG;
"ControlNet is more important" is diffusers' ``guess_mode`` (the ControlNet sees only the
prompt's half, its residuals scaled from 0.1 to 1 from the shallowest layer to the
middle block) when every unit has it; beside units of other modes, each such unit does
the same on its own (see :mod:`~sdstudio.engine.control.controlnets`). "My prompt is
more important" is A1111's soft injection.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from sdstudio.engine.control.control_files import ControlNetFile
from sdstudio.engine.control.units import ControlMode, ControlUnit
from sdstudio.engine.images import open_image, store_input
from sdstudio.engine.request import GenerationRequest

if TYPE_CHECKING:
    from sdstudio.engine.control.annotators import Annotators
    from sdstudio.engine.inputs import Inputs


def store_control_images(request: GenerationRequest, inputs_dir: Path) -> GenerationRequest:
    """``request`` with each unit's control image replaced by its stored copy (the image as
    given, before preprocessing). Raises :class:`ImageInputError` for an unusable file."""
    if not request.control:
        return request
    units = []
    for number, unit in enumerate(request.control, 1):
        image = open_image(unit.image, what=f"control image of unit {number}")
        units.append(replace(unit, image=str(store_input(image, inputs_dir))))
    return request.replace(control=tuple(units))


@dataclass(slots=True)
class ControlPass:
    """The loaded ControlNets of a request and the pipeline that runs them."""

    pipe: Any
    """The ControlNet pipeline, sharing the model's weights."""
    task: str
    """``txt2img``, ``img2img`` or ``inpaint``: which of its pipelines runs."""
    models: list[Any]
    files: list[ControlNetFile]
    hashes: list[str]

    hires_pipe: Any = None
    """The ControlNet image-to-image pipeline of the hires pass, made on first use."""
    maps: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    """The control maps made so far: each image of a batch reads the same map, unless its
    preprocessor draws at random (then each seed has its own)."""
    union_modes: list[int | None] = field(default_factory=list)
    """Each unit's ``control_mode`` index for a Union ControlNet (``None`` for others)."""
    annotators: Annotators | None = None
    """The weights of the preprocessors that need some (Depth Anything)."""
    flow: str = ""
    """The transformer family whose ControlNet pipelines run (``flux1``, ``sd3``...; empty:
    SD 1.x, SD 2.x or SDXL); see :mod:`~sdstudio.engine.control.flow_controlnets`."""

    def arguments(self, inputs: Inputs, seed: int) -> dict[str, Any]:
        """The control pipeline's ControlNet arguments for one image."""
        request = inputs.request
        key = "image" if self.task == "txt2img" else "control_image"
        return self._arguments(request, (request.width, request.height), inputs.mask, seed, key)

    def hires(
        self, pipe: Any, request: GenerationRequest, seed: int, size: tuple[int, int]
    ) -> tuple[Any, dict[str, Any]]:
        """The hires pass's ControlNet pipeline (built on its pipeline ``pipe``) and its
        ControlNet arguments: the units guide the second pass too, with their maps made
        at its ``size``, as A1111 does."""
        if self.hires_pipe is None:
            from sdstudio.engine.control.controlnets import control_pipeline

            task = "inpaint" if self.task == "inpaint" else "img2img"
            if self.flow:
                from sdstudio.engine.control.flow_controlnets import flow_control_pipeline

                self.hires_pipe = flow_control_pipeline(pipe, self.flow, task, self.models)
            else:
                self.hires_pipe = control_pipeline(pipe, task, self.models)
        return self.hires_pipe, self._arguments(request, size, None, seed, "control_image")

    def _arguments(
        self,
        request: GenerationRequest,
        size: tuple[int, int],
        mask: Image.Image | None,
        seed: int,
        key: str,
    ) -> dict[str, Any]:
        from sdstudio.engine.control.controlnets import set_unit_modes
        from sdstudio.engine.control.preprocessors import draws_at_random
        from sdstudio.engine.control.t2i_adapters import AdapterUnit

        units = request.control
        maps = []
        for index, unit in enumerate(units):
            made = (index, size, mask is not None, seed if draws_at_random(unit) else None)
            if made not in self.maps:
                image = open_image(unit.image, what="control image")
                self.maps[made] = control_map(image, unit, size, mask, seed, self.annotators)
            maps.append(self.maps[made])
        if self.flow:
            from sdstudio.engine.control.flow_controlnets import flow_arguments

            return flow_arguments(self.flow, units, maps, self.union_modes)
        kinds = [file.kind for file in self.files]
        adapters = [
            AdapterUnit(model, made, unit.weight, unit.start, unit.end)
            for model, made, unit, kind in zip(self.models, maps, units, kinds, strict=True)
            if kind == "t2i_adapter"
        ]
        chosen = [i for i, kind in enumerate(kinds) if kind != "t2i_adapter"]
        arguments: dict[str, Any] = {"t2i_adapters": adapters} if adapters else {}
        if not chosen:
            return arguments
        nets = [units[i] for i in chosen]
        every = all(u.mode is ControlMode.CONTROL for u in nets)
        set_unit_modes(
            [self.models[i] for i in chosen],
            [units[i].mode for i in chosen],
            every=every,
            halves=request.guidance_scale > 1,
        )
        several = len(nets) > 1
        union = "union" in kinds
        arguments |= {
            "control_image" if union else key: (
                [maps[i] for i in chosen] if several else maps[chosen[0]]
            ),
            "controlnet_conditioning_scale": (
                [u.weight for u in nets] if several else nets[0].weight
            ),
            "control_guidance_start": [u.start for u in nets],
            "control_guidance_end": [u.end for u in nets],
        }
        if union:
            modes = [self.union_modes[i] for i in chosen]
            arguments["control_mode"] = modes if several else modes[0]
        else:
            arguments["guess_mode"] = every
        return arguments

    def record(self) -> list[dict[str, str]]:
        """Each unit's ControlNet (its file name, or folder name) and short hash."""
        return [
            {"name": file.name, "hash": short}
            for file, short in zip(self.files, self.hashes, strict=True)
        ]


def control_map(
    image: Image.Image,
    unit: ControlUnit,
    size: tuple[int, int],
    mask: Image.Image | None,
    seed: int,
    annotators: Annotators | None = None,
) -> Any:
    """What the ControlNet of ``unit`` reads at ``size``: the map its preprocessor makes
    (``none``: the image fitted by the unit's resize mode), or for the inpaint modules a
    tensor with the pixels to repaint at -1 (diffusers' convention)."""
    from sdstudio.engine.control import preprocessors

    if preprocessors.needs_mask(unit):
        import torch

        pixels = preprocessors.inpaint_control(image, mask, unit, size)
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy())[None]
    return preprocessors.control_map(image, unit, size, mask=mask, seed=seed, annotators=annotators)
