"""The refiner in records: A1111's ``Refiner: name [hash]`` and ``Refiner switch at`` written
and read back into the request, the CLI's ``info`` and ``history show``, the info panel,
and the app's refiner row (pytest-qt, offscreen)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.cli import main
from sdstudio.engine.history import HistoryStore
from sdstudio.engine.metadata import ImageRecord, png_info, read_image_settings
from sdstudio.engine.metadata.a1111 import format_parameters, read_parameters, split_parameters
from sdstudio.engine.metadata.refiner_names import split_title
from sdstudio.engine.models.catalog import ModelEntry
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.refine.hires_settings import HiresFix
from sdstudio.engine.refine.refiner_settings import Refiner
from sdstudio.engine.request import GenerationRequest, Mode

A1111_TEXT = (
    "a lighthouse at dusk\nNegative prompt: blurry\n"
    "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, "
    "Size: 1024x1024, Model hash: 31e35c80fc, Model: sd_xl_base_1.0, "
    "Refiner: sd_xl_refiner_1.0 [7440042bbd], Refiner switch at: 0.8, Version: v1.10.1"
)
"""What A1111 writes for an SDXL image finished by Stability AI's refiner."""


def refined(**changes: object) -> GenerationRequest:
    values: dict[str, object] = {
        "model": "/models/sd_xl_base_1.0.safetensors",
        "prompt": "a lighthouse at dusk",
        "steps": 30,
        "seed": 1234,
        "width": 1024,
        "height": 1024,
        "refiner": Refiner("/models/sd_xl_refiner_1.0.safetensors", 0.7),
    }
    return GenerationRequest(**(values | changes))  # type: ignore[arg-type]


RAN = {"refiner": {"name": "sd_xl_refiner_1.0", "hash": "7440042bbd"}}
"""The record's entry for the refiner that ran."""


def test_a1111_refiner_keys_are_read_into_the_request() -> None:
    parsed = read_parameters(A1111_TEXT)
    assert parsed.request.refiner == Refiner("sd_xl_refiner_1.0", 0.8)
    assert "refiner" in parsed.read
    assert not any(key.startswith("Refiner") for key in parsed.extras)
    assert not any("refiner" in note.lower() for note in parsed.notes)
    assert split_title("sd_xl_refiner_1.0 [7440042bbd]") == ("sd_xl_refiner_1.0", "7440042bbd")
    assert split_title("my refiner") == ("my refiner", "")


def test_written_refiner_is_a1111s_and_reads_back() -> None:
    request = refined()
    text = format_parameters(request, model_name="sd_xl_base_1.0", extra=RAN)
    settings = split_parameters(text).settings
    assert settings["Refiner"] == "sd_xl_refiner_1.0 [7440042bbd]"
    assert settings["Refiner switch at"] == "0.7"
    assert "Hires refiner" not in settings
    assert list(settings)[-2:] == ["Refiner", "Refiner switch at"]  # A1111's order
    back = read_parameters(text).request
    assert back.refiner == Refiner("sd_xl_refiner_1.0", 0.7)
    assert back.replace(refiner=request.refiner, model=request.model) == request
    # Without a record of what ran (a request alone), the refiner is named by its file.
    alone = split_parameters(format_parameters(request)).settings
    assert alone["Refiner"] == "sd_xl_refiner_1.0"
    assert "Refiner" not in split_parameters(format_parameters(refined(refiner=None))).settings


def test_with_a_hires_fix_the_refiner_is_written_as_run_in_the_first_pass() -> None:
    request = refined(hires=HiresFix(scale=1.5))
    settings = split_parameters(format_parameters(request, extra=RAN)).settings
    assert settings["Hires refiner"] == "first pass"
    parsed = read_parameters(format_parameters(request, extra=RAN))
    assert parsed.request.refiner == Refiner("sd_xl_refiner_1.0", 0.7)
    assert parsed.request.hires is not None and "Hires refiner" not in parsed.extras
    assert not any("refiner" in note.lower() for note in parsed.notes)
    # A1111's default ran it in the hires pass: read, with a note that it will differ.
    second = A1111_TEXT.replace("Version", "Denoising strength: 0.5, Hires upscale: 2, Version")
    parsed = read_parameters(second)
    assert parsed.request.refiner is not None and parsed.request.hires is not None
    assert any("second pass" in note and "differ" in note for note in parsed.notes)


@pytest.mark.parametrize("switch", ["1.5", "0", "soon"])
def test_an_unusable_switch_keeps_the_refiner_as_written(switch: str) -> None:
    parsed = read_parameters(
        A1111_TEXT.replace("Refiner switch at: 0.8", f"Refiner switch at: {switch}")
    )
    assert parsed.request.refiner is None and "refiner" not in parsed.read
    assert parsed.extras["Refiner"] == "sd_xl_refiner_1.0 [7440042bbd]"
    assert parsed.extras["Refiner switch at"] == switch
    assert any("not applied" in note and "switch" in note for note in parsed.notes)


def test_a_refiner_named_none_is_none_and_a_missing_switch_is_a1111s_default() -> None:
    none = read_parameters(A1111_TEXT.replace("sd_xl_refiner_1.0 [7440042bbd]", "None"))
    assert none.request.refiner is None
    missing = read_parameters(A1111_TEXT.replace(", Refiner switch at: 0.8", ""))
    assert missing.request.refiner == Refiner("sd_xl_refiner_1.0", 0.8)


def test_an_images_record_and_parameters_both_give_the_refiner(tmp_path: Path) -> None:
    record = ImageRecord(request=refined(), model_name="sd_xl_base_1.0", extra=RAN)
    path = tmp_path / "refined.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info(record))
    settings = read_image_settings(path)
    assert settings.request.refiner == refined().refiner
    assert "Refiner: sd_xl_refiner_1.0 [7440042bbd]" in settings.parameters
    plain = tmp_path / "a1111.png"
    info = PngInfo()
    info.add_text("parameters", A1111_TEXT)
    Image.new("RGB", (8, 8)).save(plain, pnginfo=info)
    assert read_image_settings(plain).request.refiner == Refiner("sd_xl_refiner_1.0", 0.8)


def test_cli_info_and_history_show_name_the_refiner(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    image = tmp_path / "a1111.png"
    info = PngInfo()
    info.add_text("parameters", A1111_TEXT)
    Image.new("RGB", (8, 8)).save(image, pnginfo=info)
    assert main(["info", str(image)]) == 0
    out = capsys.readouterr().out
    assert "Refiner: sd_xl_refiner_1.0, switch at 0.8" in out
    assert "Also in the image (not applied): Version: v1.10.1" in out  # no refiner there

    record = ImageRecord(request=refined(), model_name="sd_xl_base_1.0", extra=RAN)
    with HistoryStore(AppPaths.default().history_db) as store:
        entry_id = store.add(tmp_path / "refined.png", record)
    assert main(["history", "show", str(entry_id)]) == 0
    shown = dict(
        line.strip().split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line
    )
    assert shown["Refiner"].strip() == "/models/sd_xl_refiner_1.0.safetensors, switch at 0.7"
    assert shown["Refiner file"].strip() == "sd_xl_refiner_1.0 (hash 7440042bbd)"


def test_the_info_panel_shows_the_refiner(window, tmp_path: Path) -> None:
    from sdstudio.ui.info_panel import ShownImage

    record = ImageRecord(request=refined(), model_name="sd_xl_base_1.0", extra=RAN)
    path = tmp_path / "refined.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info(record))
    lines = ShownImage.of_file(path).lines()
    assert [("Refiner", "sd_xl_refiner_1.0 [7440042bbd]"), ("Switch at", "0.7")] in lines


REFINER = ModelEntry("sd_xl_refiner_1.0", "checkpoint", "safetensors",
                     "/m/sd_xl_refiner_1.0.safetensors", 1, "folder", "sdxl-refiner",
                     "SDXL refiner")  # fmt: skip
XL = ModelEntry("juggernaut-xl", "checkpoint", "safetensors", "/m/juggernaut-xl.safetensors", 1,
                "folder", "sdxl", "SDXL")  # fmt: skip
SD1 = ModelEntry("dreamshaper", "checkpoint", "safetensors", "/m/dreamshaper.safetensors", 1,
                 "folder", "sd1", "SD 1.x")  # fmt: skip


def test_the_refiner_row_offers_refining_models_and_goes_into_the_request(window) -> None:
    panel = window.panel
    window.show_models([SD1, XL, REFINER])
    panel.set_model(XL.path)
    panel.prompt.setPlainText("a boat")
    row = panel.advanced.refiner
    offered = [row.model.itemText(i) for i in range(row.model.count())]
    assert offered == ["None", "sd_xl_refiner_1.0", "juggernaut-xl"]  # refiners first
    models = [panel.model.itemText(i) for i in range(panel.model.count())]
    assert "sd_xl_refiner_1.0" not in models and "juggernaut-xl" in models  # refines only
    assert panel.request().refiner is None and not row.switch_at.isEnabled()
    row.model.setCurrentIndex(1)
    row.switch_at.setValue(0.65)
    assert row.switch_at.isEnabled()
    assert panel.request().refiner == Refiner(REFINER.path, 0.65)
    assert "refiner sd_xl_refiner_1.0 at 0.65" in panel.advanced.toggle.text()
    # A new list of models keeps the choice.
    window.show_models([XL, REFINER])
    assert panel.request().refiner == Refiner(REFINER.path, 0.65)


def test_loading_an_images_settings_sets_the_refiner_row(window) -> None:
    panel = window.panel
    window.show_models([XL, REFINER])
    panel.load(read_parameters(A1111_TEXT).request)
    row = panel.advanced.refiner
    assert row.model.currentText() == "sd_xl_refiner_1.0" and row.switch_at.value() == 0.8
    assert panel.request().refiner == Refiner(REFINER.path, 0.8)
    # A refiner the list lacks is added by its name; none clears the row.
    panel.load(refined(refiner=Refiner("/elsewhere/my-refiner.safetensors", 0.9)))
    assert row.model.currentText() == "my-refiner"
    assert panel.request().refiner == Refiner("/elsewhere/my-refiner.safetensors", 0.9)
    panel.load(refined(refiner=None, mode=Mode.TXT2IMG))
    assert panel.request().refiner is None and row.model.currentText() == "None"
