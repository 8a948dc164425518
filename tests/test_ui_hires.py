"""The prompt panel's "Hires fix" section: its settings go into the request and come
back, its header and size label, flow samplers, Flux.2 Klein (no second pass), the
last session's settings, and the image info line (pytest-qt, offscreen)."""

from __future__ import annotations

from PySide6.QtWidgets import QApplication

from sdstudio.engine import samplers
from sdstudio.engine.refine.hires_settings import IMAGE_UPSCALERS, LATENT_UPSCALERS, HiresFix
from sdstudio.engine.request import GenerationRequest
from sdstudio.ui.hires_section import RESIZE_TO, SAME, UPSCALE_BY
from sdstudio.ui.info_panel import ShownImage

SD1 = ("dreamshaper", "/m/dreamshaper.safetensors", "sd1", "SD 1.x")
FLUX = ("flux-dev", "/m/flux-dev.safetensors", "flux1", "Flux.1")
KLEIN = ("klein-4b", "/m/klein-4b.safetensors", "flux2-klein", "Flux.2 Klein")
FULL = HiresFix(
    scale=1.5,
    upscaler="Lanczos",
    steps=12,
    denoise=0.45,
    sampler="Euler a",
    schedule="SGM Uniform",
    prompt="sharp details",
    negative_prompt="soft",
    guidance_scale=5.5,
)


def choose(panel, model: tuple[str, str, str, str]) -> None:
    panel.set_known_models([SD1, FLUX, KLEIN])
    panel.model.setCurrentIndex(panel.model.findData(model[1]))


def items(combo) -> list[str]:
    return [combo.itemText(i) for i in range(combo.count())]


def test_off_gives_no_hires_and_on_gives_the_chosen_values(window) -> None:
    panel, hires = window.panel, window.panel.hires
    choose(panel, SD1)
    assert hires.toggle.full_text() == "Hires fix (off)"
    assert panel.request().hires is None
    hires.set_expanded(True)
    assert hires.scale.isVisibleTo(panel) and not hires.resize_width.isVisibleTo(panel)
    hires.switch.setChecked(True)
    assert panel.request().hires == HiresFix()  # A1111's defaults: x2, Latent, 0.7
    hires.scale.setValue(1.75)
    hires.upscaler.setCurrentText("Latent (bicubic antialiased)")
    hires.steps.setValue(15)
    hires.denoise.setValue(0.55)
    hires.set_more_expanded(True)
    hires.sampler_row.sampler.setCurrentText("DPM++ 2M")
    assert hires.sampler_row.schedule.currentText() == "Karras"
    hires.own_cfg.setChecked(True)
    hires.cfg.setValue(4.5)
    hires.prompt.setPlainText("crisp")
    expected = HiresFix(scale=1.75, upscaler="Latent (bicubic antialiased)", steps=15,
                        denoise=0.55, sampler="DPM++ 2M", schedule="Karras", prompt="crisp",
                        guidance_scale=4.5)  # fmt: skip
    assert panel.request().hires == expected
    hires.switch.setChecked(False)
    assert panel.request().hires is None
    assert hires.scale.value() == 1.75  # switching off keeps the settings for next time


def test_the_steps_and_sampler_say_same_as_the_first_pass(window) -> None:
    hires = window.panel.hires
    assert hires.steps.value() == 0 and hires.steps.text() == SAME
    assert hires.sampler_row.sampler.currentText() == SAME
    assert not hires.sampler_row.schedule.isEnabled()
    assert hires.sampler_row.chosen() == ("", "")
    assert hires.prompt.placeholderText() == SAME and not hires.cfg.isEnabled()


def test_upscalers_are_the_built_in_ones_and_model_files_given_later(window) -> None:
    hires = window.panel.hires
    assert hires.upscalers() == [*LATENT_UPSCALERS, *IMAGE_UPSCALERS]
    hires.upscaler.setCurrentText("Lanczos")
    hires.set_upscalers(["4x-UltraSharp", "RealESRGAN_x4plus"])
    assert hires.upscalers() == [*LATENT_UPSCALERS, *IMAGE_UPSCALERS, "4x-UltraSharp",
                                 "RealESRGAN_x4plus"]  # fmt: skip
    assert hires.upscaler.currentText() == "Lanczos"
    hires.upscaler.setCurrentText("4x-UltraSharp")
    hires.set_upscalers([])  # the file is gone: the choice stays, for the engine to report
    assert hires.upscaler.currentText() == "4x-UltraSharp"


def test_a_loaded_request_shows_its_hires_fix_and_comes_back_equal(window) -> None:
    panel, hires = window.panel, window.panel.hires
    choose(panel, SD1)
    request = GenerationRequest(model=SD1[1], prompt="a fox", hires=FULL)
    panel.load(request)
    assert hires.switch.isChecked()
    assert hires.mode.currentText() == UPSCALE_BY and hires.scale.value() == 1.5
    assert hires.sampler_row.chosen() == ("Euler a", "SGM Uniform")
    assert hires.prompt.toPlainText() == "sharp details" and hires.cfg.value() == 5.5
    assert panel.request().hires == FULL
    assert panel.request() == request.replace(seed=panel.request().seed)
    resized = HiresFix(width=1280, height=768, upscaler="R-ESRGAN 4x+", denoise=0.3)
    panel.load(request.replace(hires=resized))
    assert hires.mode.currentText() == RESIZE_TO
    assert hires.upscaler.currentText() == "R-ESRGAN 4x+"  # not here, yet kept
    assert panel.request().hires == resized
    panel.load(request.replace(hires=None))
    assert panel.request().hires is None and hires.toggle.full_text() == "Hires fix (off)"


def test_the_header_names_the_settings_while_folded(window) -> None:
    hires = window.panel.hires
    hires.switch.setChecked(True)
    assert not hires.body.isVisibleTo(window.panel)
    assert hires.toggle.full_text() == "Hires fix (×2, Latent, denoise 0.7)"
    hires.load(FULL)
    assert hires.toggle.full_text() == (
        "Hires fix (×1.5, Lanczos, denoise 0.45, 12 steps, Euler a SGM Uniform, CFG 5.5, "
        "own prompt)"
    )
    assert hires.more_toggle.full_text() == "More (Euler a SGM Uniform, CFG 5.5, own prompt)"
    hires.load(HiresFix(width=1024, height=1536, upscaler="Nearest", denoise=0.5))
    assert hires.toggle.full_text() == "Hires fix (to 1024×1536, Nearest, denoise 0.5)"
    assert hires.more_toggle.full_text() == "More"


def test_the_size_label_follows_the_panels_size(window) -> None:
    panel, hires = window.panel, window.panel.hires
    panel.size_row.set_size(512, 512)
    assert hires.result.text() == "512×512 → 1024×1024"
    panel.size_row.set_size(512, 768)
    hires.scale.setValue(1.5)
    assert hires.result.text() == "512×768 → 768×1152"
    hires.scale.setValue(1.3)  # rounded down to multiples of 8, as A1111 does
    assert hires.result.text() == "512×768 → 664×992"
    hires.mode.setCurrentText(RESIZE_TO)  # starts from the size the factor gave
    assert (hires.resize_width.value(), hires.resize_height.value()) == (664, 992)
    hires.resize_width.setValue(1000)
    hires.resize_height.setValue(1500)
    assert hires.result.text() == "512×768 → 1000×1496"


def test_flow_models_get_their_own_samplers(window) -> None:
    panel, row = window.panel, window.panel.hires.sampler_row
    choose(panel, SD1)
    row.choose("DPM++ 2M SDE", "Exponential")
    choose(panel, FLUX)
    assert items(row.sampler) == [SAME, *samplers.sampler_names(flow=True)]
    assert row.chosen() == ("", "")  # not a flow sampler: the first pass's
    row.choose("Euler", "Simple")
    assert row.chosen() == ("Euler", "Simple")
    choose(panel, SD1)
    assert items(row.sampler) == [SAME, *samplers.sampler_names()]
    assert row.chosen() == ("Euler", "Automatic")  # kept; Simple is a flow schedule


def test_flux2_klein_disables_the_section_and_says_why(window) -> None:
    panel, hires = window.panel, window.panel.hires
    choose(panel, SD1)
    hires.switch.setChecked(True)
    choose(panel, KLEIN)
    assert not hires.switch.isEnabled() and not hires.body.isEnabled()
    assert hires.toggle.isEnabled()  # the settings can still be looked at
    assert "Flux.2 Klein has no image-to-image" in hires.switch.toolTip()
    assert hires.toggle.full_text() == "Hires fix (not for Flux.2 Klein)"
    assert panel.request().hires is None
    choose(panel, SD1)  # the user's choice was kept
    assert hires.switch.isEnabled() and panel.request().hires == HiresFix()
    assert "image-to-image" not in hires.switch.toolTip()


def test_the_hires_fix_survives_the_last_session(window, paths) -> None:
    from sdstudio.app import LAST_REQUEST_FILE, restore_last_request, save_last_request

    panel = window.panel
    choose(panel, SD1)
    panel.load(GenerationRequest(model=SD1[1], prompt="a fox", hires=FULL))
    save_last_request(window, paths)
    assert '"denoise": 0.45' in (paths.config_dir / LAST_REQUEST_FILE).read_text("utf-8")
    panel.hires.load(None)
    panel.hires.scale.setValue(3.0)
    restore_last_request(window, paths)
    assert panel.request().hires == FULL
    assert panel.hires.switch.isChecked()


def test_the_info_panel_has_a_hires_fix_line() -> None:
    request = GenerationRequest(model="m", prompt="a fox", hires=FULL)
    lines = ShownImage("a.png", request).lines()
    assert [("Hires fix", FULL.describe())] in lines
    lines = ShownImage("a.png", request.replace(hires=None)).lines()
    assert not any(label == "Hires fix" for line in lines for label, _value in line)


def test_the_common_settings_still_fit_with_the_section_folded(window) -> None:
    window.resize(1024, 640)
    QApplication.processEvents()
    panel = window.panel
    assert panel.scroll_area.verticalScrollBar().maximum() == 0
    header = panel.hires.toggle
    assert header.visibleRegion().boundingRect().size() == header.size()


def test_a_long_header_is_elided_and_does_not_widen_the_panel(window) -> None:
    panel, hires = window.panel, window.panel.hires
    QApplication.processEvents()
    narrowest = panel.minimumSizeHint().width()
    hires.load(FULL)
    QApplication.processEvents()
    assert panel.minimumSizeHint().width() == narrowest
    assert hires.toggle.text().endswith("…") and len(hires.toggle.text()) < len(hires.summary())
    assert hires.toggle.toolTip() == hires.summary()
    hires.load(HiresFix())
    QApplication.processEvents()
    assert hires.toggle.text() == "Hires fix (×2, Latent, denoise 0.7)"  # fits: not elided


def test_a_job_from_a_source_image_leaves_the_hires_fix_out(window, tiny_model) -> None:
    from PIL import Image

    from sdstudio.engine.request import Mode

    panel = window.panel
    panel.pick_model(str(tiny_model))
    panel.prompt.setPlainText("a boat")
    panel.hires.switch.setChecked(True)
    assert panel.request().hires is not None
    inputs: list = []
    request = window._with_source(panel.request(), Image.new("RGB", (64, 64)), inputs)
    assert request.mode is Mode.IMG2IMG and request.hires is None
    assert "hires fix is for text to image" in window.statusBar().currentMessage()
