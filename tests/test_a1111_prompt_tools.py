"""A1111's prompt tools together: an image made with prompt editing (``[a:b:0.5]``),
a variation seed and a wildcard template writes A1111's text, and that text alone (as
another tool or a copy-paste gives it) re-runs to the same pixels: the same schedule,
the same mixed noise, the same resolved prompt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from sdstudio.engine.generation import Engine
from sdstudio.engine.metadata import PARAMETERS_KEY, read_image_settings
from sdstudio.engine.metadata.a1111 import read_parameters
from sdstudio.engine.outputs import OutputWriter
from sdstudio.engine.prompting.wildcards import resolve
from sdstudio.engine.request import GenerationRequest

TEMPLATE = "a [red:blue:0.5] __animal__ on a hill"


def test_editing_variation_and_wildcards_rerun_from_the_a1111_text(
    manager, tiny_model: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "wildcards"
    folder.mkdir()
    (folder / "animal.txt").write_text("cat\ndog\nbird\n", "utf-8")
    engine = Engine(manager, tmp_path / "inputs", wildcard_dirs=lambda: [folder])
    request = GenerationRequest(
        model=str(tiny_model),
        prompt=TEMPLATE,
        steps=4,
        width=64,
        height=64,
        seed=5,
        variation_seed=77,
        variation_strength=0.3,
    )
    [made] = engine.generate(request)
    resolved = resolve(TEMPLATE, 5, [folder])
    assert "[red:blue:0.5]" in resolved and "__" not in resolved
    path = OutputWriter(tmp_path / "out").write(made)
    with Image.open(path) as image:
        text = image.info[PARAMETERS_KEY]
    assert text.startswith(resolved + "\n")
    for field in ("Variation seed: 77", "Variation seed strength: 0.3", "Template: "):
        assert field in text

    parsed = read_parameters(text).request.replace(model=str(tiny_model))
    assert (parsed.prompt, parsed.seed) == (resolved, 5)
    assert (parsed.variation_seed, parsed.variation_strength) == (77, 0.3)
    [from_text] = engine.generate(parsed)
    [from_record] = engine.generate(
        read_image_settings(path).request.replace(model=str(tiny_model))
    )
    pixels = np.asarray(made.image)
    assert np.array_equal(np.asarray(from_text.image), pixels)
    assert np.array_equal(np.asarray(from_record.image), pixels)

    # Each tool matters: without the variation, or with the prompt unedited, it differs.
    [plain_noise] = engine.generate(parsed.replace(variation_strength=0.0))
    [unedited] = engine.generate(parsed.replace(prompt=resolved.replace("[red:blue:0.5]", "red")))
    assert not np.array_equal(np.asarray(plain_noise.image), pixels)
    assert not np.array_equal(np.asarray(unedited.image), pixels)
