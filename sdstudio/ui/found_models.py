"""Offering what the model scan found: models, LoRAs, embeddings, VAEs, text encoders,
upscalers, ControlNets, IP-Adapters and CLIP vision encoders, each to the part of the
window that lists it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdstudio.engine.models.catalog import ModelEntry

if TYPE_CHECKING:
    from sdstudio.ui.main_window import MainWindow


def offer_found_models(window: MainWindow, entries: list[ModelEntry]) -> None:
    """Give the prompt panel, its hires section and the Upscale dialog what was found."""

    def describe(e: ModelEntry) -> str:
        return f"{e.family_label} · {e.format} · {e.source}"

    def of_kind(kind: str) -> list[ModelEntry]:
        return [e for e in entries if e.kind == kind]

    panel = window.panel
    panel.set_known_models([(e.name, e.path, e.family, describe(e)) for e in of_kind("checkpoint")])
    panel.set_networks(
        [(e.name, e.path, e.family, e.family_label) for e in of_kind("lora")],
        [(e.name, e.path, e.family, e.family_label) for e in of_kind("embedding")],
        [(e.name, e.path, describe(e), e.family) for e in of_kind("vae")],
        [(e.name, e.path, e.family, e.family_label) for e in of_kind("text_encoder")],
        [(e.name, e.path, "", "") for e in of_kind("hypernetwork")],
    )
    upscalers = of_kind("upscaler")
    window.upscale_actions.upscalers = [(e.name, e.path) for e in upscalers]
    panel.hires.set_upscalers([e.name for e in upscalers])
    panel.advanced.control.set_models([(e.name, e.path) for e in of_kind("controlnet")])
    panel.advanced.ip_adapters.set_models(
        [(e.name, e.path) for e in of_kind("ipadapter")],
        [(e.name, e.path) for e in of_kind("clip_vision")],
    )
