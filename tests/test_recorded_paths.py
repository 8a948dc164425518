"""Paths read from an image reach only sdstudio's folders: its model and VAE only inside the
model and VAE folders and the Hugging Face cache (or as a listed model), its source image
and mask only inside sdstudio's inputs folder, LoRA names only in the LoRA folders. The
history is sdstudio's own and is trusted, for ``rerun ID`` and for images it lists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.cli import main
from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.metadata.record import ImageRecord
from sdstudio.engine.models.catalog import ModelEntry
from sdstudio.engine.models.lookup import ModelFinder, ModelOutsideFolders
from sdstudio.engine.networks import Networks
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.request import GenerationRequest, Mode


@pytest.fixture(autouse=True)
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))


@pytest.fixture
def elsewhere(tmp_path: Path, tiny_model: Path) -> Path:
    """A folder outside every model folder with a loadable checkpoint and VAE in it."""
    from sdstudio.testing.checkpoints import save_single_file_checkpoint

    folder = tmp_path / "x"
    save_single_file_checkpoint(tiny_model, folder / "evil.safetensors")
    shutil.copy(
        tiny_model / "vae" / "diffusion_pytorch_model.safetensors", folder / "vae.safetensors"
    )
    return folder


def cli(capsys, *args: str) -> tuple[int, list[dict]]:
    code = main([*args, "--json"])
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def images(events: list[dict]) -> list[str]:
    return [e["path"] for e in events if e["event"] == "image"]


def a1111_image(path: Path, settings: str) -> Path:
    info = PngInfo()
    info.add_text(
        "parameters", f"a cat\nSteps: 2, Sampler: Euler, Seed: 5, Size: 64x64, {settings}"
    )
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    return path


def sdstudio_image(path: Path, request: GenerationRequest) -> Path:
    info = PngInfo()
    info.add_text("sdstudio", ImageRecord(request=request, model_name="tiny-sd").to_json())
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    return path


def test_a1111_model_and_vae_outside_the_folders_are_refused(
    capsys, tmp_path: Path, tiny_model: Path, elsewhere: Path
) -> None:
    evil, vae = elsewhere / "evil.safetensors", elsewhere / "vae.safetensors"
    image = a1111_image(tmp_path / "evil.png", f"Model: {evil}, VAE: {vae}")
    out = ["--config", str(tiny_model), "--out", str(tmp_path / "out")]
    code, events = cli(capsys, "rerun", str(image), *out)
    assert code == 1
    assert events[-1]["message"] == (
        f"The model {evil} is outside sdstudio's model folders and the Hugging Face cache, "
        "so a path read from an image does not load it. Give the model to use with --model PATH."
    )
    code, events = cli(capsys, "rerun", str(image), "--model", str(tiny_model), *out)
    assert code == 1
    message = events[-1]["message"]
    assert message.startswith(f"The VAE '{vae}' named by the image is not in the VAE folders")
    assert message.endswith(
        "Give the VAE to use with --vae PATH, or --vae none for the model's own."
    )
    assert not (tmp_path / "out").exists()
    code, events = cli(capsys, "rerun", str(image), "--model", str(tiny_model), "--vae", "none")
    assert code == 0, events


def test_model_and_vae_inside_the_folders_are_taken(
    capsys, tmp_path: Path, tiny_model: Path, elsewhere: Path
) -> None:
    evil, vae = elsewhere / "evil.safetensors", elsewhere / "vae.safetensors"
    image = a1111_image(tmp_path / "evil.png", f"Model: {evil}, VAE: {vae}")
    assert main(["models", "add-folder", str(elsewhere)]) == 0
    code, events = cli(capsys, "rerun", str(image), "--config", str(tiny_model))
    assert code == 0, events
    [made] = images(events)
    with Image.open(made) as result:
        assert "VAE: vae.safetensors" in result.info["parameters"]


def test_a_vae_named_by_a_path_elsewhere_is_found_by_its_name_in_the_folders(
    capsys, tmp_path: Path, tiny_model: Path, elsewhere: Path
) -> None:
    folder = tmp_path / "vaes"
    folder.mkdir()
    shutil.copy(elsewhere / "vae.safetensors", folder / "vae.safetensors")
    assert main(["models", "add-folder", str(folder)]) == 0
    image = a1111_image(tmp_path / "a.png", f"VAE: {elsewhere / 'vae.safetensors'}")
    code, events = cli(capsys, "rerun", str(image), "--model", str(tiny_model))
    assert code == 0, events
    from sdstudio.engine.metadata import read_image_settings

    assert read_image_settings(images(events)[0]).request.vae == str(folder / "vae.safetensors")


@pytest.mark.parametrize("field", ["init_image", "mask"])
def test_a_source_image_outside_the_inputs_folder_is_not_read(
    capsys, tmp_path: Path, tiny_model: Path, field: str
) -> None:
    inputs = AppPaths.default().inputs_dir
    secret = tmp_path / "private" / "secret.png"
    secret.parent.mkdir()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(secret)
    kept = inputs / "kept.png"
    inputs.mkdir(parents=True)
    Image.new("L", (64, 64), 255).save(kept)
    paths = {"init_image": str(kept), "mask": str(kept), field: str(secret)}
    request = GenerationRequest(
        model=str(tiny_model), prompt="a cat", mode=Mode.INPAINT, steps=2, width=64, height=64,
        strength=0.5, **paths,
    )  # fmt: skip
    image = sdstudio_image(tmp_path / "made.png", request)
    code, events = cli(capsys, "rerun", str(image), "--model", str(tiny_model))
    assert code == 1
    what = field.replace("_", " ")
    assert events[-1]["message"].startswith(
        f"The {what} of made.png is missing: sdstudio re-runs only {what}s kept in its inputs "
        f"folder ({inputs}), and {secret} is not there."
    )
    assert sorted(inputs.iterdir()) == [kept]  # nothing was read or copied
    assert not images(events)
    # A path that starts in the inputs folder but leads out of it.
    shutil.copytree(secret.parent, inputs.parent / "private")
    sneaky = request.replace(**{field: str(inputs / ".." / "private" / "secret.png")})
    sneaky_image = sdstudio_image(tmp_path / "b.png", sneaky)
    code, events = cli(capsys, "rerun", str(sneaky_image), "--model", str(tiny_model))
    assert code == 1 and "is missing" in events[-1]["message"]
    assert sorted(inputs.iterdir()) == [kept]


def test_an_image_the_history_does_not_list_reruns_with_its_kept_source(
    capsys, tmp_path: Path, tiny_model: Path, init_image: Path
) -> None:
    common = ["--prompt", "a boat", "--steps", "4", "--width", "64", "--height", "64"]
    code, events = cli(
        capsys, "generate", "--model", str(tiny_model), *common, "--seed", "4",
        "--init-image", str(init_image), "--strength", "0.5", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, events
    [made] = images(events)
    # The history lists the image: its entry is trusted, the model path included.
    code, events = cli(capsys, "rerun", made, "--out", str(tmp_path / "again"))
    assert code == 0, events
    copy = tmp_path / "shared" / "copy.png"
    copy.parent.mkdir()
    shutil.copy(made, copy)
    code, events = cli(capsys, "rerun", str(copy))
    assert code == 1 and "is outside sdstudio's model folders" in events[-1]["message"]
    code, events = cli(capsys, "rerun", str(copy), "--model", str(tiny_model))
    assert code == 0, events
    with Image.open(made) as first, Image.open(images(events)[0]) as second:
        assert np.array_equal(np.asarray(first), np.asarray(second))


def test_recorded_model_paths_reach_only_the_folders_and_the_catalog(tmp_path: Path) -> None:
    root, outside = tmp_path / "models", tmp_path / "outside"
    for folder in (root, outside):
        folder.mkdir()
    inside = root / "a.safetensors"
    listed, stray = outside / "listed.safetensors", outside / "stray.safetensors"
    for file in (inside, listed, stray):
        file.write_bytes(b"x")
    (root / "link.safetensors").symlink_to(stray)
    entry = ModelEntry("listed", "checkpoint", "safetensors", str(listed), 1, "folder")
    finder = ModelFinder(lambda: [entry], lambda: [root])
    assert finder.find_recorded(str(inside)) == (inside, None)
    assert finder.find_recorded(str(listed)) == (listed, entry)
    assert finder.find_recorded("listed") == (listed, entry)
    for path in (stray, root / "link.safetensors", root / ".." / "outside" / "stray.safetensors"):
        with pytest.raises(ModelOutsideFolders, match="outside sdstudio's model folders"):
            finder.find_recorded(str(path))
        assert finder.find(str(path)) == (stray, None)  # a path the user gives is taken
    with pytest.raises(ModelError, match="does not exist"):
        finder.find_recorded(str(outside / "missing.safetensors"))


@pytest.mark.parametrize("name", ["{x}/evil", "../x/evil", "{x}/evil.safetensors"])
def test_lora_names_are_looked_up_only_in_the_lora_folders(tmp_path: Path, name: str) -> None:
    folder, elsewhere = tmp_path / "loras", tmp_path / "x"
    folder.mkdir()
    elsewhere.mkdir()
    (elsewhere / "evil.safetensors").write_bytes(b"x")
    (folder / "good.safetensors").write_bytes(b"x")
    networks = Networks(lambda: [folder], lambda: [])
    pipe = SimpleNamespace(unet=type("UNet", (), {})(), set_adapters=None, tokenizer=None)
    tag = name.format(x=elsewhere)
    with pytest.raises(InvalidRequest, match=f"LoRA '{tag}' not found in {folder}"):
        networks.apply(pipe, f"a cat <lora:{tag}:1>", "")


def test_the_app_loads_such_settings_without_the_paths(
    window, tmp_path: Path, tiny_model: Path, elsewhere: Path, init_image: Path
) -> None:
    panel = window.panel
    panel.set_known_models([("tiny-sd", str(tiny_model), "sd1", "SD 1.x · diffusers")])
    panel.set_networks([], [], [("kept-vae", str(tmp_path / "kept-vae.safetensors"), "VAE")])
    panel.set_model(str(tiny_model))
    evil, vae = elsewhere / "evil.safetensors", elsewhere / "vae.safetensors"
    request = GenerationRequest(
        model=str(evil), prompt="a cat", mode=Mode.IMG2IMG, init_image=str(init_image),
        vae=str(vae), steps=2, width=64, height=64,
    )  # fmt: skip
    window.offer_settings(sdstudio_image(tmp_path / "evil.png", request))
    window.settings_box.accept()
    assert panel.model_path() == str(tiny_model)
    assert panel.vae.value() == ""
    message = window.statusBar().currentMessage()
    assert f"the model {evil} is outside the model folders, so " in message
    assert f"the VAE {vae} is not in the VAE folders" in message
    assert "the source image they were made from is not loaded" in message
    # A VAE recorded by name is the listed one of that name.
    window.offer_settings(sdstudio_image(tmp_path / "b.png", request.replace(vae="KEPT-VAE.pt")))
    window.settings_box.accept()
    assert panel.vae.value() == str(tmp_path / "kept-vae.safetensors")


def test_the_app_trusts_the_history_entry_of_an_image(
    window, tmp_path: Path, elsewhere: Path
) -> None:
    evil = elsewhere / "evil.safetensors"
    request = GenerationRequest(model=str(evil), prompt="mine", steps=2, width=64, height=64)
    path = sdstudio_image(tmp_path / "mine.png", request)
    window.library.store.add(path, ImageRecord(request=request, model_name="evil"))
    window.offer_settings(path)
    window.settings_box.accept()
    assert window.panel.model_path() == str(evil)
    assert window.statusBar().currentMessage() == "Settings loaded."
