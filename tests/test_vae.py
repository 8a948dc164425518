"""VAE override files: found by path or name, loaded in either layout, recorded, undone."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from sdstudio.cli import main as cli_main
from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.generation import Engine
from sdstudio.engine.metadata.a1111 import format_parameters, read_parameters, split_parameters
from sdstudio.engine.metadata.record import ImageRecord
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.engine.settings import choose_vae, load_settings, save_settings
from sdstudio.engine.vae import find_vae


@pytest.fixture(scope="session")
def vae_dir(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """VAE files for the tiny model: its own weights in the original layout (with and
    without the ``first_stage_model.`` prefix, and as a restricted-loadable pickle),
    other weights in the diffusers layout, a diffusers VAE folder, and non-VAE files."""
    import torch
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file, save_file

    from sdstudio.testing.checkpoints import convert_vae_to_original

    root = tmp_path_factory.mktemp("vae")
    own = AutoencoderKL.from_pretrained(tiny_model / "vae")
    state = load_file(str(tiny_model / "vae" / "diffusion_pytorch_model.safetensors"))
    original = convert_vae_to_original(state, own.config)
    save_file(original, root / "same.safetensors")
    bare = {key.removeprefix("first_stage_model."): value for key, value in original.items()}
    torch.save({"state_dict": bare}, root / "same_pickle.pt")
    torch.manual_seed(1)
    other = {key: value + 0.05 * torch.randn_like(value) for key, value in state.items()}
    save_file(other, root / "Other-VAE.safetensors")
    folder = root / "other_folder"
    AutoencoderKL.from_config(own.config).save_pretrained(folder)
    save_file(other, folder / "diffusion_pytorch_model.safetensors")
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, root / "a_lora.safetensors")
    wrong = {
        key: torch.zeros(*value.shape[:-1], value.shape[-1] + 1) for key, value in bare.items()
    }
    save_file(wrong, root / "wrong_shape.safetensors")
    (root / "broken.safetensors").write_bytes((root / "same.safetensors").read_bytes()[:5000])
    return root


@pytest.fixture
def vae_engine(vae_dir: Path, tmp_path: Path) -> Engine:
    """An engine with its own pipeline manager, whose VAE folder is ``vae_dir``."""
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.pipelines import PipelineManager

    return Engine(
        PipelineManager(choose_device("cpu")), tmp_path / "inputs", vae_dirs=lambda: [vae_dir]
    )


def request_for(model: Path, **changes: object) -> GenerationRequest:
    values: dict = {"steps": 2, "width": 64, "height": 64, "seed": 9, **changes}
    return GenerationRequest(model=str(model), prompt="a lighthouse", **values)


def parameters_of(record: ImageRecord) -> str:
    return format_parameters(
        record.request,
        model_name=record.model_name,
        model_hash=record.model_hash,
        extra=record.extra,
    )


def pixels(engine: Engine, request: GenerationRequest) -> np.ndarray:
    return np.asarray(next(engine.generate(request)).image)


def test_a_vae_file_replaces_the_models_own_and_is_undone(
    vae_engine: Engine, tiny_model: Path, vae_dir: Path
) -> None:
    own = pixels(vae_engine, request_for(tiny_model))
    same = pixels(vae_engine, request_for(tiny_model, vae=str(vae_dir / "same.safetensors")))
    other = pixels(vae_engine, request_for(tiny_model, vae=str(vae_dir / "Other-VAE.safetensors")))
    back = pixels(vae_engine, request_for(tiny_model))
    assert np.array_equal(same, own)  # the model's own weights in the original layout
    assert not np.array_equal(other, own)
    assert np.array_equal(back, own)  # the override leaves nothing behind


def test_every_layout_loads_the_same_weights(
    vae_engine: Engine, tiny_model: Path, vae_dir: Path
) -> None:
    by_name = pixels(vae_engine, request_for(tiny_model, vae="other-vae"))
    by_file_name = pixels(vae_engine, request_for(tiny_model, vae="Other-VAE.safetensors"))
    folder = pixels(vae_engine, request_for(tiny_model, vae=str(vae_dir / "other_folder")))
    assert np.array_equal(by_name, by_file_name)
    assert np.array_equal(by_name, folder)
    pickle = pixels(vae_engine, request_for(tiny_model, vae="same_pickle"))
    assert np.array_equal(pickle, pixels(vae_engine, request_for(tiny_model)))


def test_the_vae_is_used_in_image_to_image_too(
    vae_engine: Engine, tiny_model: Path, init_image: Path
) -> None:
    img2img = {"mode": Mode.IMG2IMG, "init_image": str(init_image), "steps": 4}
    own = pixels(vae_engine, request_for(tiny_model, **img2img))
    other = pixels(vae_engine, request_for(tiny_model, vae="other-vae", **img2img))
    assert not np.array_equal(own, other)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a_lora", r"a_lora.safetensors is not a VAE: it holds no decoder"),
        ("wrong_shape", r"wrong_shape.safetensors does not fit this model's VAE"),
        ("broken", r"broken.safetensors could not be read: it is truncated or damaged"),
    ],
)
def test_a_file_that_is_not_a_vae_for_the_model_is_refused(
    vae_engine: Engine, tiny_model: Path, name: str, message: str
) -> None:
    own = pixels(vae_engine, request_for(tiny_model))
    with pytest.raises(ModelError, match=message):
        next(vae_engine.generate(request_for(tiny_model, vae=name)))
    assert np.array_equal(pixels(vae_engine, request_for(tiny_model)), own)


def test_an_unknown_vae_names_the_folders_searched(vae_dir: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"The VAE 'nope' was not found \(looked in .*vae"):
        find_vae("nope", [vae_dir])
    assert find_vae(str(vae_dir / "same.safetensors"), []) == vae_dir / "same.safetensors"
    recorded_on_windows = "SD15\\Other-VAE.safetensors"  # as ComfyUI records sub-folders
    assert find_vae(recorded_on_windows, [vae_dir]) == vae_dir / "Other-VAE.safetensors"


def test_the_vae_is_recorded_as_a1111_does_and_read_back(
    vae_engine: Engine, tiny_model: Path, vae_dir: Path
) -> None:
    result = next(vae_engine.generate(request_for(tiny_model, vae="other-vae")))
    digest = hashlib.sha256((vae_dir / "Other-VAE.safetensors").read_bytes()).hexdigest()
    assert result.record.extra["vae"] == {"name": "Other-VAE.safetensors", "hash": digest[:10]}
    assert result.record.request.vae == "other-vae"
    text = parameters_of(result.record)
    settings = split_parameters(text).settings
    assert settings["VAE"] == "Other-VAE.safetensors"
    assert settings["VAE hash"] == digest[:10]
    assert read_parameters(text).request.vae == "Other-VAE.safetensors"
    plain = next(vae_engine.generate(request_for(tiny_model)))
    assert "VAE" not in split_parameters(parameters_of(plain.record)).settings


@pytest.mark.parametrize("recorded", ["None", "Automatic", ""])
def test_a1111_none_and_automatic_mean_the_models_own(recorded: str) -> None:
    text = f"a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, VAE: {recorded}"
    assert read_parameters(text).request.vae == ""


def test_the_vae_chosen_per_model_is_kept_in_the_settings(
    tmp_path: Path, sdstudio_home: Path, tiny_model: Path
) -> None:
    paths = AppPaths.default()
    settings = choose_vae(load_settings(paths), str(tiny_model), "/vaes/a.safetensors")
    settings = choose_vae(settings, "other-model", "b")
    save_settings(paths, settings)
    loaded = load_settings(paths)
    assert loaded.vae_for(str(tiny_model / ".." / tiny_model.name)) == "/vaes/a.safetensors"
    assert loaded.vae_for("other-model") == "b"
    assert choose_vae(loaded, str(tiny_model), "").vae_for(str(tiny_model)) == ""


def test_cli_uses_the_vae_chosen_for_the_model(
    tiny_model: Path, vae_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["models", "add-folder", str(vae_dir)]) == 0
    assert cli_main(["models", "vae", str(tiny_model), "other-vae"]) == 0
    assert str(vae_dir / "Other-VAE.safetensors") in capsys.readouterr().out
    assert cli_main(["models", "vae", str(tiny_model), "missing"]) == 1
    assert "The VAE 'missing' was not found" in capsys.readouterr().err
    base = ["generate", "--model", str(tiny_model), "--prompt", "a lighthouse", "--steps", "2"]
    base += ["--width", "64", "--height", "64", "--seed", "9", "--out"]
    assert cli_main([*base, str(tmp_path / "chosen")]) == 0
    assert cli_main([*base, str(tmp_path / "own"), "--vae", "none"]) == 0
    chosen = next((tmp_path / "chosen").glob("*.png"))
    own = next((tmp_path / "own").glob("*.png"))
    from PIL import Image

    with Image.open(chosen) as image:
        assert "VAE: Other-VAE.safetensors" in image.info["parameters"]
        chosen_pixels = np.asarray(image.convert("RGB"))
    with Image.open(own) as image:
        assert "VAE" not in image.info["parameters"]
        assert not np.array_equal(chosen_pixels, np.asarray(image.convert("RGB")))
    assert cli_main(["models", "vae", str(tiny_model), "none"]) == 0
    assert load_settings(AppPaths.default()).vae_for(str(tiny_model)) == ""
