"""Inpainting keeps the source outside the mask, repaints only the masked area at full
resolution when asked, and fits sources of another shape by the resize mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdstudio.engine.generation import Engine
from sdstudio.engine.image_fit import fit_image
from sdstudio.engine.inpaint import blur_mask, crop_region
from sdstudio.engine.request import (
    GenerationRequest,
    InpaintArea,
    MaskedContent,
    Mode,
    ResizeMode,
)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def opened(path: str | None) -> Image.Image:
    with Image.open(path or "") as image:
        return image.convert("RGB") if image.mode != "L" else image.copy()


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A 160x120 picture with detail everywhere (so any drift shows)."""
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    ImageDraw.Draw(image).ellipse((40, 30, 120, 90), fill=(240, 200, 40))
    path = tmp_path / "photo.png"
    image.save(path)
    return path


@pytest.fixture
def photo_mask(tmp_path: Path) -> Path:
    mask = Image.new("L", (160, 120), 0)
    mask.paste(255, (100, 48, 132, 72))  # across the ellipse's edge
    path = tmp_path / "photo-mask.png"
    mask.save(path)
    return path


def inpaint(model: Path, image: Path, mask: Path, **changes) -> GenerationRequest:
    values = {
        "prompt": "a red boat",
        "steps": 3,
        "width": 64,
        "height": 64,
        "seed": 5,
        "mode": Mode.INPAINT,
        "init_image": str(image),
        "mask": str(mask),
        "strength": 0.8,
    }
    values.update(changes)
    return GenerationRequest(model=str(model), **values)


@pytest.mark.parametrize("content", list(MaskedContent))
def test_every_pixel_outside_the_blurred_mask_is_the_source(
    engine: Engine, tiny_model: Path, photo: Path, photo_mask: Path, content: MaskedContent
) -> None:
    request = inpaint(
        tiny_model, photo, photo_mask, width=160, height=120, mask_blur=4, masked_content=content
    )
    [result] = engine.generate(request)
    stored = result.record.request
    source = opened(stored.init_image)
    outside = np.asarray(blur_mask(opened(stored.mask), 4)) == 0
    assert result.image.size == (160, 120)
    assert outside.sum() > 0.7 * outside.size
    assert np.array_equal(pixels(result.image)[outside], pixels(source)[outside])
    inside = np.asarray(opened(stored.mask)) == 255
    assert not np.array_equal(pixels(result.image)[inside], pixels(source)[inside])
    assert result.record.request.masked_content is content


def test_latent_content_changes_the_result_and_reruns_exactly(
    engine: Engine, tiny_model: Path, photo: Path, photo_mask: Path
) -> None:
    results = {
        content: next(engine.generate(inpaint(tiny_model, photo, photo_mask, **size, **extra)))
        for content, size, extra in [
            (c, {"width": 160, "height": 120}, {"masked_content": c}) for c in MaskedContent
        ]
    }
    images = [pixels(r.image) for r in results.values()]
    same = [
        (a, b)
        for i, a in enumerate(MaskedContent)
        for j, b in enumerate(MaskedContent)
        if i < j and np.array_equal(images[i], images[j])
    ]
    assert same == []
    again = next(engine.generate(results[MaskedContent.LATENT_NOISE].record.request))
    assert np.array_equal(pixels(again.image), images[2])


def test_only_masked_repaints_a_crop_and_keeps_the_source_size(
    engine: Engine, tiny_model: Path, photo: Path, photo_mask: Path
) -> None:
    statuses: list[str] = []
    request = inpaint(
        tiny_model,
        photo,
        photo_mask,
        inpaint_area=InpaintArea.MASKED,
        masked_padding=8,
        mask_blur=2,
    )
    [result] = engine.generate(request, on_status=statuses.append)
    assert result.image.size == (160, 120)  # the source's size, not 64x64
    stored = result.record.request
    assert opened(stored.init_image).size == (160, 120)
    assert (stored.width, stored.height) == (64, 64)
    source = pixels(Image.open(photo))
    outside = np.asarray(blur_mask(opened(stored.mask), 2)) == 0
    assert np.array_equal(pixels(result.image)[outside], source[outside])
    assert any("Repainting the masked area" in s for s in statuses)
    again = next(engine.generate(stored))
    assert np.array_equal(pixels(again.image), pixels(result.image))


def test_the_inpainting_model_pastes_back_too(
    engine: Engine, tiny_inpainting_model: Path, photo: Path, photo_mask: Path
) -> None:
    for content in (MaskedContent.ORIGINAL, MaskedContent.LATENT_NOTHING):
        request = inpaint(
            tiny_inpainting_model, photo, photo_mask, width=160, height=120, masked_content=content
        )
        [result] = engine.generate(request)
        outside = np.asarray(blur_mask(opened(result.record.request.mask), 4)) == 0
        assert np.array_equal(pixels(result.image)[outside], pixels(Image.open(photo))[outside])


@pytest.mark.parametrize("mode", list(ResizeMode))
def test_img2img_fits_the_source_by_the_resize_mode(
    engine: Engine, tiny_model: Path, photo: Path, mode: ResizeMode
) -> None:
    request = GenerationRequest(
        model=str(tiny_model),
        prompt="a boat",
        steps=2,
        mode=Mode.IMG2IMG,
        init_image=str(photo),
        width=64,
        height=64,
        resize_mode=mode,
        seed=1,
    )
    [result] = engine.generate(request)
    stored = opened(result.record.request.init_image)
    assert stored.size == result.image.size == (64, 64)
    assert np.array_equal(pixels(stored), pixels(fit_image(Image.open(photo), (64, 64), mode)))


def test_fit_image_keeps_the_shape_in_crop_and_fill() -> None:
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 100))  # a blue band on the left
    assert fit_image(image, (200, 100), ResizeMode.CROP) is image
    cropped = fit_image(image, (100, 100), ResizeMode.CROP)
    assert cropped.size == (100, 100)
    assert cropped.getpixel((0, 50)) == (255, 0, 0)  # the band was cut off
    filled = pixels(fit_image(image, (100, 100), ResizeMode.FILL))
    assert filled.shape == (100, 100, 3)
    assert tuple(filled[0, 50]) == tuple(filled[24, 50])  # the top edge stretched
    assert tuple(filled[50, 0]) == (0, 0, 255)
    stretched = fit_image(image, (100, 100), ResizeMode.RESIZE)
    assert tuple(pixels(stretched)[50, 0]) == (0, 0, 255)


def test_crop_region_grows_to_the_shape_within_the_picture() -> None:
    mask = Image.new("L", (400, 300), 0)
    mask.paste(255, (100, 100, 140, 120))
    assert crop_region(mask, 0, (64, 64)) == (100, 90, 140, 130)
    assert crop_region(mask, 10, (128, 64)) == (80, 90, 160, 130)
    corner = Image.new("L", (400, 300), 0)
    corner.paste(255, (380, 0, 400, 10))
    left, top, right, bottom = crop_region(corner, 32, (64, 64))
    assert (right, top) == (400, 0) and right - left == bottom - top
    assert crop_region(Image.new("L", (40, 30), 0), 8, (64, 64)) == (0, 0, 40, 30)
    whole = Image.new("L", (40, 30), 255)
    assert crop_region(whole, 8, (64, 64)) == (0, 0, 40, 30)


def test_a1111_parameters_carry_the_inpainting_settings_both_ways(tmp_path: Path) -> None:
    from sdstudio.engine.metadata.a1111 import format_parameters, read_parameters

    request = GenerationRequest(
        model="m",
        prompt="a boat",
        seed=3,
        mode=Mode.INPAINT,
        init_image=str(tmp_path / "i.png"),
        mask=str(tmp_path / "m.png"),
        mask_blur=9,
        inpaint_area=InpaintArea.MASKED,
        masked_padding=48,
        masked_content=MaskedContent.LATENT_NOISE,
    )
    text = format_parameters(request)
    assert "Mask blur: 9, Inpaint area: Only masked, Masked area padding: 48" in text
    assert "Masked content: latent noise" in text
    parsed = read_parameters(text)
    assert {"mask_blur", "inpaint_area", "masked_padding", "masked_content"} <= parsed.read
    got = parsed.request
    assert (got.mask_blur, got.inpaint_area, got.masked_padding, got.masked_content) == (
        9,
        InpaintArea.MASKED,
        48,
        MaskedContent.LATENT_NOISE,
    )
    img2img = request.replace(mode=Mode.IMG2IMG, mask=None, resize_mode=ResizeMode.FILL)
    text = format_parameters(img2img)
    assert "Resize mode: Resize and fill" in text and "Mask blur" not in text
    assert read_parameters(text).request.resize_mode is ResizeMode.FILL
    assert "Resize mode" not in format_parameters(img2img.replace(resize_mode=ResizeMode.RESIZE))


def test_a1111_inpainting_settings_written_other_ways_are_read() -> None:
    from sdstudio.engine.metadata.a1111 import read_parameters

    core = "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512"
    got = read_parameters(f"{core}, Resize mode: 1, Inpaint area: 1, Mask content: 3").request
    assert got.resize_mode is ResizeMode.CROP
    assert got.inpaint_area is InpaintArea.MASKED
    assert got.masked_content is MaskedContent.LATENT_NOTHING
    got = read_parameters(f"{core}, Inpainting fill: fill, Inpaint area: Whole picture").request
    assert got.masked_content is MaskedContent.FILL and got.inpaint_area is InpaintArea.WHOLE
    parsed = read_parameters(f"{core}, Mask blur: 999, Resize mode: sideways")
    assert parsed.request.mask_blur == 4 and parsed.request.resize_mode is ResizeMode.RESIZE
    assert parsed.extras == {"Mask blur": "999", "Resize mode": "sideways"}
    assert any("Mask blur '999'" in note for note in parsed.notes)
