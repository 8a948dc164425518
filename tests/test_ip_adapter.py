"""Image prompts (IP-Adapters) running in the engine with tiny models: weight 0 is the
image without them, start and end are kept step by step, a mask changes the result,
the record re-runs pixel for pixel, the adapters unload, and they work beside two
ControlNet units, in img2img, inpainting and the hires pass."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdstudio.engine.control.image_prompts import ImagePrompt
from sdstudio.engine.control.units import ControlUnit
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.generation import Engine
from sdstudio.engine.refine.hires_settings import HiresFix
from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.testing.tiny_control import save_tiny_controlnet
from sdstudio.testing.tiny_ip_adapter import save_tiny_encoder, save_tiny_ip_adapter


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """An adapters folder (plain and plus), an encoders folder and a ControlNet."""
    root = tmp_path_factory.mktemp("ip-library")
    save_tiny_ip_adapter(tiny_model, root / "ipadapter" / "ip-adapter_tiny.safetensors")
    save_tiny_ip_adapter(tiny_model, root / "ipadapter" / "ip-adapter-plus_tiny.bin", plus=True)
    save_tiny_encoder(root / "clip_vision" / "tiny-vision.safetensors")
    save_tiny_controlnet(tiny_model, root / "controlnet" / "control_tiny")
    reference = Image.new("RGB", (48, 40), (20, 160, 220))
    ImageDraw.Draw(reference).ellipse((6, 6, 40, 34), fill=(250, 90, 10))
    reference.save(root / "reference.png")
    Image.new("RGB", (40, 40), (240, 240, 30)).save(root / "second.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    mask.save(root / "left.png")
    return root


@pytest.fixture
def ip_engine(manager, tmp_path: Path, library: Path) -> Engine:
    return Engine(
        manager,
        tmp_path / "inputs",
        control_dirs=lambda: [library / "controlnet"],
        ip_adapter_dirs=lambda: [library / "ipadapter"],
        clip_vision_dirs=lambda: [library / "clip_vision"],
    )


def base(model: Path, **changes) -> GenerationRequest:
    request = GenerationRequest(
        prompt="a boat", model=str(model), width=64, height=64, steps=4, seed=11,
        guidance_scale=6.0,
    )  # fmt: skip
    return request.replace(**changes)


def prompt(library: Path, name: str = "ip-adapter_tiny", **changes) -> ImagePrompt:
    return replace(ImagePrompt(name, (str(library / "reference.png"),)), **changes)


def run(engine: Engine, request: GenerationRequest):
    return next(engine.generate(request))


def array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_weight_zero_is_the_plain_image_and_weight_one_is_not(
    ip_engine: Engine, tiny_model: Path, library: Path
) -> None:
    plain = array(run(ip_engine, base(tiny_model)).image)
    zero = run(ip_engine, base(tiny_model, ip_adapters=(prompt(library, weight=0.0),)))
    assert np.array_equal(array(zero.image), plain)
    guided = run(ip_engine, base(tiny_model, ip_adapters=(prompt(library),)))
    assert np.abs(array(guided.image) - plain).mean() > 1.0
    (entry,) = guided.record.extra["ip_adapters"]
    assert entry["name"] == "ip-adapter_tiny" and entry["kind"] == "plain"
    assert len(entry["hash"]) == 8 and entry["encoder"] == "tiny-vision"
    # The record names the stored copy of the reference image, and re-runs exactly.
    (stored,) = guided.record.request.ip_adapters[0].images
    assert Path(stored).parent == ip_engine.inputs_dir
    again = run(ip_engine, guided.record.request)
    assert np.array_equal(array(again.image), array(guided.image))


def test_the_adapter_unloads_after_a_request_without_it(
    manager, ip_engine: Engine, tiny_model: Path, library: Path, tmp_path: Path
) -> None:
    unet = manager.pipeline(str(tiny_model), Mode.TXT2IMG).unet
    run(ip_engine, base(tiny_model, steps=1))  # whatever an earlier test left is put back
    before = {name: type(p) for name, p in unet.attn_processors.items()}
    run(ip_engine, base(tiny_model, ip_adapters=(prompt(library, name="ip-adapter-plus_tiny"),)))
    assert unet.encoder_hid_proj is not None
    after = run(ip_engine, base(tiny_model, seed=12)).image
    assert unet.encoder_hid_proj is None
    assert {name: type(p) for name, p in unet.attn_processors.items()} == before
    manager.unload()
    fresh = Engine(manager, tmp_path / "fresh")
    assert np.array_equal(array(after), array(run(fresh, base(tiny_model, seed=12)).image))


def test_start_and_end_are_kept_step_by_step(
    manager, ip_engine: Engine, tiny_model: Path, library: Path
) -> None:
    """Step i of n is guided when i / n >= start and (i + 1) / n <= end."""
    seen: list[list[float]] = []

    def watch(module, _args, _output) -> None:  # after each UNet evaluation
        scales = [p.scale for p in module.attn_processors.values() if hasattr(p, "to_k_ip")]
        seen.append(list(scales[0]))

    request = base(tiny_model, steps=8, ip_adapters=(prompt(library, start=0.25, end=0.75),))
    handle = manager.pipeline(str(tiny_model), Mode.TXT2IMG).unet.register_forward_hook(watch)
    try:
        run(ip_engine, request)
    finally:
        handle.remove()
    assert seen == [[0.0], [0.0], [1.0], [1.0], [1.0], [1.0], [0.0], [0.0]]


def test_a_mask_draws_the_effect_to_its_region(
    ip_engine: Engine, tiny_model: Path, library: Path
) -> None:
    """The adapter's attention is added only inside the mask (the left half); the tiny
    UNet's convolutions spread it, but the left half changes most."""
    plain = array(run(ip_engine, base(tiny_model)).image)
    whole = array(run(ip_engine, base(tiny_model, ip_adapters=(prompt(library),))).image)
    masked = run(
        ip_engine, base(tiny_model, ip_adapters=(prompt(library, mask=str(library / "left.png")),))
    )
    assert not np.array_equal(array(masked.image), whole)
    change, spread = np.abs(array(masked.image) - plain), np.abs(whole - plain)
    left, right = change[:, :32].mean(), change[:, 32:].mean()
    assert left > right
    assert left / right > spread[:, :32].mean() / spread[:, 32:].mean()
    assert Path(masked.record.request.ip_adapters[0].mask).parent == ip_engine.inputs_dir


def test_two_controlnets_and_two_image_prompts_in_one_generation(
    ip_engine: Engine, tiny_model: Path, library: Path
) -> None:
    drawing = str(library / "reference.png")
    units = (
        ControlUnit("control_tiny", drawing, preprocessor="none", weight=0.8),
        ControlUnit("control_tiny", drawing, preprocessor="invert", weight=0.5, start=0.2),
    )
    controlled = run(ip_engine, base(tiny_model, control=units)).image
    prompts = (
        prompt(library, weight=0.7),
        prompt(library, name="ip-adapter-plus_tiny",
               images=(drawing, str(library / "second.png")), end=0.5),
    )  # fmt: skip
    both = run(ip_engine, base(tiny_model, control=units, ip_adapters=prompts))
    assert not np.array_equal(array(both.image), array(controlled))
    assert len(both.record.extra["control"]) == 2
    assert [e["kind"] for e in both.record.extra["ip_adapters"]] == ["plain", "plus"]
    again = run(ip_engine, both.record.request)
    assert np.array_equal(array(again.image), array(both.image))


def test_img2img_inpainting_and_the_hires_pass(
    ip_engine: Engine, tiny_model: Path, library: Path, init_image: Path, mask_image: Path
) -> None:
    prompts = (prompt(library),)
    img2img = base(tiny_model, mode=Mode.IMG2IMG, init_image=str(init_image), strength=0.6)
    plain = run(ip_engine, img2img).image
    assert not np.array_equal(array(run(ip_engine, img2img.replace(ip_adapters=prompts)).image),
                              array(plain))  # fmt: skip
    inpaint = img2img.replace(mode=Mode.INPAINT, mask=str(mask_image), strength=0.9)
    guided = run(ip_engine, inpaint.replace(ip_adapters=prompts)).image
    assert not np.array_equal(array(guided), array(run(ip_engine, inpaint).image))
    hires = base(tiny_model, hires=HiresFix(scale=1.5, steps=2, denoise=0.5))
    zero = run(ip_engine, hires.replace(ip_adapters=(prompt(library, weight=0.0),))).image
    assert zero.size == (96, 96)
    assert np.array_equal(array(zero), array(run(ip_engine, hires).image))


def test_refusals_before_anything_loads(ip_engine: Engine, tiny_model: Path, library: Path) -> None:
    with pytest.raises(InvalidRequest, match="not found"):
        run(ip_engine, base(tiny_model, ip_adapters=(prompt(library, name="nowhere"),)))
    with pytest.raises(InvalidRequest, match="cannot guide the refiner"):
        from sdstudio.engine.refine.refiner_settings import Refiner

        run(ip_engine, base(tiny_model, ip_adapters=(prompt(library),),
                            refiner=Refiner(model=str(tiny_model))))  # fmt: skip


def test_an_image_prompt_guides_an_sdxl_model(tmp_path: Path, library: Path) -> None:
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.testing.tiny_refiner import save_tiny_sdxl

    model = save_tiny_sdxl(tmp_path / "sdxl")
    save_tiny_ip_adapter(model, tmp_path / "ip" / "ip-adapter_tiny_xl.safetensors")
    engine = Engine(
        PipelineManager(choose_device("cpu")),
        tmp_path / "inputs",
        ip_adapter_dirs=lambda: [tmp_path / "ip"],
        clip_vision_dirs=lambda: [library / "clip_vision"],
    )
    plain = array(run(engine, base(model, steps=2)).image)
    zero = run(engine, base(model, steps=2, ip_adapters=(prompt(library, "ip-adapter_tiny_xl",
                                                                weight=0.0),)))  # fmt: skip
    assert np.array_equal(array(zero.image), plain)
    guided = run(engine, base(model, steps=2, ip_adapters=(prompt(library, "ip-adapter_tiny_xl"),)))
    assert not np.array_equal(array(guided.image), plain)
