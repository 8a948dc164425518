"""``generate --mask`` with the inpainting options: what is outside the blurred mask
is the source's, bit for bit, and the settings are written and re-run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from sdstudio.cli import main
from sdstudio.engine.inpaint import blur_mask
from tests.test_cli import generate, images_of, run_cli


def test_masked_inpaint_keeps_the_source_outside_the_mask_and_reruns(
    capsys, tiny_model: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    source = Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    source.save(tmp_path / "source.png")
    mask = Image.new("L", (128, 96), 0)
    mask.paste(255, (40, 30, 80, 60))
    mask.save(tmp_path / "mask.png")
    options = ["--mask-blur", "3", "--inpaint-area", "masked", "--masked-padding", "16"]
    options += ["--masked-content", "latent-nothing", "--strength", "0.9"]
    code, events, _ = generate(
        capsys,
        tiny_model,
        tmp_path / "out",
        "--init-image",
        str(tmp_path / "source.png"),
        "--mask",
        str(tmp_path / "mask.png"),
        *options,
    )
    assert code == 0
    [path] = images_of(events)
    with Image.open(path) as image:
        result = np.asarray(image.convert("RGB"))
        parameters = image.text["parameters"]
    assert result.shape == (96, 128, 3)  # the source's size: only the masked area was redone
    outside = np.asarray(blur_mask(mask, 3)) == 0
    assert np.array_equal(result[outside], np.asarray(source)[outside])
    assert not np.array_equal(result[~outside], np.asarray(source)[~outside])
    assert "Mask blur: 3, Inpaint area: Only masked, Masked area padding: 16" in parameters
    assert "Masked content: latent nothing" in parameters

    code, events, _ = run_cli(capsys, "rerun", path, "--out", str(tmp_path / "again"), "--json")
    assert code == 0
    [again] = images_of(events)
    with Image.open(again) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), result)
    assert main(["info", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["request"]["masked_content"] == "latent-nothing"


def test_resize_mode_crop_fits_the_init_image_without_stretching(
    capsys, tiny_model: Path, tmp_path: Path
) -> None:
    wide = Image.new("RGB", (256, 64), (200, 30, 30))
    wide.paste((30, 30, 200), (0, 0, 64, 64))
    wide.save(tmp_path / "wide.png")
    code, events, _ = generate(
        capsys,
        tiny_model,
        tmp_path / "out",
        "--init-image",
        str(tmp_path / "wide.png"),
        "--resize-mode",
        "crop",
        "--strength",
        "0.5",
    )
    assert code == 0
    [path] = images_of(events)
    with Image.open(path) as image:
        assert "Resize mode: Crop and resize" in image.text["parameters"]
