"""What a model family is to the engine: one small record per family.

The rest of the engine asks the family (which samplers, how the prompt goes in,
how guidance is passed, how a preview is drawn) instead of testing which family
a model belongs to.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from sdstudio.engine.errors import InvalidRequest


class Prompting(enum.StrEnum):
    """How the prompt reaches the model."""

    A1111 = "a1111"
    """CLIP text encoders: A1111's emphasis, BREAK, long prompts and clip skip."""
    PLAIN = "plain"
    """T5 or LLM text encoders: the text itself; weights and BREAK are removed."""


Preview = Callable[[Any, int, int], Image.Image | None]
"""Draws the latents of a step as a small RGB picture: (latents, width, height)."""


@dataclass(frozen=True, slots=True)
class TextSlot:
    """One text encoder of a pipeline, as a split layout fills it from a file."""

    component: str
    """The pipeline's argument: ``text_encoder``, ``text_encoder_2`` ..."""
    kind: str
    """The text encoder kind that fits (``clip``, ``t5``, ``qwen3``, ``qwen2.5-vl``)."""
    model_class: str
    """The transformers class the pipeline takes there."""
    tokenizer: str
    """The pipeline's argument for its tokenizer."""
    second_clip: bool = False
    """SD3's CLIP-G: the wider of two CLIP encoders, whose tokenizer pads with "!"."""
    optional: bool = False
    """The pipeline runs without it (SD3 without T5), with a notice."""
    width: Callable[[Mapping[str, Any]], int | None] | None = None
    """The width the transformer's config asks of this encoder (None: any)."""


@dataclass(frozen=True, slots=True)
class SplitLayout:
    """How a family's pipeline is assembled from separate part files (ComfyUI's
    ``diffusion_models`` + ``text_encoders`` + ``vae``)."""

    pipeline: str
    """The diffusers text-to-image pipeline class."""
    text: tuple[TextSlot, ...]
    vae: str
    """The VAE kind it needs (``kl16``, ``flux2``, ``qwen-image``)."""
    configs: Mapping[str, str] = field(default_factory=dict)
    """The shipped config folder (scheduler, VAE) for each variant; ``""`` is the default."""
    arguments: Mapping[str, Any] = field(default_factory=dict)
    """Other arguments of the pipeline (``image_encoder=None`` ...)."""
    named_arguments: Callable[[str], dict[str, Any]] | None = None
    """Arguments told by the transformer file's name (its stem), where its weights
    cannot tell them."""

    def config_folder(self, variant: str) -> str:
        """The shipped config folder for a model of ``variant``."""
        return self.configs.get(variant, self.configs.get("", ""))


@dataclass(frozen=True, slots=True)
class ModelFamily:
    """One family of models: its name, how it is recognised and how it runs."""

    id: str
    """The id stored in the catalog and the records (``"sd1"``, ``"flux1"``, ...)."""
    label: str
    pipelines: frozenset[str] = field(default_factory=frozenset)
    """The ``_class_name`` values of ``model_index.json`` that mean this family."""
    native_size: int = 512
    flow: bool = False
    """Whether it samples by flow matching (Euler, DPM++ 2M, UniPC ... on flow sigmas)."""
    prompting: Prompting = Prompting.A1111
    distilled_guidance: bool = False
    """Whether some of its models take a guidance embedding (Flux.1 dev's "Distilled
    CFG Scale") besides, or instead of, real classifier-free guidance."""
    true_cfg: bool = False
    """Whether its pipelines take real CFG as ``true_cfg_scale`` (``guidance_scale``
    being the guidance embedding some of its models have)."""
    latent_masking: bool = True
    """Whether inpainting can start the masked area from latent noise or zeros."""
    img2img: bool = True
    """Whether it has an image-to-image pipeline (with a strength)."""
    negative_prompt: bool = True
    """Whether its pipelines take a negative prompt."""
    derived: Mapping[str, str] = field(default_factory=dict)
    """Pipeline classes for ``"img2img"`` or ``"inpaint"`` that diffusers' auto
    pipelines do not find from the base pipeline."""
    size_multiple: int = 8
    """Width and height must be multiples of this (16 for 2x2-patch transformers)."""
    default_steps: int = 20
    default_guidance: float = 7.0
    few_steps: int = 4
    """Steps for its few-step (turbo, schnell, lightning) models."""
    few_guidance: float = 1.0
    """CFG for its few-step models (1 or 0: none)."""
    preview: Preview | None = None
    split: SplitLayout | None = None
    """How its models load from separate part files; None: only as folders or checkpoints."""
    own_inpainting: bool = False
    """Whether its models inpaint by their own design (Flux.1 Fill, whose transformer takes
    the mask and the masked image): such a model takes every job as inpainting, as a
    9-channel SD inpainting model does."""
    prepare: Callable[[Any], Any] | None = None
    """What a freshly loaded pipeline of the family becomes before it runs (the same
    pipeline adjusted, or one that shares its components)."""

    def guidance_arguments(self, pipe: Any, cfg: float, distilled: float) -> dict[str, Any]:
        """The pipeline's guidance arguments for the request's CFG scale and distilled
        guidance.

        A family with true CFG takes CFG as ``true_cfg_scale`` (1 switches it off) and,
        for a model with a guidance embedding, the distilled value as ``guidance_scale``.
        Without a negative prompt there is no real CFG (Flux.1 Fill): the distilled value
        alone goes in, and a CFG above 1 raises :class:`InvalidRequest`.
        """
        if not self.true_cfg:
            return {"guidance_scale": cfg}
        arguments: dict[str, Any] = {}
        if self.negative_prompt:
            arguments["true_cfg_scale"] = cfg
        elif cfg > 1:
            raise InvalidRequest(
                f"{self.label} models have no real CFG (CFG {cfg:g} was asked): set CFG to 1 "
                "and guide them with the distilled CFG scale."
            )
        if has_guidance_embedding(pipe):
            arguments["guidance_scale"] = distilled
        return arguments

    def uses_distilled_guidance(self, pipe: Any) -> bool:
        """Whether the loaded model takes the distilled guidance value."""
        return self.true_cfg and has_guidance_embedding(pipe)


def has_guidance_embedding(pipe: Any) -> bool:
    """Whether a pipeline's transformer embeds the guidance value (Flux.1 dev, not schnell)."""
    transformer = getattr(pipe, "transformer", None)
    config = getattr(transformer, "config", None)
    return bool(getattr(config, "guidance_embeds", False))
