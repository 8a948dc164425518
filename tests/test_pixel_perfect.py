"""A1111's Pixel Perfect: the preprocessor works at the size the control image takes in
the generated picture (the extension's ``pixel_perfect_resolution``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdstudio.engine.control import preprocessors
from sdstudio.engine.control.pixel_perfect import pixel_perfect_resolution
from sdstudio.engine.control.preprocessors import control_map
from sdstudio.engine.control.units import ControlResize, ControlUnit


def unit(preprocessor: str, **changes: Any) -> ControlUnit:
    return ControlUnit(model="cn", image="x.png", preprocessor=preprocessor, **changes)


def photo(size: tuple[int, int]) -> Image.Image:
    image = Image.new("RGB", size, (40, 90, 160))
    ImageDraw.Draw(image).rectangle(
        (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2), fill="white"
    )
    return image


@pytest.mark.parametrize(
    ("image", "target", "resize", "expected"),
    [
        ((1024, 768), (512, 512), ControlResize.CROP, 512),  # max(512/768, 512/1024) * 768
        ((1024, 768), (512, 512), ControlResize.FILL, 384),  # min(...) * 768
        ((512, 512), (768, 512), ControlResize.CROP, 768),
        ((512, 512), (768, 512), ControlResize.RESIZE, 768),  # Just Resize takes the larger
        ((512, 512), (768, 512), ControlResize.FILL, 512),
        ((300, 200), (512, 768), ControlResize.CROP, 768),  # 768 / 200 * 200
        ((300, 200), (512, 768), ControlResize.FILL, 341),  # 512 / 300 * 200 = 341.33
        ((4, 2), (5, 1), ControlResize.CROP, 2),  # 1.25 * 2 = 2.5: half to even
        ((4, 2), (7, 1), ControlResize.CROP, 4),  # 1.75 * 2 = 3.5: half to even
    ],
)
def test_pixel_perfect_picks_the_resolution_a1111_picks(
    image: tuple[int, int], target: tuple[int, int], resize: ControlResize, expected: int
) -> None:
    assert pixel_perfect_resolution(image, target, resize) == expected


def test_pixel_perfect_sets_the_maps_working_size(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int | None] = []
    real = preprocessors.preprocess

    def spy(image: Image.Image, unit: ControlUnit, **options: Any) -> np.ndarray:
        seen.append(options.get("resolution"))
        return real(image, unit, **options)

    monkeypatch.setattr(preprocessors, "preprocess", spy)
    image = photo((300, 200))
    made = control_map(image, unit("canny", pixel_perfect=True), (512, 768))
    made_fill = control_map(image, unit("canny", pixel_perfect=True, resize="fill"), (512, 768))
    control_map(image, unit("canny", resolution=320), (512, 768))
    assert seen == [768, 341, 320]
    assert made.size == made_fill.size == (512, 768)


def test_pixel_perfect_is_no_longer_refused() -> None:
    from sdstudio.engine.control.guidance import check_control
    from sdstudio.engine.request import GenerationRequest

    request = GenerationRequest(prompt="a", model="m", control=(unit("canny", pixel_perfect=True),))
    check_control(request)
