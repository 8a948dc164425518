"""The built-in ControlNet preprocessors: A1111's modules that need no weights make the
maps A1111 describes, at the unit's resolution, fitted to exactly the generation's size;
modules that need annotator weights and unknown names are refused with clear messages."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.control.preprocessor_modules import BUILT_IN
from sdstudio.engine.control.preprocessors import (
    check_preprocessor,
    control_map,
    inpaint_control,
    preprocess,
    working_size,
)
from sdstudio.engine.control.units import ControlResize, ControlUnit
from sdstudio.engine.errors import InvalidRequest, ModelError


def unit(preprocessor: str, **fields: object) -> ControlUnit:
    return ControlUnit(model="cn.safetensors", image="c.png", preprocessor=preprocessor, **fields)  # type: ignore[arg-type]


def square(background: int = 255, ink: int = 0, size: tuple[int, int] = (128, 96)) -> Image.Image:
    """A filled square (x 40..89, y 30..69) on a plain background."""
    pixels = np.full((size[1], size[0], 3), background, np.uint8)
    pixels[30:70, 40:90] = ink
    return Image.fromarray(pixels)


def outline(ink: int = 0) -> Image.Image:
    """A black-on-white drawing: the square's 2-pixel outline."""
    pixels = np.full((96, 128, 3), 255, np.uint8)
    pixels[30:70, 40:90] = ink
    pixels[32:68, 42:88] = 255
    return Image.fromarray(pixels)


def gray(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image)
    assert pixels.ndim == 3 and pixels.shape[2] == 3
    assert (pixels == pixels[:, :, :1]).all()  # a grey map: the three channels agree
    return pixels[:, :, 0]


def test_canny_finds_the_edges_of_a_square() -> None:
    edges = gray(control_map(square(), unit("canny", resolution=96), (128, 96)))
    assert set(np.unique(edges)) == {0, 255}
    assert edges[30:70, 38:42].max() == 255 and edges[30:70, 88:92].max() == 255
    assert edges[28:32, 40:90].max() == 255 and edges[68:72, 40:90].max() == 255
    assert edges[40:60, 50:80].max() == 0  # inside
    assert edges[:20].max() == 0 and edges[:, :30].max() == 0  # far outside
    assert edges.sum() // 255 < 2 * (2 * 50 + 2 * 40)  # thin lines, not filled areas


def test_canny_thresholds_matter() -> None:
    faint = square(background=128, ink=110)  # a step of 18: a gradient below 100
    default = gray(control_map(faint, unit("canny", resolution=96), (128, 96)))
    assert default.max() == 0
    low = unit("canny", resolution=96, threshold_a=10, threshold_b=30)
    assert gray(control_map(faint, low, (128, 96))).sum() // 255 > 150
    strong = gray(control_map(square(), unit("canny", resolution=96), (128, 96)))
    high = unit("canny", resolution=96, threshold_a=254, threshold_b=255)
    assert 0 < gray(control_map(square(), high, (128, 96))).sum() <= strong.sum()


def test_invert_makes_white_lines_on_black() -> None:
    drawing = outline()
    result = np.asarray(control_map(drawing, unit("invert"), (128, 96)))
    assert (result == 255 - np.asarray(drawing)).all()
    label = unit("invert (from white bg & black line)")
    assert (np.asarray(control_map(drawing, label, (128, 96))) == result).all()


def test_lineart_standard_finds_the_drawn_lines() -> None:
    lines = gray(control_map(outline(), unit("lineart_standard", resolution=96), (128, 96)))
    assert lines[30:32, 45:85].min() > 100  # the drawn lines are bright
    assert lines[45:55, 55:75].max() == 0 and lines[:15].max() == 0  # paper stays black
    named = unit("lineart_standard (from white bg & black line)", resolution=96)
    assert (gray(control_map(outline(), named, (128, 96))) == lines).all()


def test_scribble_xdog_and_its_threshold() -> None:
    lines = gray(control_map(outline(), unit("scribble_xdog", resolution=96), (128, 96)))
    assert set(np.unique(lines)) == {0, 255}
    assert lines[29:33, 45:85].mean() > 100 and lines[45:55, 55:75].max() == 0
    faint = outline(ink=215)
    many = gray(control_map(faint, unit("scribble_xdog", resolution=96), (128, 96)))
    fewer = unit("scribble_xdog", resolution=96, threshold_a=64)
    assert 0 < gray(control_map(faint, fewer, (128, 96))).sum() < many.sum()


def test_threshold_binarizes() -> None:
    image = square(background=200, ink=100)
    assert (
        gray(control_map(image, unit("threshold", resolution=96), (128, 96)))
        == np.where(np.asarray(image)[:, :, 0] > 127, 255, 0)
    ).all()
    above = unit("threshold", resolution=96, threshold_a=220)
    assert gray(control_map(image, above, (128, 96))).max() == 0


def test_shuffle_is_seeded() -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    shuffle = unit("shuffle", resolution=96)
    first = np.asarray(control_map(image, shuffle, (128, 96), seed=7))
    assert (np.asarray(control_map(image, shuffle, (128, 96), seed=7)) == first).all()
    assert (np.asarray(control_map(image, shuffle, (128, 96), seed=8)) != first).any()
    assert (first != np.asarray(image)).mean() > 0.5  # the content moved


def test_tile_resample_downsamples() -> None:
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (96, 128, 3), np.uint8))
    assert preprocess(image, unit("tile_resample", threshold_a=2)).shape == (48, 64, 3)
    assert (preprocess(image, unit("tile_resample")) == np.asarray(image)).all()
    blurred = np.asarray(control_map(image, unit("tile_resample", threshold_a=4), (128, 96)))
    assert blurred.shape == (96, 128, 3) and blurred.std() < np.asarray(image).std() * 0.7


def test_blur_gaussian_blurs() -> None:
    blurred = np.asarray(control_map(outline(), unit("blur_gaussian", resolution=96), (128, 96)))
    assert blurred.std() < np.asarray(outline()).std() * 0.8
    assert 0 < blurred[31, 60, 0] < 255  # the line is smeared grey


def test_work_happens_at_the_units_resolution() -> None:
    assert working_size((128, 96), unit("canny", resolution=192)) == (256, 192)
    assert working_size((128, 96), unit("invert", resolution=192)) == (128, 96)
    assert preprocess(square(), unit("canny", resolution=192)).shape == (192, 256, 3)
    with pytest.raises(InvalidRequest, match="too large"):
        working_size((1, 4000), unit("canny", resolution=2048))


@pytest.mark.parametrize("mode", list(ControlResize))
@pytest.mark.parametrize("name", BUILT_IN)
def test_every_module_and_fitting_gives_exactly_the_size(name: str, mode: ControlResize) -> None:
    mask = Image.new("L", (128, 96), 0)
    result = control_map(square(), unit(name, resize=mode, resolution=96), (72, 104), mask=mask)
    assert result.size == (72, 104) and result.mode == "RGB"


def test_fitting_modes_place_the_map() -> None:
    wide = square(size=(128, 64))  # square at y 30..69 is cut by the bottom; x 40..89
    maps = {
        mode: gray(control_map(wide, unit("threshold", resolution=64, resize=mode), (64, 64)))
        for mode in ControlResize
    }
    assert maps[ControlResize.CROP][40, 0] == 255 and maps[ControlResize.CROP][40, 20] == 0
    filled = maps[ControlResize.FILL]  # the whole width in 32 rows, the border's colour
    assert filled[:16].min() == 255 and filled[-16:].min() == 255
    assert filled[16:48].min() == 0
    stretched = maps[ControlResize.RESIZE]
    assert stretched[40, 15] == 255 and stretched[40, 25] == 0
    edges = gray(control_map(square(), unit("canny", resolution=96), (256, 192)))
    assert set(np.unique(edges)) == {0, 255}  # an edge map scaled up stays black and white


def test_inpaint_marks_the_pixels_to_repaint() -> None:
    mask = Image.new("L", (128, 96), 0)
    mask.paste(255, (0, 0, 64, 96))
    image = square(background=200, ink=50)
    control = inpaint_control(image, mask, unit("inpaint_only"), (128, 96))
    assert control.dtype == np.float32 and control.shape == (96, 128, 3)
    assert (control[:, :64] == -1).all()
    assert np.allclose(control[:, 64:], np.asarray(image)[:, 64:] / 255.0)
    preview = np.asarray(
        control_map(image, unit("inpaint_global_harmonious"), (128, 96), mask=mask)
    )
    assert preview[:, :64].max() == 0 and (preview[:, 64:] == np.asarray(image)[:, 64:]).all()
    fill = inpaint_control(
        image, Image.new("L", (128, 96), 0), unit("inpaint", resize="fill"), (128, 128)
    )
    assert (fill[:10] == -1).all() and (fill[60] >= 0).all()  # the added border is repainted
    with pytest.raises(InvalidRequest, match="needs a mask"):
        control_map(image, unit("inpaint"), (128, 96))


@pytest.mark.parametrize(
    "name",
    [
        "depth_midas",
        "openpose_full",
        "lineart_anime",
        "softedge_pidinet",
        "mlsd",
        "seg_ofade20k",
        "scribble_pidinet",
        "normal_bae",
    ],
)
def test_modules_that_need_weights_are_refused(name: str) -> None:
    with pytest.raises(ModelError) as refused:
        check_preprocessor(unit(name))
    message = str(refused.value)
    assert name in message and "annotator" in message and "does not run it yet" in message
    assert "extensions/sd-webui-controlnet/annotator/downloads" in message
    assert "custom_nodes/comfyui_controlnet_aux/ckpts" in message
    with pytest.raises(ModelError):
        control_map(square(), unit(name), (64, 64))


def test_unknown_modules_and_bad_settings_are_refused() -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_preprocessor(unit("cany"))
    assert "'cany' is unknown" in str(refused.value)
    assert all(name in str(refused.value) for name in BUILT_IN)
    with pytest.raises(ModelError, match="inside the model"):
        check_preprocessor(unit("reference_only"))
    with pytest.raises(InvalidRequest, match=r"low threshold .* 1 to 255"):
        check_preprocessor(unit("canny", threshold_a=0))
    check_preprocessor(unit("invert", threshold_a=-1, threshold_b=-1))  # A1111 records these
    check_preprocessor(unit(" Canny "))


def test_importing_needs_no_opencv() -> None:
    code = (
        "import sys, sdstudio.engine.control.preprocessors, sdstudio.cli.preprocess;"
        "assert 'cv2' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
