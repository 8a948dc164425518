"""Flux.1 and SD 3.x run end to end: recognised, every mode, the flow samplers they
offer, previews, distilled guidance recorded and read back, exact re-runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine import samplers
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.generation import Engine, Progress
from sdstudio.engine.inpaint import blur_mask
from sdstudio.engine.metadata.a1111 import format_parameters, read_parameters
from sdstudio.engine.models.families import Family, detect_family
from sdstudio.engine.request import GenerationRequest, MaskedContent, Mode


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdstudio.testing.tiny_flow import save_tiny_flux

    return save_tiny_flux(tmp_path_factory.mktemp("models") / "tiny-flux-dev", guidance_embeds=True)


@pytest.fixture(scope="module")
def tiny_schnell(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdstudio.testing.tiny_flow import save_tiny_flux

    folder = tmp_path_factory.mktemp("models") / "tiny-flux-schnell"
    return save_tiny_flux(folder, guidance_embeds=False)


@pytest.fixture(scope="module")
def tiny_sd3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdstudio.testing.tiny_flow import save_tiny_sd3

    return save_tiny_sd3(tmp_path_factory.mktemp("models") / "tiny-sd3")


@pytest.fixture(scope="module")
def tiny_zimage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdstudio.testing.tiny_flow import save_tiny_zimage

    return save_tiny_zimage(tmp_path_factory.mktemp("models") / "tiny-zimage")


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdstudio.testing.tiny_flow import save_tiny_qwen_image

    return save_tiny_qwen_image(tmp_path_factory.mktemp("models") / "tiny-qwen-image")


FAMILY_MODELS = ["tiny_flux", "tiny_sd3", "tiny_zimage", "tiny_qwen"]


def flow_request(model: Path, **changes) -> GenerationRequest:
    values = {
        "prompt": "a red boat",
        "steps": 3,
        "width": 64,
        "height": 64,
        "seed": 7,
        "sampler": "Euler",
        "schedule": "Simple",
        "guidance_scale": 1.0,
    }
    values.update(changes)
    return GenerationRequest(model=str(model), **values)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def assert_source_kept_outside_the_mask(result) -> None:
    stored = result.record.request
    with Image.open(stored.init_image or "") as source, Image.open(stored.mask or "") as mask:
        outside = np.asarray(blur_mask(mask.convert("L"), 4)) == 0
        assert np.array_equal(pixels(result.image)[outside], pixels(source)[outside])


def test_folders_are_recognised_by_their_pipeline(
    tiny_flux: Path, tiny_sd3: Path, tiny_zimage: Path, tiny_qwen: Path
) -> None:
    assert detect_family(tiny_flux).family is Family.FLUX1
    assert detect_family(tiny_sd3).family is Family.SD3
    assert detect_family(tiny_zimage).family is Family.ZIMAGE
    assert detect_family(tiny_qwen).family is Family.QWEN_IMAGE
    assert detect_family(tiny_flux).label == "Flux.1 dev"
    assert detect_family(tiny_sd3).label == "SD 3.x Medium"
    assert detect_family(tiny_qwen).label == "Qwen-Image"


@pytest.mark.parametrize("model_name", FAMILY_MODELS)
def test_txt2img_steps_previews_and_exact_rerun(
    request: pytest.FixtureRequest, engine: Engine, model_name: str
) -> None:
    model = request.getfixturevalue(model_name)
    events: list[Progress] = []
    [first] = engine.generate(flow_request(model), on_progress=events.append)
    assert [e.step for e in events] == [1, 2, 3]
    assert all(e.preview is not None and e.preview.size == (8, 8) for e in events)
    assert first.image.size == (64, 64)
    [again] = engine.generate(first.record.request)
    assert np.array_equal(pixels(first.image), pixels(again.image))
    [other] = engine.generate(flow_request(model, seed=8))
    assert not np.array_equal(pixels(first.image), pixels(other.image))


@pytest.mark.parametrize("model_name", FAMILY_MODELS)
def test_img2img_and_inpaint_keep_the_source_outside_the_mask(
    request: pytest.FixtureRequest,
    engine: Engine,
    model_name: str,
    init_image: Path,
    mask_image: Path,
) -> None:
    model = request.getfixturevalue(model_name)
    img = flow_request(model, mode=Mode.IMG2IMG, init_image=str(init_image), strength=0.6)
    [result] = engine.generate(img)
    assert result.image.size == (64, 64)
    inpaint = flow_request(
        model,
        mode=Mode.INPAINT,
        init_image=str(init_image),
        mask=str(mask_image),
        strength=0.9,
        width=80,
        height=64,
    )
    [painted] = engine.generate(inpaint)
    assert_source_kept_outside_the_mask(painted)
    with pytest.raises(InvalidRequest, match="latent-noise is not available for"):
        next(engine.generate(inpaint.replace(masked_content=MaskedContent.LATENT_NOISE)))
    with pytest.raises(InvalidRequest, match=r"of 16, not 80x72 \(the nearest is 80x64\)"):
        next(engine.generate(inpaint.replace(height=72)))


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_flux_dev_records_its_distilled_guidance_and_schnell_does_not(
    engine: Engine, tiny_flux: Path, tiny_schnell: Path
) -> None:
    assert detect_family(tiny_schnell).label == "Flux.1 schnell"
    [dev] = engine.generate(flow_request(tiny_flux, distilled_guidance=2.5))
    text = format_parameters(dev.record.request, extra=dev.record.extra)
    assert "CFG scale: 1, Distilled CFG Scale: 2.5" in text
    parsed = read_parameters(text, model=str(tiny_flux))
    assert parsed.request.distilled_guidance == 2.5 and "distilled_guidance" in parsed.read
    [again] = engine.generate(parsed.request.replace(seed=dev.record.request.seed))
    assert np.array_equal(pixels(dev.image), pixels(again.image))
    [weaker] = engine.generate(flow_request(tiny_flux, distilled_guidance=6.0))
    assert not np.array_equal(pixels(dev.image), pixels(weaker.image))
    [schnell] = engine.generate(flow_request(tiny_schnell))
    assert "Distilled CFG Scale" not in format_parameters(
        schnell.record.request, extra=schnell.record.extra
    )


def test_weights_are_removed_with_a_notice(engine: Engine, tiny_flux: Path) -> None:
    statuses: list[str] = []
    plain = next(engine.generate(flow_request(tiny_flux, prompt="a red boat")))
    weighted = next(
        engine.generate(
            flow_request(tiny_flux, prompt="a (red:1.4) boat", clip_skip=2),
            on_status=statuses.append,
        )
    )
    assert any("emphasis weights and BREAK are removed" in s for s in statuses)
    assert any("no clip skip" in s for s in statuses)
    assert np.array_equal(pixels(plain.image), pixels(weighted.image))


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["tiny_flux", "tiny_sd3"])
def test_every_offered_flow_sampler_generates_reproducibly(
    request: pytest.FixtureRequest, engine: Engine, model_name: str
) -> None:
    model = request.getfixturevalue(model_name)
    next(engine.generate(flow_request(model, steps=1)))  # loads the model
    config = engine.pipelines.scheduler_config
    for name in samplers.sampler_names(flow=True):
        if name not in samplers.offered_samplers(config):
            continue
        for schedule in samplers.schedules_for(name, flow=True):
            job = flow_request(model, sampler=name, schedule=schedule, steps=3)
            [a] = engine.generate(job)
            [b] = engine.generate(job)
            assert np.array_equal(pixels(a.image), pixels(b.image)), (name, schedule)
    with pytest.raises(InvalidRequest):
        next(engine.generate(flow_request(model, sampler="DPM++ 2M SDE", schedule="Karras")))


@pytest.fixture(scope="module")
def tiny_klein(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdstudio.testing.tiny_flow import save_tiny_flux2_klein

    return save_tiny_flux2_klein(tmp_path_factory.mktemp("models") / "tiny-flux2-klein")


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_flux2_klein_makes_and_inpaints_but_has_no_img2img(
    engine: Engine, tiny_klein: Path, init_image: Path, mask_image: Path
) -> None:
    assert detect_family(tiny_klein).family is Family.FLUX2_KLEIN
    statuses: list[str] = []
    events: list[Progress] = []
    job = flow_request(tiny_klein, negative_prompt="blurry")
    [first] = engine.generate(job, on_status=statuses.append, on_progress=events.append)
    assert [e.step for e in events] == [1, 2, 3]
    assert all(e.preview is not None and e.preview.size == (8, 8) for e in events)
    assert any("take no negative prompt" in s for s in statuses)
    [again] = engine.generate(first.record.request)
    assert np.array_equal(pixels(first.image), pixels(again.image))
    inpaint = flow_request(
        tiny_klein,
        mode=Mode.INPAINT,
        init_image=str(init_image),
        mask=str(mask_image),
        strength=0.9,
        width=80,
        height=64,
    )
    [painted] = engine.generate(inpaint)
    assert_source_kept_outside_the_mask(painted)
    img2img = flow_request(tiny_klein, mode=Mode.IMG2IMG, init_image=str(init_image))
    with pytest.raises(InvalidRequest, match="no image-to-image with a strength"):
        next(engine.generate(img2img))
