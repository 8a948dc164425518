"""Models kept as ComfyUI keeps them: a transformer file in ``diffusion_models``, its text
encoders in ``text_encoders``, its VAE in ``vae``. Each family is completed from the
folders, generates, records its parts and re-runs pixel for pixel; GGUF Flux too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.generation import Engine
from sdstudio.engine.metadata.a1111 import format_parameters, read_parameters
from sdstudio.engine.models.catalog import scan_folder
from sdstudio.engine.models.part_folders import file_names
from sdstudio.engine.models.split_layout import complete, transformer_part
from sdstudio.engine.request import GenerationRequest

FAMILIES = ["flux1", "sd3", "zimage", "qwen-image", "flux2-klein"]


@pytest.fixture(scope="module")
def comfy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ComfyUI tree holding a tiny model of every family, and a GGUF Flux.1 dev."""
    from sdstudio.testing.tiny_split import save_tiny_comfyui_model

    root = tmp_path_factory.mktemp("ComfyUI")
    for family in FAMILIES:
        save_tiny_comfyui_model(root, family)
    save_tiny_comfyui_model(root, "flux1", name="tiny-flux1-dev", gguf="Q8_0", guidance_embeds=True)
    return root


def transformer(comfy: Path, family: str) -> Path:
    return comfy / "models" / "diffusion_models" / f"tiny-{family}.safetensors"


def request(model: Path, **changes: object) -> GenerationRequest:
    values: dict[str, object] = {
        "prompt": "a red boat",
        "steps": 2,
        "width": 64,
        "height": 64,
        "seed": 11,
        "sampler": "Euler",
        "schedule": "Simple",
        "guidance_scale": 1.0,
    }
    values.update(changes)
    return GenerationRequest(model=str(model), **values)  # type: ignore[arg-type]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_each_family_runs_from_its_parts_and_reruns_exactly(
    engine: Engine, comfy: Path, family: str
) -> None:
    notices: list[str] = []
    first = next(engine.generate(request(transformer(comfy, family)), on_status=notices.append))
    assert engine.pipelines.model is not None and engine.pipelines.model.family.id == family
    recorded = first.record.request
    assert recorded.text_encoders and all(
        (comfy / "models" / "text_encoders" / name).is_file() for name in recorded.text_encoders
    )
    assert (comfy / "models" / "vae" / recorded.vae).is_file()
    assert any("text encoders" in notice for notice in notices)
    modules = first.record.extra["modules"]
    assert modules[0] == Path(recorded.vae).stem
    again = next(engine.generate(recorded))
    assert np.array_equal(pixels(first.image), pixels(again.image))
    # The A1111 text names the parts as Forge does; read back, they re-run the same.
    text = format_parameters(recorded, model_name=family, extra=first.record.extra)
    assert "Module 1: " in text
    parsed = read_parameters(text, model=str(transformer(comfy, family))).request
    third = next(engine.generate(parsed.replace(model=str(transformer(comfy, family)))))
    assert np.array_equal(pixels(first.image), pixels(third.image))


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_a_gguf_flux_dev_runs_with_distilled_guidance(engine: Engine, comfy: Path) -> None:
    model = comfy / "models" / "diffusion_models" / "tiny-flux1-dev-Q8_0.gguf"
    part = transformer_part(model)
    assert part is not None and (part.kind, part.variant) == ("flux1", "dev")
    assert part.quantization == "GGUF Q8_0"
    first = next(engine.generate(request(model, distilled_guidance=2.0)))
    assert first.record.extra.get("distilled_guidance") is True
    other = next(engine.generate(request(model, distilled_guidance=5.0)))
    assert not np.array_equal(pixels(first.image), pixels(other.image))
    again = next(engine.generate(first.record.request))
    assert np.array_equal(pixels(first.image), pixels(again.image))


def test_named_parts_are_used_and_checked(comfy: Path) -> None:
    flux = transformer(comfy, "flux1")
    part = transformer_part(flux)
    assert part is not None
    encoders = comfy / "models" / "text_encoders"
    # Forge's modules: the VAE among the text encoders, by stem.
    split = complete(flux, part, ("tiny-kl16-vae", "clip_l", "t5xxl_fp16"), "")
    assert split.vae.name == "tiny-kl16-vae.safetensors"
    assert [p.name for p in split.text_encoders if p] == [
        "clip_l.safetensors",
        "t5xxl_fp16.safetensors",
    ]
    # A T5 of another width (SD3's) does not fit Flux's second text encoder.
    with pytest.raises(ModelError, match="does not fit tiny-flux1"):
        complete(flux, part, (str(encoders / "t5xxl_sd3.safetensors"),), "")
    with pytest.raises(ModelError, match=r"Flux\.2 VAE"):
        complete(flux, part, (), str(comfy / "models" / "vae" / "tiny-flux2-vae.safetensors"))
    with pytest.raises(ModelError, match="was not found"):
        complete(flux, part, ("no_such_encoder",), "")


def test_a_missing_text_encoder_says_where_it_looked(tmp_path: Path) -> None:
    from sdstudio.testing.tiny_split import save_tiny_comfyui_model

    model = save_tiny_comfyui_model(tmp_path, "zimage")
    (tmp_path / "models" / "text_encoders" / "qwen_3_4b.safetensors").unlink()
    part = transformer_part(model)
    assert part is not None
    with pytest.raises(ModelError, match=r"Qwen3 encoder 32 wide.*text_encoders.*--text-encoder"):
        complete(model, part, (), "")


def test_text_encoders_are_refused_for_a_model_with_its_own(engine: Engine, tmp_path: Path) -> None:
    from sdstudio.testing.tiny_flow import save_tiny_zimage

    folder = save_tiny_zimage(tmp_path / "tiny-zimage")
    with pytest.raises(InvalidRequest, match="transformer file kept alone"):
        next(engine.generate(request(folder, text_encoders=("qwen_3_4b.safetensors",))))


def test_the_catalog_tells_models_from_parts(comfy: Path) -> None:
    entries = {e.name: e for e in scan_folder(comfy).entries}
    flux = entries["tiny-flux1"]
    assert (flux.kind, flux.family, flux.variant) == ("checkpoint", "flux1", "schnell")
    assert "transformer" in flux.flags
    gguf = entries["tiny-flux1-dev-Q8_0"]
    assert (gguf.kind, gguf.format, gguf.variant) == ("checkpoint", "gguf", "dev")
    assert {"transformer", "gguf"} <= set(gguf.flags)
    assert (entries["t5xxl_fp16"].kind, entries["t5xxl_fp16"].family) == ("text_encoder", "t5")
    assert entries["qwen_2.5_vl_7b"].family == "qwen2.5-vl"
    assert (entries["tiny-flux2-vae"].kind, entries["tiny-flux2-vae"].family) == ("vae", "flux2")
    for family in FAMILIES:
        assert entries[f"tiny-{family}"].family == family


def test_records_from_elsewhere_name_parts_by_file_name_only() -> None:
    assert file_names(("/etc/passwd", "C:/x/../clip_l.safetensors", "t5xxl")) == (
        "passwd",
        "clip_l.safetensors",
        "t5xxl",
    )


def test_cli_generates_from_a_split_layout_and_lists_it(
    capsys: pytest.CaptureFixture[str], comfy: Path, tmp_path: Path
) -> None:
    from tests.test_cli import images_of, run_cli
    from tests.test_cli_models import run as run_models

    encoders = comfy / "models" / "text_encoders"
    code, events, err = run_cli(
        capsys,
        "generate",
        "--model",
        str(transformer(comfy, "flux1")),
        "--text-encoder",
        str(encoders / "clip_l.safetensors"),
        "--text-encoder",
        str(encoders / "t5xxl_fp16.safetensors"),
        "--vae",
        str(comfy / "models" / "vae" / "tiny-kl16-vae.safetensors"),
        "--prompt",
        "a lighthouse",
        "--steps",
        "3",
        "--width",
        "64",
        "--height",
        "64",
        "--out",
        str(tmp_path / "out"),
        "--json",
    )
    assert code == 0, err
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3]
    (image,) = images_of(events)
    code, events, err = run_cli(capsys, "rerun", image, "--out", str(tmp_path / "again"), "--json")
    assert code == 0, err
    assert np.array_equal(pixels(Image.open(image)), pixels(Image.open(images_of(events)[0])))
    status, out, _ = run_models("add-folder", str(comfy))
    assert status == 0
    status, out, _ = run_models("list", "--json")
    listing = {e["name"]: e for e in json.loads(out[out.index("[") :])}
    assert (
        listing["tiny-flux1-dev-Q8_0"]["family"],
        listing["tiny-flux1-dev-Q8_0"]["variant"],
    ) == (
        "flux1",
        "dev",
    )
    assert listing["clip_g"]["kind"] == "text_encoder"


@pytest.mark.parametrize("family", ["flux1", "sd3"])
@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_all_in_one_checkpoints_use_their_own_parts(
    engine: Engine, tmp_path: Path, family: str
) -> None:
    from sdstudio.testing.tiny_split import save_tiny_all_in_one

    model = save_tiny_all_in_one(
        tmp_path / "models" / "checkpoints" / f"aio-{family}.safetensors", family
    )
    first = next(engine.generate(request(model)))
    recorded = first.record.request
    assert (recorded.text_encoders, recorded.vae) == ((), "")
    assert "modules" not in first.record.extra
    again = next(engine.generate(recorded))
    assert np.array_equal(pixels(first.image), pixels(again.image))
    (entry,) = scan_folder(tmp_path).entries
    assert (entry.family, "all-in-one") == (family, entry.flags[0])


def test_a_comfyui_flux_graph_reruns_with_its_files(
    capsys: pytest.CaptureFixture[str], comfy: Path, tmp_path: Path
) -> None:
    """A ComfyUI image naming a GGUF Flux.1 dev (UnetLoaderGGUF), its DualCLIPLoader files,
    its VAELoader file and a FluxGuidance re-runs from the ComfyUI folder sdstudio knows."""
    from PIL.PngImagePlugin import PngInfo

    from tests.test_cli import images_of, run_cli
    from tests.test_cli_models import run as run_models
    from tests.test_flow_metadata import _graph

    graph = _graph(
        **{
            "12": {
                "class_type": "UnetLoaderGGUF",
                "inputs": {"unet_name": "tiny-flux1-dev-Q8_0.gguf"},
            },
            "11": {
                "class_type": "DualCLIPLoader",
                "inputs": {
                    "clip_name1": "t5xxl_fp16.safetensors",
                    "clip_name2": "clip_l.safetensors",
                },
            },
            "10": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny-kl16-vae.safetensors"}},
            "27": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64}},
            "17": {
                "class_type": "BasicScheduler",
                "inputs": {"scheduler": "simple", "steps": 2, "denoise": 1, "model": ["30", 0]},
            },
        }
    )
    info = PngInfo()
    info.add_text("prompt", json.dumps(graph))
    source = tmp_path / "ComfyUI_00001_.png"
    Image.new("RGB", (64, 64)).save(source, pnginfo=info)
    assert run_models("add-folder", str(comfy))[0] == 0
    code, events, err = run_cli(
        capsys, "rerun", str(source), "--out", str(tmp_path / "out"), "--json"
    )
    assert code == 0, err
    (made,) = images_of(events)
    from sdstudio.engine.metadata import read_image_settings

    stored = read_image_settings(made).request
    assert stored.distilled_guidance == 2.5 and stored.seed == 123456
    assert stored.text_encoders == ("clip_l.safetensors", "t5xxl_fp16.safetensors")
    assert Path(stored.model).stem == "tiny-flux1-dev-Q8_0"
