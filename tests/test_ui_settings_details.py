"""Loading another tool's settings says what the image did not hold and what it keeps."""

from __future__ import annotations

from pathlib import Path

from metadata_samples import write_png

from sdstudio.engine.metadata import read_image_settings
from sdstudio.ui.image_settings import settings_details

FORGE_TEXT = (
    "a castle on a hill\nNegative prompt: blurry\n"
    "Steps: 24, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6, Seed: 77, "
    "Size: 512x768, Model hash: 31e35c80fc, Model: dreamy, Hires upscale: 2, "
    "Hires steps: 10, Hires upscaler: 4x-UltraSharp, Denoising strength: 0.4, "
    "ADetailer model: hand_yolov8n.pt"
)


def test_details_name_the_settings_not_applied_and_the_hash(tmp_path: Path) -> None:
    settings = read_image_settings(write_png(tmp_path / "forge.png", parameters=FORGE_TEXT))
    details = settings_details(settings)
    assert "Also in the image, not applied: ADetailer model: hand_yolov8n.pt" in details
    hires = settings.request.hires
    assert hires is not None and (hires.scale, hires.steps, hires.denoise) == (2.0, 10, 0.4)
    assert hires.upscaler == "4x-UltraSharp"  # an upscaler file, looked for when it runs
    assert "Model hash: 31e35c80fc." in details
    assert "Not in the image" not in details  # every core setting is there


def test_details_name_the_core_settings_the_image_lacks(tmp_path: Path) -> None:
    text = "a lake\nSteps: 12, Seed: 5, Size: 512x512"
    settings = read_image_settings(write_png(tmp_path / "short.png", parameters=text))
    details = settings_details(settings)
    first = details.splitlines()[0]
    assert first.startswith("Not in the image (sdstudio's defaults are used): ")
    assert "CFG scale" in first and "sampler" in first and "steps" not in first
    assert any(line.startswith("- ") for line in details.splitlines())


def test_the_offer_shows_the_details_and_sdstudio_images_need_none(window, tmp_path: Path) -> None:
    window.offer_settings(write_png(tmp_path / "forge.png", parameters=FORGE_TEXT))
    assert "ADetailer model: hand_yolov8n.pt" in window.settings_box.detailedText()
    window.settings_box.reject()
