"""Model families, one module each; this registry finds them by id or pipeline class.

Adding a family is one new module with its :class:`ModelFamily` and one line here.
"""

from __future__ import annotations

from typing import Any

from sdstudio.engine.families import chroma, flux, flux2, qwen_image, sd, sd3, zimage
from sdstudio.engine.families.base import ModelFamily, Prompting

__all__ = ["FAMILIES", "ModelFamily", "Prompting", "family", "family_of_pipeline", "prepared"]

FAMILIES: dict[str, ModelFamily] = {
    f.id: f
    for f in (
        *sd.FAMILIES,
        sd3.SD3,
        flux.FLUX1,
        chroma.CHROMA,
        flux2.FLUX2_KLEIN,
        zimage.ZIMAGE,
        qwen_image.QWEN_IMAGE,
    )
}
_BY_PIPELINE = {name: f for f in (*FAMILIES.values(), flux.FLUX1_FILL) for name in f.pipelines}
"""Flux.1 Fill's pipeline gives the Flux.1 family as a Fill model runs (see
:data:`~sdstudio.engine.families.flux.FLUX1_FILL`)."""


def family(family_id: str) -> ModelFamily:
    """The family with this id; an unknown id gives SD 1.x, which every UNet model
    without a family of its own runs as."""
    return FAMILIES.get(family_id, sd.SD1)


def family_of_pipeline(class_name: str) -> ModelFamily | None:
    """The family a diffusers pipeline class (``model_index.json``'s ``_class_name``)
    belongs to, if sdstudio runs it."""
    return _BY_PIPELINE.get(class_name)


def prepared(pipe: Any) -> Any:
    """A freshly loaded pipeline as its family runs it (its family's ``prepare``)."""
    found = family_of_pipeline(type(pipe).__name__)
    if found is None or found.prepare is None:
        return pipe
    return found.prepare(pipe)
