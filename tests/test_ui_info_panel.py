"""The image info panel under the canvas: settings of the image on show, copied or reused."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo
from PySide6.QtGui import QGuiApplication

from sdstudio.engine.generation import GeneratedImage
from sdstudio.engine.history import HistoryEntry
from sdstudio.engine.metadata import ImageRecord
from sdstudio.engine.metadata.a1111 import read_parameters
from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.ui.info_panel import EMPTY

A1111_TEXT = (
    "a castle\nNegative prompt: fog\nSteps: 33, Sampler: Euler a, "
    "CFG scale: 5.5, Seed: 77, Size: 640x384, Model: some-model, Hires upscale: 2"
)


def generate(qtbot, window, model: Path) -> HistoryEntry:
    window.panel.load(
        GenerationRequest(
            model=str(model),
            prompt="a lighthouse",
            negative_prompt="blurry",
            sampler="Euler",
            schedule="Karras",
            steps=3,
            guidance_scale=6.5,
            width=64,
            height=64,
            seed=4242,
        )
    )
    saved: list[HistoryEntry] = []
    window.controller.image_saved.connect(lambda job, entry: saved.append(entry))
    with qtbot.waitSignal(window.controller.finished, timeout=60_000):
        window.generate()
    [entry] = saved
    return entry


def inpainted(window, tmp_path: Path) -> HistoryEntry:
    """A history entry of an inpainting with LoRAs and a VAE, put in directly."""
    request = GenerationRequest(
        model="/models/dreamy",
        prompt="a red door",
        mode=Mode.INPAINT,
        init_image=str(tmp_path / "source.png"),
        mask=str(tmp_path / "mask.png"),
        strength=0.6,
        mask_blur=8,
        inpaint_area="masked",
        masked_padding=48,
        masked_content="latent-noise",
        clip_skip=2,
        seed=11,
    )
    extra = {
        "loras": [{"name": "brick", "weight": 0.7, "hash": "abc123"}],
        "vae": {"name": "clear-vae", "hash": "def456"},
    }
    record = ImageRecord(
        request=request, model_name="dreamy", model_hash="0123abcd", device="cpu (float32)",
        duration_s=2.25, app_version="1.0", extra=extra,
    )  # fmt: skip
    return window.library.save(GeneratedImage(Image.new("RGB", (512, 512)), record))


def a1111_file(tmp_path: Path) -> Path:
    info = PngInfo()
    info.add_text("parameters", A1111_TEXT)
    path = tmp_path / "a1111.png"
    Image.new("RGB", (64, 64), (10, 100, 10)).save(path, pnginfo=info)
    return path


def test_without_an_image_the_panel_says_so(window) -> None:
    info = window.info_panel
    assert info.plain_text() == EMPTY
    for button in (info.copy_button, info.use_button, info.seed_button):
        assert not button.isEnabled()


def test_a_generated_image_shows_its_settings(qtbot, window, tiny_model) -> None:
    entry = generate(qtbot, window, tiny_model)
    text = window.info_panel.plain_text()
    for shown in (
        "Prompt: a lighthouse",
        "Negative prompt: blurry",
        f"Model: {entry.model_name}",
        "VAE: the model's own",
        "Clip skip: 1",
        "Sampler: Euler · Karras",
        "Steps: 3",
        "CFG scale: 6.5",
        "Seed: 4242",
        "Size: 64×64",
        "Mode: text to image",
        f"File: {entry.path}",
    ):
        assert shown in text
    assert window.info_panel.text.textInteractionFlags()  # the text can be selected


def test_copy_parameters_gives_a1111_text_that_reads_back(qtbot, window, tiny_model) -> None:
    entry = generate(qtbot, window, tiny_model)
    QGuiApplication.clipboard().setText("")
    window.info_panel.copy_button.click()
    copied = QGuiApplication.clipboard().text()
    assert copied.startswith("a lighthouse\nNegative prompt: blurry\nSteps: 3, Sampler: Euler")
    parsed = read_parameters(copied)
    request = entry.request
    assert parsed.request.replace(model=request.model) == request
    assert (parsed.model_name, parsed.model_hash) == (entry.model_name, entry.model_hash)
    # The same text the image carries.
    assert copied == Image.open(entry.path).text["parameters"]


def test_use_seed_and_use_these_settings(qtbot, window, tiny_model) -> None:
    entry = generate(qtbot, window, tiny_model)
    panel = window.panel
    panel.seed.setText("")
    panel.prompt.setPlainText("something else")
    panel.steps.setValue(17)
    window.info_panel.seed_button.click()
    assert panel.seed.text() == "4242"
    assert panel.prompt.toPlainText() == "something else"  # only the seed
    window.info_panel.use_button.click()
    assert panel.prompt.toPlainText() == "a lighthouse"
    assert panel.steps.value() == 3
    assert panel.request().replace(seed=entry.seed) == entry.request


def test_a_gallery_image_shows_its_inpaint_settings(window, tmp_path) -> None:
    entry = inpainted(window, tmp_path)
    window.show_entry(entry)
    text = window.info_panel.plain_text()
    for shown in (
        "Model: dreamy [0123abcd]",
        "VAE: clear-vae",
        "Clip skip: 2",
        "Mode: inpainting",
        "Strength: 0.6",
        "Source: source.png",
        "Mask blur: 8 px",
        "Inpaint area: only masked, 48 px padding",
        "Masked content: latent noise",
        "LoRAs: brick (0.7)",
        f"Image: #{entry.id}",
        "Made: in 2.2 s on cpu (float32)",
    ):
        assert shown in text
    assert "Resize mode" not in text  # "only masked" repaints at its own size


def test_an_opened_file_from_another_tool(window, tmp_path) -> None:
    path = a1111_file(tmp_path)
    window.open_file(path)
    window.settings_box.reject()  # the offer is declined; the panel still offers them
    info = window.info_panel
    text = info.plain_text()
    assert "Prompt: a castle" in text and "Seed: 77" in text and "Size: 640×384" in text
    assert "Also in the image, not applied: Hires upscale: 2" in text
    assert "Settings from: AUTOMATIC1111" in text
    info.copy_button.click()
    assert QGuiApplication.clipboard().text() == A1111_TEXT  # as the image holds it
    window.panel.prompt.setPlainText("mine")
    info.use_button.click()
    assert window.panel.prompt.toPlainText() == "a castle"
    assert (window.panel.steps.value(), window.panel.seed.text()) == (33, "77")


def test_an_opened_file_the_history_lists_is_its_entry(window, tmp_path) -> None:
    entry = inpainted(window, tmp_path)
    window.open_file(Path(entry.path))
    window.settings_box.reject()
    assert window.info_panel.shown.entry == entry
    assert f"Image: #{entry.id}" in window.info_panel.plain_text()


def test_a_file_without_settings(window, tmp_path) -> None:
    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 64)).save(path)
    window.open_file(path)
    info = window.info_panel
    assert "photo.png holds no generation settings" in info.plain_text()
    assert not info.copy_button.isEnabled() and not info.use_button.isEnabled()


def test_the_panel_sits_under_the_canvas_and_toggles_from_the_view_menu(qtbot, window) -> None:
    window.resize(1280, 800)
    qtbot.waitUntil(lambda: window.info_panel.isVisible())
    info, stack, panel = window.info_panel, window.stack, window.panel

    def top(widget) -> int:
        return widget.mapTo(window, widget.rect().topLeft()).y()

    def left(widget) -> int:
        return widget.mapTo(window, widget.rect().topLeft()).x()

    assert top(info) >= top(stack) + stack.height()  # under the canvas
    assert abs(left(info) - left(stack)) < 8 and abs(info.width() - stack.width()) < 8
    assert 100 <= info.height() <= 220
    assert panel.height() > stack.height()  # the prompt panel keeps the full height
    [view] = [a.menu() for a in window.menuBar().actions() if a.text() == "&View"]
    [toggle] = [a for a in view.actions() if a.text() == "Image info"]
    toggle.trigger()
    assert not info.isVisible()
    toggle.trigger()
    assert info.isVisible()
