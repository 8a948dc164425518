"""What each kind of control model (ControlNet, Union ControlNet, T2I-Adapter) can do in
one generation, checked before anything loads.

- Union ControlNets run in diffusers' Union pipelines, which take no plain ControlNet:
  a request mixes the two kinds only through separate generations. They have no guess
  mode, so "ControlNet is more important" is refused for them, and their control type
  must name one of the controls they read.
- T2I-Adapters add their features in the UNet of whichever pipeline runs, so they mix
  with either kind and guide text-to-image, image-to-image, inpainting and the hires
  pass. Their features are added as they are: the control modes that reshape a
  ControlNet's residuals do not apply, and they read a picture, not the -1 marks of the
  inpaint modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sdstudio.engine.control.union import TYPES, check_plain_type, control_mode, type_count
from sdstudio.engine.control.units import ControlMode
from sdstudio.engine.errors import InvalidRequest

if TYPE_CHECKING:
    from sdstudio.engine.control.control_files import ControlNetFile
    from sdstudio.engine.request import GenerationRequest


def check_kinds(request: GenerationRequest, files: Sequence[ControlNetFile]) -> None:
    """Refuse units whose settings their control model's kind cannot run."""
    from sdstudio.engine.control.preprocessors import needs_mask

    kinds = {file.kind for file in files}
    if "union" in kinds and "controlnet" in kinds:
        raise InvalidRequest(
            "Union ControlNets cannot run together with other ControlNets in one "
            "generation; use Union units only or plain ControlNets only (T2I-Adapters mix "
            "with either)."
        )
    for number, (unit, file) in enumerate(zip(request.control, files, strict=True), 1):
        if file.kind == "union":
            control_mode(unit.control_type, len(TYPES), file.name)
            if unit.mode is ControlMode.CONTROL:
                raise InvalidRequest(
                    f'Control unit {number}: "ControlNet is more important" cannot run with '
                    "a Union ControlNet; choose Balanced or My prompt is more important."
                )
            continue
        check_plain_type(unit.control_type, file.name)
        if file.kind != "t2i_adapter":
            continue
        if unit.mode is not ControlMode.BALANCED:
            raise InvalidRequest(
                f"Control unit {number}: the T2I-Adapter {file.name} runs in the Balanced "
                "control mode only."
            )
        if needs_mask(unit):
            raise InvalidRequest(
                f"Control unit {number}: the inpaint preprocessors make maps for inpainting "
                f"ControlNets; the T2I-Adapter {file.name} cannot read them."
            )


def union_modes(
    request: GenerationRequest, files: Sequence[ControlNetFile], models: Sequence[Any]
) -> list[int | None]:
    """Each unit's ``control_mode`` for a loaded Union ControlNet (``None`` for others),
    checked against the number of types it reads (ProMax reads tile and repaint too)."""
    return [
        control_mode(unit.control_type, type_count(model), file.name)
        if file.kind == "union"
        else None
        for unit, file, model in zip(request.control, files, models, strict=True)
    ]
