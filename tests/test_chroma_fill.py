"""Chroma (T5 alone, real CFG with the negative prompt) and Flux.1 Fill (Flux.1's own
inpainting model) run end to end, from diffusers folders and from ComfyUI trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.generation import Engine, GeneratedImage, Progress
from sdstudio.engine.inpaint import blur_mask
from sdstudio.engine.metadata.a1111 import format_parameters
from sdstudio.engine.models.families import Family, detect_family
from sdstudio.engine.models.split_layout import transformer_part
from sdstudio.engine.request import GenerationRequest, Mode


@pytest.fixture(scope="module")
def tiny_chroma(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdstudio.testing.tiny_flow import save_tiny_chroma

    return save_tiny_chroma(tmp_path_factory.mktemp("models") / "tiny-chroma")


@pytest.fixture(scope="module")
def tiny_fill(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdstudio.testing.tiny_flow import save_tiny_flux

    return save_tiny_flux(tmp_path_factory.mktemp("models") / "tiny-flux-fill", fill=True)


@pytest.fixture(scope="module")
def comfy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ComfyUI tree with a tiny Chroma and a tiny Flux.1 Fill transformer file."""
    from sdstudio.testing.tiny_split import save_tiny_comfyui_model

    root = tmp_path_factory.mktemp("ComfyUI")
    save_tiny_comfyui_model(root, "chroma")
    save_tiny_comfyui_model(root, "flux1", name="tiny-flux1-fill", fill=True)
    return root


def job(model: Path, **changes: object) -> GenerationRequest:
    values: dict[str, object] = {
        "prompt": "a red boat",
        "steps": 3,
        "width": 64,
        "height": 64,
        "seed": 5,
        "sampler": "Euler",
        "schedule": "Simple",
        "guidance_scale": 1.0,
    }
    values.update(changes)
    return GenerationRequest(model=str(model), **values)  # type: ignore[arg-type]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def inpaint_job(
    model: Path, init_image: Path, mask_image: Path, **changes: object
) -> GenerationRequest:
    values: dict[str, object] = {
        "mode": Mode.INPAINT,
        "init_image": str(init_image),
        "mask": str(mask_image),
        "strength": 0.9,
        "width": 80,
        "height": 64,
    }
    return job(model, **{**values, **changes})


def inpainting_pipeline(engine: Engine) -> str:
    """The class of the pipeline the loaded model inpaints with."""
    model = engine.pipelines.model
    assert model is not None
    return type(
        engine.pipelines.pipeline(str(model.path), Mode.INPAINT, split=model.split)
    ).__name__


def assert_only_the_masked_area_changed(result: GeneratedImage) -> None:
    """Outside the (blurred) mask the source's pixels are kept; inside, the model painted."""
    stored = result.record.request
    assert stored.init_image and stored.mask
    with Image.open(stored.init_image) as source, Image.open(stored.mask) as mask:
        source_pixels = pixels(source)
        outside = np.asarray(blur_mask(mask.convert("L"), 4)) == 0
        inside = np.asarray(mask.convert("L")) == 255
    painted = pixels(result.image)
    assert np.array_equal(painted[outside], source_pixels[outside])
    assert np.abs(painted[inside] - source_pixels[inside]).mean() > 10


# --- Chroma ------------------------------------------------------------------------------


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_chroma_folder_runs_with_real_cfg_and_its_negative_prompt(
    engine: Engine, tiny_chroma: Path
) -> None:
    assert detect_family(tiny_chroma).family is Family.CHROMA
    assert detect_family(tiny_chroma).label == "Chroma"
    events: list[Progress] = []
    guided = job(tiny_chroma, guidance_scale=4.0, negative_prompt="blurry, dark")
    [first] = engine.generate(guided, on_progress=events.append)
    model = engine.pipelines.model
    assert model is not None and model.family.id == "chroma" and not model.inpainting
    assert [e.step for e in events] == [1, 2, 3]
    assert all(e.preview is not None and e.preview.size == (8, 8) for e in events)
    assert "distilled_guidance" not in first.record.extra
    assert "CFG scale: 4" in format_parameters(first.record.request, extra=first.record.extra)
    [again] = engine.generate(first.record.request)
    assert np.array_equal(pixels(first.image), pixels(again.image))
    # The negative prompt steers the image through CFG; at CFG 1 it is not used.
    [other_negative] = engine.generate(guided.replace(negative_prompt="bright green"))
    assert not np.array_equal(pixels(first.image), pixels(other_negative.image))
    [unguided] = engine.generate(guided.replace(guidance_scale=1.0))
    [unguided_other] = engine.generate(
        guided.replace(guidance_scale=1.0, negative_prompt="bright green")
    )
    assert np.array_equal(pixels(unguided.image), pixels(unguided_other.image))
    assert not np.array_equal(pixels(first.image), pixels(unguided.image))


def test_chroma_folder_img2img_and_inpaint(
    engine: Engine, tiny_chroma: Path, init_image: Path, mask_image: Path
) -> None:
    img2img = job(tiny_chroma, mode=Mode.IMG2IMG, init_image=str(init_image), strength=0.6)
    [result] = engine.generate(img2img)
    assert result.image.size == (64, 64)
    [again] = engine.generate(result.record.request)
    assert np.array_equal(pixels(result.image), pixels(again.image))
    inpaint = inpaint_job(tiny_chroma, init_image, mask_image, guidance_scale=3.0)
    [painted] = engine.generate(inpaint)
    assert inpainting_pipeline(engine) == "ChromaInpaintPipeline"
    assert_only_the_masked_area_changed(painted)
    [repainted] = engine.generate(painted.record.request)
    assert np.array_equal(pixels(painted.image), pixels(repainted.image))


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_chroma_from_a_comfyui_tree(
    engine: Engine, comfy: Path, init_image: Path, mask_image: Path
) -> None:
    transformer = comfy / "models" / "diffusion_models" / "tiny-chroma.safetensors"
    part = transformer_part(transformer)
    assert part is not None and (part.kind, part.label) == ("chroma", "Chroma transformer")
    [first] = engine.generate(job(transformer, guidance_scale=3.5, negative_prompt="dark"))
    assert engine.pipelines.model is not None and engine.pipelines.model.family.id == "chroma"
    recorded = first.record.request
    assert recorded.text_encoders == ("t5xxl_fp16.safetensors",)
    assert recorded.vae == "tiny-kl16-vae.safetensors"
    [again] = engine.generate(recorded)
    assert np.array_equal(pixels(first.image), pixels(again.image))
    [other] = engine.generate(recorded.replace(negative_prompt="light"))
    assert not np.array_equal(pixels(first.image), pixels(other.image))
    img2img = job(transformer, mode=Mode.IMG2IMG, init_image=str(init_image), strength=0.5)
    assert next(engine.generate(img2img)).image.size == (64, 64)
    assert_only_the_masked_area_changed(
        next(engine.generate(inpaint_job(transformer, init_image, mask_image)))
    )


# --- Flux.1 Fill -------------------------------------------------------------------------


def test_fill_folder_inpaints_with_its_own_pipeline(
    engine: Engine, tiny_fill: Path, init_image: Path, mask_image: Path
) -> None:
    info = detect_family(tiny_fill)
    assert (info.family, info.variant, info.label) == (Family.FLUX1, "Fill", "Flux.1 Fill")
    notices: list[str] = []
    inpaint = inpaint_job(tiny_fill, init_image, mask_image, distilled_guidance=30.0)
    [painted] = engine.generate(inpaint.replace(negative_prompt="dark"), on_status=notices.append)
    model = engine.pipelines.model
    assert model is not None and model.inpainting and model.family.id == "flux1"
    assert inpainting_pipeline(engine) == "FluxFillPipeline"
    assert any("Flux.1 Fill models take no negative prompt" in n for n in notices)
    assert painted.record.extra.get("distilled_guidance") is True
    assert_only_the_masked_area_changed(painted)
    [again] = engine.generate(painted.record.request)
    assert np.array_equal(pixels(painted.image), pixels(again.image))
    # The distilled guidance reaches the model's guidance embedding.
    [weaker] = engine.generate(painted.record.request.replace(distilled_guidance=3.5))
    assert not np.array_equal(pixels(painted.image), pixels(weaker.image))
    with pytest.raises(InvalidRequest, match=r"Flux\.1 Fill models have no real CFG"):
        next(engine.generate(inpaint.replace(guidance_scale=3.0)))


def test_fill_takes_text_to_image_as_inpainting_of_the_whole_canvas(
    engine: Engine, tiny_fill: Path, init_image: Path
) -> None:
    [made] = engine.generate(job(tiny_fill, distilled_guidance=30.0))
    assert made.image.size == (64, 64) and made.record.request.mode is Mode.TXT2IMG
    model = engine.pipelines.model
    assert model is not None
    txt2img = engine.pipelines.pipeline(str(model.path), Mode.TXT2IMG)
    assert type(txt2img).__name__ == "FluxFillPipeline"
    assert pixels(made.image).std() > 1
    [again] = engine.generate(made.record.request)
    assert np.array_equal(pixels(made.image), pixels(again.image))
    [other_seed] = engine.generate(made.record.request.replace(seed=6))
    assert not np.array_equal(pixels(made.image), pixels(other_seed.image))
    img2img = job(tiny_fill, mode=Mode.IMG2IMG, init_image=str(init_image), strength=0.5)
    assert next(engine.generate(img2img)).image.size == (64, 64)


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_fill_transformer_file_from_a_comfyui_tree(
    engine: Engine, comfy: Path, init_image: Path, mask_image: Path
) -> None:
    transformer = comfy / "models" / "diffusion_models" / "tiny-flux1-fill.safetensors"
    part = transformer_part(transformer)
    assert part is not None
    assert (part.kind, part.variant, part.label) == ("flux1", "Fill", "Flux.1 Fill transformer")
    [painted] = engine.generate(inpaint_job(transformer, init_image, mask_image))
    assert inpainting_pipeline(engine) == "FluxFillPipeline"
    assert_only_the_masked_area_changed(painted)
    assert set(painted.record.request.text_encoders) == {
        "clip_l.safetensors",
        "t5xxl_fp16.safetensors",
    }
    [again] = engine.generate(painted.record.request)
    assert np.array_equal(pixels(painted.image), pixels(again.image))
