"""Image prompts on Flux.1 (XLabs' flux-ip-adapter layout) with tiny models: the file is
recognised (safetensors header or pickle), adapters of the other families are refused
both ways, weight 0 is the plain image, start and end are kept step by step, the record
re-runs pixel for pixel, and the transformer is put back exactly afterwards."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from sdstudio.engine.control.image_prompts import ImagePrompt
from sdstudio.engine.control.ip_adapter_files import (
    inspect_ip_adapter,
    list_ip_adapters,
)
from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.generation import Engine
from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.testing.tiny_control import write_header_file
from sdstudio.testing.tiny_flux_ip_adapter import (
    save_tiny_flux_ip_adapter,
    tiny_flux_ip_adapter_tensors,
)
from sdstudio.testing.tiny_ip_adapter import save_tiny_encoder, save_tiny_ip_adapter

XLABS = {
    "ip_adapter_proj_model.proj.weight": (16384, 768),
    "ip_adapter_proj_model.proj.bias": (16384,),
    "ip_adapter_proj_model.norm.weight": (4096,),
    "ip_adapter_proj_model.norm.bias": (4096,),
    **{
        f"double_blocks.{n}.processor.ip_adapter_double_stream_{p}_proj.{w}": shape
        for n in range(19)
        for p in ("k", "v")
        for w, shape in (("weight", (3072, 4096)), ("bias", (3072,)))
    },
}
"""The tensors of XLabs' flux-ip-adapter.safetensors (v1)."""
SD15_PLAIN = {
    "image_proj.proj.weight": (3072, 1024),
    "image_proj.norm.weight": (768,),
    "ip_adapter.1.to_k_ip.weight": (320, 768),
    "ip_adapter.1.to_v_ip.weight": (320, 768),
}


@pytest.fixture(scope="module")
def flux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdstudio.testing.tiny_flow import save_tiny_flux

    return save_tiny_flux(tmp_path_factory.mktemp("models") / "tiny-flux-dev", guidance_embeds=True)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, flux: Path) -> Path:
    root = tmp_path_factory.mktemp("flux-ip")
    save_tiny_flux_ip_adapter(flux, root / "ipadapter" / "flux-ip-adapter-tiny.safetensors")
    save_tiny_flux_ip_adapter(flux, root / "ipadapter" / "flux-ip-adapter-tiny-b.bin", seed=9)
    save_tiny_encoder(root / "clip_vision" / "tiny-vision.safetensors")
    reference = Image.new("RGB", (48, 40), (20, 160, 220))
    ImageDraw.Draw(reference).ellipse((6, 6, 40, 34), fill=(250, 90, 10))
    reference.save(root / "reference.png")
    Image.new("RGB", (40, 40), (240, 240, 30)).save(root / "second.png")
    return root


@pytest.fixture
def ip_engine(manager, tmp_path: Path, library: Path) -> Engine:
    return Engine(
        manager,
        tmp_path / "inputs",
        ip_adapter_dirs=lambda: [library / "ipadapter"],
        clip_vision_dirs=lambda: [library / "clip_vision"],
    )


def base(model: Path, **changes) -> GenerationRequest:
    request = GenerationRequest(
        prompt="a boat", model=str(model), width=64, height=64, steps=4, seed=11,
        sampler="Euler", schedule="Simple", guidance_scale=1.0,
    )  # fmt: skip
    return request.replace(**changes)


def prompt(library: Path, name: str = "flux-ip-adapter-tiny", **changes) -> ImagePrompt:
    return replace(ImagePrompt(name, (str(library / "reference.png"),)), **changes)


def run(engine: Engine, request: GenerationRequest):
    return next(engine.generate(request))


def array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_xlabs_files_are_recognised(tmp_path: Path, library: Path) -> None:
    real = inspect_ip_adapter(write_header_file(tmp_path / "flux-ip-adapter.safetensors", XLABS))
    assert (real.family, real.label, real.kind, real.encoder) == (
        "flux1",
        "Flux.1",
        "plain",
        "ViT-L",
    )
    assert (real.cross_dim, real.hidden_states, real.encoder_width) == (4096, False, 768)
    blocks = {k: v for k, v in XLABS.items() if k.startswith("double_blocks.")}
    with pytest.raises(ModelError, match="not an IP-Adapter"):
        inspect_ip_adapter(write_header_file(tmp_path / "blocks.safetensors", blocks))
    other = {"ip_adapter_proj_model.proj.0.weight": (4096, 768), **blocks}
    with pytest.raises(ModelError, match="Flux IP-Adapter of a kind sdstudio cannot run"):
        inspect_ip_adapter(write_header_file(tmp_path / "other.safetensors", other))
    pickle = inspect_ip_adapter(library / "ipadapter" / "flux-ip-adapter-tiny-b.bin")
    assert (pickle.family, pickle.encoder_width) == ("flux1", 16)
    names = {found.name for found in list_ip_adapters([library / "ipadapter"])}
    assert names == {"flux-ip-adapter-tiny", "flux-ip-adapter-tiny-b"}
    from sdstudio.engine.control.ip_adapter_files import catalog_kind
    from sdstudio.engine.models import layouts

    header, _ = layouts.read_safetensors_layout(tmp_path / "flux-ip-adapter.safetensors")
    assert catalog_kind(tmp_path / "flux-ip-adapter.safetensors", header) == "ipadapter"


def test_adapters_of_other_families_and_masks_are_refused(
    ip_engine: Engine, flux: Path, library: Path, tiny_model: Path, tmp_path: Path
) -> None:
    with pytest.raises(InvalidRequest, match=r"a Flux\.1 IP-Adapter on an SD 1\.x model"):
        run(ip_engine, base(tiny_model, ip_adapters=(prompt(library),)))
    sd15 = write_header_file(tmp_path / "ip" / "ip-adapter_sd15.safetensors", SD15_PLAIN)
    request = base(flux, ip_adapters=(prompt(library, name=str(sd15)),))
    with pytest.raises(InvalidRequest, match=r"an SD 1\.x IP-Adapter on a Flux\.1 model"):
        run(ip_engine, request)
    tiny = save_tiny_ip_adapter(tiny_model, tmp_path / "ip" / "ip-adapter_tiny.safetensors")
    request = base(flux, ip_adapters=(prompt(library, name=str(tiny)),))
    with pytest.raises(InvalidRequest, match=r"for another model family, not for Flux\.1"):
        run(ip_engine, request)
    tensors = tiny_flux_ip_adapter_tensors(flux)
    deeper = {k.replace(".0.", ".1."): v.clone() for k, v in tensors.items() if ".0." in k}
    save_file({**tensors, **deeper}, str(tmp_path / "ip" / "flux-ip-deeper.safetensors"))
    request = base(
        flux,
        ip_adapters=(prompt(library, name=str(tmp_path / "ip" / "flux-ip-deeper.safetensors")),),
    )
    with pytest.raises(InvalidRequest, match=r"does not fit this Flux\.1 transformer"):
        run(ip_engine, request)
    mask = tmp_path / "mask.png"
    Image.new("L", (64, 64), 255).save(mask)
    with pytest.raises(InvalidRequest, match=r"Flux\.1 IP-Adapters take no mask"):
        run(ip_engine, base(flux, ip_adapters=(prompt(library, mask=str(mask)),)))


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_weight_zero_is_the_plain_image_and_weight_one_is_not(
    manager, ip_engine: Engine, flux: Path, library: Path, tmp_path: Path
) -> None:
    plain = array(run(ip_engine, base(flux)).image)
    zero = run(ip_engine, base(flux, ip_adapters=(prompt(library, weight=0.0),)))
    assert np.array_equal(array(zero.image), plain)
    guided = run(ip_engine, base(flux, ip_adapters=(prompt(library),)))
    assert np.abs(array(guided.image) - plain).mean() > 1.0
    (entry,) = guided.record.extra["ip_adapters"]
    assert entry["name"] == "flux-ip-adapter-tiny" and entry["kind"] == "plain"
    assert len(entry["hash"]) == 8 and entry["encoder"] == "tiny-vision"
    (stored,) = guided.record.request.ip_adapters[0].images
    assert Path(stored).parent == ip_engine.inputs_dir
    again = run(ip_engine, guided.record.request)
    assert np.array_equal(array(again.image), array(guided.image))
    # The transformer is put back: a plain request equals one on a freshly loaded model.
    transformer = manager.pipeline(str(flux), Mode.TXT2IMG).transformer
    after = run(ip_engine, base(flux, seed=12)).image
    assert not hasattr(transformer, "encoder_hid_proj")
    assert not hasattr(transformer.config, "encoder_hid_dim_type")
    assert not any(hasattr(p, "to_k_ip") for p in transformer.attn_processors.values())
    assert not transformer._forward_pre_hooks
    manager.unload()
    fresh = Engine(manager, tmp_path / "fresh")
    assert np.array_equal(array(after), array(run(fresh, base(flux, seed=12)).image))


def test_start_and_end_are_kept_step_by_step_with_real_cfg(
    manager, ip_engine: Engine, flux: Path, library: Path
) -> None:
    """Step i of n is guided when i / n >= start and (i + 1) / n <= end; with real CFG the
    transformer runs twice a step, with the same weights."""
    seen: list[list[float]] = []

    def watch(module, _args, _output) -> None:
        scales = [p.scale for p in module.attn_processors.values() if hasattr(p, "to_k_ip")]
        seen.append(list(scales[0]))

    request = base(flux, steps=8, ip_adapters=(prompt(library, start=0.25, end=0.75),))
    request = request.replace(guidance_scale=2.0, negative_prompt="blurry")
    handle = manager.pipeline(str(flux), Mode.TXT2IMG).transformer.register_forward_hook(watch)
    try:
        run(ip_engine, request)
    finally:
        handle.remove()
    expected = [[0.0], [0.0], [1.0], [1.0], [1.0], [1.0], [0.0], [0.0]]
    assert seen == [scale for scale in expected for _ in range(2)]


def test_two_prompts_several_images_and_img2img(
    ip_engine: Engine, flux: Path, library: Path, init_image: Path, mask_image: Path
) -> None:
    images = (str(library / "reference.png"), str(library / "second.png"))
    prompts = (
        prompt(library, weight=0.7),
        prompt(library, name="flux-ip-adapter-tiny-b", images=images, end=0.5),
    )
    one = run(ip_engine, base(flux, ip_adapters=prompts[:1])).image
    both = run(ip_engine, base(flux, ip_adapters=prompts))
    assert not np.array_equal(array(both.image), array(one))
    assert [e["name"] for e in both.record.extra["ip_adapters"]] == [
        "flux-ip-adapter-tiny",
        "flux-ip-adapter-tiny-b",
    ]
    again = run(ip_engine, both.record.request)
    assert np.array_equal(array(again.image), array(both.image))
    img2img = base(flux, mode=Mode.IMG2IMG, init_image=str(init_image), strength=0.7)
    plain = run(ip_engine, img2img).image
    guided = run(ip_engine, img2img.replace(ip_adapters=prompts[:1])).image
    assert not np.array_equal(array(guided), array(plain))
    inpaint = img2img.replace(mode=Mode.INPAINT, mask=str(mask_image), strength=0.9)
    guided = run(ip_engine, inpaint.replace(ip_adapters=prompts[:1])).image
    assert not np.array_equal(array(guided), array(run(ip_engine, inpaint).image))


def test_flux_fill_is_refused(tmp_path: Path, library: Path) -> None:
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.testing.tiny_flow import save_tiny_flux

    fill = save_tiny_flux(tmp_path / "fill", fill=True)
    engine = Engine(
        PipelineManager(choose_device("cpu")),
        tmp_path / "inputs",
        ip_adapter_dirs=lambda: [library / "ipadapter"],
        clip_vision_dirs=lambda: [library / "clip_vision"],
    )
    request = base(fill, steps=2, guidance_scale=1.0, ip_adapters=(prompt(library),))
    with pytest.raises(InvalidRequest, match=r"cannot guide Flux\.1 Fill models"):
        run(engine, request)


def test_pipelines_without_image_prompts_are_named() -> None:
    import diffusers

    from sdstudio.engine.control.flux_ip_adapter import refuse_pipeline

    for name in ("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline",
                 "FluxControlNetPipeline"):  # fmt: skip
        refuse_pipeline(object.__new__(getattr(diffusers, name)))
    with pytest.raises(InvalidRequest, match="ControlNet units in image to image or inpainting"):
        refuse_pipeline(object.__new__(diffusers.FluxControlNetImg2ImgPipeline))


def test_an_image_prompt_guides_flux_schnell(tmp_path: Path, library: Path) -> None:
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.testing.tiny_flow import save_tiny_flux

    schnell = save_tiny_flux(tmp_path / "schnell", guidance_embeds=False)
    engine = Engine(
        PipelineManager(choose_device("cpu")),
        tmp_path / "inputs",
        ip_adapter_dirs=lambda: [library / "ipadapter"],
        clip_vision_dirs=lambda: [library / "clip_vision"],
    )
    plain = array(run(engine, base(schnell, steps=2)).image)
    zero = run(engine, base(schnell, steps=2, ip_adapters=(prompt(library, weight=0.0),)))
    assert np.array_equal(array(zero.image), plain)
    guided = run(engine, base(schnell, steps=2, ip_adapters=(prompt(library),)))
    assert np.abs(array(guided.image) - plain).mean() > 1.0
    assert "distilled_guidance" not in guided.record.extra
