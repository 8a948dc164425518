"""The prompt panel: choosing a model file or folder, settings that never change
silently, the size a source proposes, the Advanced section, Generate without a model,
and fitting small screens (pytest-qt, offscreen)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QFileDialog

from sdstudio.engine.models.catalog import ModelEntry
from sdstudio.engine.request import GenerationRequest

SD1 = ModelEntry("dreamshaper", "checkpoint", "safetensors", "/m/dreamshaper.safetensors", 1,
                 "folder", "sd1", "SD 1.x")  # fmt: skip
XL = ModelEntry("juggernaut-xl", "checkpoint", "safetensors", "/m/juggernaut-xl.safetensors", 1,
                "folder", "sdxl", "SDXL")  # fmt: skip
XL_TURBO = ModelEntry("sdxl-turbo", "checkpoint", "diffusers", "/m/sdxl-turbo", 1, "huggingface",
                      "sdxl", "SDXL")  # fmt: skip


def xl_checkpoint(path: Path) -> Path:
    """A .safetensors file whose header says SDXL (the tensors are tiny)."""
    import torch
    from safetensors.torch import save_file

    unet = "model.diffusion_model."
    tensors = {
        f"{unet}input_blocks.0.0.weight": torch.zeros(1, 4, 1, 1),
        f"{unet}label_emb.0.0.weight": torch.zeros(1),
        "conditioner.embedders.0.transformer.x": torch.zeros(1),
        "conditioner.embedders.1.model.x": torch.zeros(1),
    }
    save_file(tensors, path)
    return path


def pick(window, entry: ModelEntry) -> None:
    """Pick a listed model as a user does, from the model box."""
    box = window.panel.model
    index = box.findData(entry.path)
    box.setCurrentIndex(index)
    box.activated.emit(index)


def size(panel) -> tuple[int, int]:
    return panel.width_box.value(), panel.height_box.value()


# Choosing a model file or a diffusers folder with "…".


def test_the_model_button_chooses_a_safetensors_file_shown_by_its_name(
    window, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    panel = window.panel
    model = xl_checkpoint(tmp_path / "juggernautXL_v9.safetensors")
    filters: list[str] = []

    def choose(_parent, _caption, _folder, file_filter):
        filters.append(file_filter)
        return str(model), file_filter

    monkeypatch.setattr(QFileDialog, "getOpenFileName", choose)
    actions = panel.picker.browse.menu().actions()
    assert [a.text() for a in actions] == ["Choose a model file…", "Choose a diffusers folder…"]
    actions[0].trigger()
    assert "*.safetensors" in filters[0] and "model_index.json" in filters[0]
    assert panel.model.currentText() == "juggernautXL_v9"
    assert panel.model_path() == panel.request().model == str(model)
    assert str(model) in panel.model.itemData(
        panel.model.currentIndex(), Qt.ItemDataRole.ToolTipRole
    )
    assert panel.model_family() == "sdxl"  # read from the header: SDXL's size, nothing was set
    assert size(panel) == (1024, 1024)


def test_the_model_button_chooses_a_diffusers_folder_or_its_model_index(
    window, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    panel = window.panel
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *_args: str(tiny_model))
    panel.picker.browse.menu().actions()[1].trigger()
    assert (panel.model.currentText(), panel.model_path()) == ("tiny-sd", str(tiny_model))
    assert panel.model_family() == "sd1"
    other = shutil.copytree(tiny_model, tmp_path / "other-model")
    index_file = str(other / "model_index.json")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *_args: (index_file, ""))
    panel.picker.browse.menu().actions()[0].trigger()
    assert (panel.model.currentText(), panel.model_path()) == ("other-model", str(other))


@pytest.mark.parametrize(
    ("name", "problem"),
    [("empty-folder", "has no model_index.json"), ("notes.txt", "is not a model sdstudio opens")],
)
def test_a_chosen_file_or_folder_that_is_not_a_model_is_refused(
    window, tiny_model: Path, tmp_path: Path, name: str, problem: str
) -> None:
    panel = window.panel
    panel.set_model(str(tiny_model))
    wrong = tmp_path / name
    if name.endswith(".txt"):
        wrong.write_text("hello")
    else:
        wrong.mkdir()
    assert not panel.picker.use_path(wrong)
    assert problem in panel.picker.problem
    assert panel.model_path() == str(tiny_model)


# Picking a model never silently changes what was set.


def test_picking_a_model_keeps_the_size_a_source_set_and_offers_the_models_settings(
    window,
) -> None:
    panel = window.panel
    window.show_models([SD1, XL])
    panel.steps.setValue(33)
    window.canvas.set_source(Image.new("RGB", (896, 480)))
    assert size(panel) == (704, 376)  # the source's shape at SD 1.x's size: no model yet
    pick(window, XL)
    assert size(panel) == (704, 376) and panel.steps.value() == 33
    assert panel.recommendation.isVisibleTo(panel)
    text = panel.recommendation.label.text()
    assert "896×480, 25 steps" in text and "Your size and steps were kept" in text
    panel.recommendation.use_button.click()
    assert (size(panel), panel.steps.value()) == ((896, 480), 25)
    assert not panel.recommendation.isVisibleTo(panel)


def test_picking_a_model_keeps_loaded_settings(window) -> None:
    panel = window.panel
    window.show_models([SD1, XL])
    panel.load(
        GenerationRequest(
            model=SD1.path, prompt="a castle", steps=12, guidance_scale=4.5, sampler="Euler",
            schedule="Automatic", width=640, height=384,
        )
    )  # fmt: skip
    pick(window, XL)
    assert panel.model_path() == XL.path
    assert (size(panel), panel.steps.value(), panel.guidance.value()) == ((640, 384), 12, 4.5)
    assert panel.sampler.currentText() == "Euler"
    assert "size, steps, CFG scale and sampler were kept" in panel.recommendation.label.text()


def test_a_model_picked_first_sets_what_nobody_set(window) -> None:
    panel = window.panel
    window.show_models([SD1, XL, XL_TURBO])
    panel.width_box.setValue(768)  # the user's: kept
    pick(window, XL_TURBO)
    assert size(panel) == (768, 512)
    assert (panel.steps.value(), panel.guidance.value()) == (1, 0.0)
    assert (panel.sampler.currentText(), panel.schedule.currentText()) == ("Euler a", "SGM Uniform")
    assert "Your size was kept" in panel.recommendation.label.text()


# A source proposes its size.


def test_a_large_source_proposes_its_shape_at_the_models_size_and_says_so(window) -> None:
    panel = window.panel
    window.canvas.set_source(Image.new("RGB", (4000, 3000)))
    assert size(panel) == (592, 440)
    message = window.statusBar().currentMessage()
    assert "The source is 4000×3000; generating at 592×440 (its shape at the model's size)" in (
        message
    )
    window.show_models([XL])
    pick(window, XL)
    assert size(panel) == (592, 440)  # set by the source: offered, not changed
    panel.recommendation.use_button.click()
    assert size(panel) == (1184, 888)
    window.canvas.set_source(Image.new("RGB", (3000, 4000)))
    assert size(panel) == (888, 1184)


def test_the_source_settings_show_only_with_a_source(window) -> None:
    advanced = window.panel.advanced
    advanced.set_expanded(True)
    source_widgets = [advanced.resize_mode, advanced.inpaint_area, advanced.mask_blur]
    assert not any(w.isVisibleTo(window.panel) for w in source_widgets)
    window.canvas.set_source(Image.new("RGB", (80, 72)))
    assert all(w.isVisibleTo(window.panel) for w in source_widgets)
    assert not advanced.masked_padding.isVisibleTo(window.panel)
    advanced.inpaint_area.setCurrentIndex(advanced.inpaint_area.findText("Only masked"))
    assert advanced.masked_padding.isVisibleTo(window.panel)
    assert advanced.clip_skip.isVisibleTo(window.panel) and advanced.batch.isVisibleTo(window.panel)
    advanced.set_expanded(False)
    assert not advanced.clip_skip.isVisibleTo(window.panel)


# The Advanced section: clip skip, batch, resize mode and inpainting settings.


def test_clip_skip_read_from_an_a1111_image_is_used_for_the_next_generation(
    window, tiny_model: Path, tmp_path: Path
) -> None:
    window.panel.set_model(str(tiny_model))
    info = PngInfo()
    info.add_text(
        "parameters", "a castle\nSteps: 20, Sampler: Euler a, Seed: 5, Size: 512x512, Clip skip: 2"
    )
    path = tmp_path / "a1111.png"
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    window.open_file(path)
    window.settings_box.accept()
    assert window.panel.request().clip_skip == 2
    assert window.panel.request().model == str(tiny_model)  # the image names no model
    assert "clip skip 2" in window.panel.advanced.toggle.text()  # shown while folded
    window.panel.clip_skip.setValue(1)
    assert window.panel.request().clip_skip == 1
    assert window.panel.advanced.toggle.text() == "Advanced"


def test_the_advanced_settings_go_into_the_request_and_come_back(window, tiny_model) -> None:
    panel = window.panel
    panel.set_model(str(tiny_model))
    advanced = panel.advanced
    advanced.clip_skip.setValue(3)
    advanced.batch.setValue(4)
    advanced.resize_mode.setCurrentIndex(advanced.resize_mode.findText("Crop and resize"))
    advanced.inpaint_area.setCurrentIndex(advanced.inpaint_area.findText("Only masked"))
    advanced.masked_padding.setValue(64)
    advanced.mask_blur.setValue(9)
    advanced.masked_content.setCurrentIndex(advanced.masked_content.findText("Latent noise"))
    request = panel.request()
    fields = ("clip_skip", "batch_size", "resize_mode", "inpaint_area", "masked_padding",
              "mask_blur", "masked_content")  # fmt: skip
    expected = (3, 4, "crop", "masked", 64, 9, "latent-noise")
    assert tuple(getattr(request, name) for name in fields) == expected
    other = GenerationRequest(model=str(tiny_model), prompt="x")
    panel.load(other)
    assert panel.request().clip_skip == 1 and panel.batch.value() == 1
    panel.load(request)
    assert tuple(getattr(panel.request(), name) for name in fields) == expected


# Generate needs a model.


def test_generate_is_disabled_without_a_model_and_ctrl_enter_says_why(window, tiny_model) -> None:
    button = window.panel.generate_button
    assert not button.isEnabled()
    assert "choose one in the Model box" in button.toolTip()
    window.activateWindow()
    QTest.keyClick(window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert "No model was given: choose one" in window.statusBar().currentMessage()
    assert window.controller.running is None and not window.controller.waiting
    window.panel.set_model(str(tiny_model))
    assert button.isEnabled() and button.toolTip() == "Generate (Ctrl+Enter)"
    window.panel.model.setEditText("")
    assert not button.isEnabled()


# The common settings fit a small screen.


@pytest.fixture
def desktop_font(qapp):
    """An 11 pt font, as desktops use (the offscreen default is smaller)."""
    original = qapp.font()
    font = qapp.font()
    font.setPointSize(11)
    qapp.setFont(font)
    yield
    qapp.setFont(original)


@pytest.mark.parametrize("window_size", [(1280, 800), (1024, 640)])
def test_the_common_settings_fit_without_scrolling(
    window, desktop_font, window_size: tuple[int, int]
) -> None:
    window.canvas.set_source(Image.new("RGB", (800, 600)))  # the strength row shows too
    window.resize(*window_size)
    QApplication.processEvents()
    panel = window.panel
    assert window.size().toTuple() == window_size
    assert panel.scroll_area.verticalScrollBar().maximum() == 0
    common = [panel.model, panel.prompt, panel.negative, panel.sampler, panel.schedule,
              panel.steps, panel.guidance, panel.seed, panel.width_box, panel.height_box,
              panel.strength, panel.generate_button]  # fmt: skip
    for widget in common:
        assert widget.visibleRegion().boundingRect().size() == widget.size(), widget
        assert window.rect().contains(widget.mapTo(window, QPoint(0, 0)))
    panel.advanced.set_expanded(True)  # more than fits: the settings scroll, Generate stays
    QApplication.processEvents()
    assert panel.generate_button.visibleRegion().boundingRect().size() == (
        panel.generate_button.size()
    )
