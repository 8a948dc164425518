"""Image metadata: A1111 parameters text and sdstudio's own record."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.engine.errors import ImageInputError, InvalidRequest
from sdstudio.engine.metadata import ImageRecord, png_info, read_image_settings
from sdstudio.engine.metadata.a1111 import format_parameters, parse_parameters, split_parameters
from sdstudio.engine.request import GenerationRequest, Mode

A1111_TEXT = (
    "masterpiece, (a red boat:1.2) on a lake, <lora:add_detail:0.8>\n"
    "golden hour\n"
    "Negative prompt: blurry, lowres\n"
    "text\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567890, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, "
    'Clip skip: 2, Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.10.1'
)


def test_parse_a1111_parameters() -> None:
    request = parse_parameters(A1111_TEXT)
    assert (
        request.prompt
        == "masterpiece, (a red boat:1.2) on a lake, <lora:add_detail:0.8>\ngolden hour"
    )
    assert request.negative_prompt == "blurry, lowres\ntext"
    assert (request.steps, request.sampler, request.schedule) == (28, "DPM++ 2M", "Karras")
    assert (request.guidance_scale, request.seed) == (6.5, 1234567890)
    assert (request.width, request.height) == (512, 768)
    assert request.model == "v1-5-pruned-emaonly"
    assert request.strength == 0.45


def test_parse_quoted_values_and_legacy_sampler_spelling() -> None:
    parts = split_parameters(A1111_TEXT)
    assert parts.settings["Lora hashes"] == "add_detail: 7c6bad76eb54"
    legacy = "a cat\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 512x512"
    request = parse_parameters(legacy)
    assert (request.sampler, request.schedule) == ("DPM++ 2M", "Karras")


def test_unknown_sampler_is_kept_by_name() -> None:
    request = parse_parameters(
        "x\nSteps: 20, Sampler: DPM fast, CFG scale: 7, Seed: 1, Size: 64x64"
    )
    assert request.sampler == "DPM fast"


def test_text_without_settings_is_only_a_prompt() -> None:
    parts = split_parameters("just a prompt, with: a colon")
    assert parts.prompt == "just a prompt, with: a colon"
    assert parts.settings == {}
    with pytest.raises(InvalidRequest, match="holds no generation settings"):
        parse_parameters("just a prompt")


def test_format_then_parse_round_trip() -> None:
    request = GenerationRequest(
        model="m",
        prompt='a "quoted", multi\nline: prompt',
        negative_prompt="bad, worse",
        sampler="Euler a",
        schedule="Automatic",
        steps=12,
        guidance_scale=4.5,
        seed=99,
        width=640,
        height=448,
    )
    text = format_parameters(
        request, model_name="my-model", model_hash="abcdef0123", version="sdstudio 0.1.0"
    )
    assert text.splitlines()[-1] == (
        "Steps: 12, Sampler: Euler a, CFG scale: 4.5, Seed: 99, Size: 640x448, "
        "Model hash: abcdef0123, Model: my-model, Version: sdstudio 0.1.0"
    )
    parsed = parse_parameters(text)
    assert parsed.prompt == request.prompt
    assert parsed.negative_prompt == request.negative_prompt
    assert (parsed.sampler, parsed.schedule, parsed.steps, parsed.seed) == (
        "Euler a",
        "Automatic",
        12,
        99,
    )
    assert (parsed.guidance_scale, parsed.width, parsed.height) == (4.5, 640, 448)
    assert parsed.model == "my-model"


def test_img2img_writes_denoising_strength() -> None:
    request = GenerationRequest(
        model="m", prompt="p", mode=Mode.IMG2IMG, init_image="i.png", strength=0.35, seed=1
    )
    assert "Denoising strength: 0.35" in format_parameters(request)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parsers_never_crash_on_any_text(text: str) -> None:
    split_parameters(text)
    with contextlib.suppress(InvalidRequest):
        parse_parameters(text)


def _record(**changes) -> ImageRecord:
    request = GenerationRequest(model="/models/x", prompt="ünïcødé 猫 prompt", seed=5, **changes)
    return ImageRecord(
        request=request,
        model_name="x",
        model_hash="0123456789",
        device="cpu (float32)",
        duration_s=1.25,
        created="2026-01-01T00:00:00+00:00",
        app_version="0.1.0",
    )


def test_png_carries_both_formats_and_reads_back(tmp_path: Path) -> None:
    record = _record()
    path = tmp_path / "image.png"
    Image.new("RGB", (64, 64)).save(path, pnginfo=png_info(record))
    settings_ = read_image_settings(path)
    assert settings_.source == "sdstudio"
    assert settings_.request == record.request
    assert settings_.record == record
    assert "Model hash: 0123456789" in settings_.parameters
    with Image.open(path) as image:
        assert set(image.text) == {"parameters", "sdstudio"}


def test_a1111_png_reads_back(tmp_path: Path) -> None:
    info = PngInfo()
    info.add_text("parameters", A1111_TEXT)
    path = tmp_path / "a1111.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    settings_ = read_image_settings(path)
    assert settings_.source == "a1111"
    assert settings_.request.seed == 1234567890


def test_damaged_sdstudio_record_falls_back_to_parameters(tmp_path: Path) -> None:
    info = PngInfo()
    info.add_text("parameters", A1111_TEXT)
    info.add_text("sdstudio", "{broken")
    path = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    assert read_image_settings(path).source == "a1111"


def test_newer_record_version_is_refused_clearly() -> None:
    text = _record().to_json().replace('"version": 1', '"version": 7')
    with pytest.raises(InvalidRequest, match="Please update sdstudio"):
        ImageRecord.from_json(text)


def test_images_without_settings_and_non_images(tmp_path: Path) -> None:
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    with pytest.raises(InvalidRequest, match=r"plain\.png holds no generation settings"):
        read_image_settings(plain)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageInputError, match="not an image"):
        read_image_settings(text)
    with pytest.raises(ImageInputError, match="does not exist"):
        read_image_settings(tmp_path / "missing.png")
