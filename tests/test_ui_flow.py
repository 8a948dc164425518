"""The prompt panel follows the chosen model's family: flow samplers and the distilled
guidance control for Flux.1, the SD samplers back for SD models; a Flux job runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdstudio.engine import samplers
from tests.test_ui import _run_job


@pytest.fixture(scope="module")
def flux_dev(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdstudio.testing.tiny_flow import save_tiny_flux

    return save_tiny_flux(tmp_path_factory.mktemp("m") / "tiny-flux-dev", guidance_embeds=True)


def items(combo) -> list[str]:
    return [combo.itemText(i) for i in range(combo.count())]


def test_the_panel_follows_the_family_and_a_flux_job_runs(
    qtbot, window, flux_dev: Path, tiny_model: Path
) -> None:
    panel = window.panel
    panel.pick_model(str(tiny_model))
    assert items(panel.sampler) == samplers.sampler_names()
    assert not panel.steps_row.distilled.isVisibleTo(panel)
    panel.pick_model(str(flux_dev))
    assert items(panel.sampler) == samplers.sampler_names(flow=True)
    assert panel.sampler_row.chosen() == ("Euler", "Simple")
    assert panel.steps_row.distilled.isVisibleTo(panel)
    panel.steps_row.distilled.setValue(2.0)
    panel.prompt.setPlainText("a lighthouse")
    panel.steps.setValue(2)
    panel.size_row.set_size(64, 64)
    request = panel.request()
    assert (request.sampler, request.schedule, request.distilled_guidance) == (
        "Euler",
        "Simple",
        2.0,
    )
    entry = _run_job(qtbot, window)
    assert entry.request.distilled_guidance == 2.0 and entry.request.sampler == "Euler"
    assert "Distilled CFG scale: 2" in window.info_panel.text.toPlainText()
    panel.pick_model(str(tiny_model))
    assert items(panel.sampler) == samplers.sampler_names()
    assert not panel.steps_row.distilled.isVisibleTo(panel)
    panel.load(entry.request)  # settings of a Flux image bring the flow samplers back
    assert panel.sampler_row.chosen() == ("Euler", "Simple")


def test_a_transformer_alone_offers_its_fitting_text_encoders(
    qtbot, window, tmp_path: Path, tiny_model: Path
) -> None:
    from sdstudio.testing.tiny_split import save_tiny_comfyui_model

    flux = save_tiny_comfyui_model(tmp_path / "ComfyUI", "flux1")
    save_tiny_comfyui_model(tmp_path / "ComfyUI", "zimage")
    encoders = tmp_path / "ComfyUI" / "models" / "text_encoders"
    files = [
        ("clip_l", str(encoders / "clip_l.safetensors"), "clip", "CLIP (width 32)"),
        ("t5xxl_fp16", str(encoders / "t5xxl_fp16.safetensors"), "t5", "T5 (width 64)"),
        ("qwen_3_4b", str(encoders / "qwen_3_4b.safetensors"), "qwen3", "Qwen3 (width 32)"),
    ]
    vaes = [
        ("ae", str(tmp_path / "ae.safetensors"), "VAE", "kl16"),
        ("flux2-vae", str(tmp_path / "flux2-vae.safetensors"), "VAE", "flux2"),
        ("vae-ft-mse", str(tmp_path / "vae-ft-mse.safetensors"), "VAE", "unknown"),
    ]
    panel = window.panel
    panel.set_networks([], [], vaes, files)
    panel.pick_model(str(flux))
    assert items(panel.vae)[1:] == ["ae"]  # only the VAEs that fit Flux.1
    picker = panel.text_encoders
    assert picker.isVisibleTo(panel) and picker.text() == "Automatic"
    offered = [a.toolTip() for a in picker.menu().actions() if a.isCheckable()][1:]
    assert offered == [files[0][1], files[1][1]]  # no Qwen3 for Flux
    picker.menu().actions()[2].trigger()  # clip_l
    assert picker.text() == "clip_l"
    panel.prompt.setPlainText("a lighthouse")
    panel.size_row.set_size(520, 520)  # Flux takes multiples of 16
    request = panel.request()
    assert request.text_encoders == (files[0][1],)
    assert (request.width, request.height) == (512, 512)
    panel.pick_model(str(tiny_model))
    assert items(panel.vae)[1:] == ["vae-ft-mse"]
    assert not picker.isVisibleTo(panel)
    request = panel.request()
    assert request.text_encoders == () and request.width == 520
