"""Models by name: ``org/name`` from the Hugging Face cache and the names the catalog lists,
in the CLI, the history, re-runs and the app; names read from images reach only the catalog."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.cli import main
from sdstudio.engine.errors import ModelError
from sdstudio.engine.metadata import read_image_settings
from sdstudio.engine.metadata.a1111 import split_parameters
from sdstudio.engine.models.catalog import ModelEntry
from sdstudio.engine.models.lookup import ModelFinder, display_name, hf_repo_id

REVISION = "3f" * 20


def hub_snapshot(cache: Path, repo: str, model: Path, revision: str = REVISION) -> Path:
    """A model in a Hugging Face cache, laid out as ``models download`` leaves it."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / revision
    shutil.copytree(model, snapshot)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(revision)
    return snapshot


@pytest.fixture
def hub(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``org/tiny-sd`` in a private Hugging Face cache; returns its snapshot folder."""
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return hub_snapshot(cache, "org/tiny-sd", tiny_model)


def cli(capsys, *args: str) -> tuple[int, list[dict]]:
    code = main([*args, "--json"])
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def history_paths(capsys, model: str) -> list[str]:
    """The images ``history list --model`` shows."""
    assert main(["history", "list", "--model", model, "--json"]) == 0
    return [e["path"] for e in json.loads(capsys.readouterr().out)["entries"]]


def generate(capsys, model: str, out: Path, *extra: str) -> tuple[int, list[dict]]:
    common = ["--prompt", "a red boat", "--steps", "2", "--width", "64", "--height", "64"]
    return cli(
        capsys, "generate", "--model", model, *common, "--seed", "5", "--out", str(out), *extra
    )


def image_paths(events: list[dict]) -> list[str]:
    return [e["path"] for e in events if e["event"] == "image"]


def a1111_model(path: str) -> str:
    with Image.open(path) as image:
        return split_parameters(image.text["parameters"]).settings["Model"]


def pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_display_names_of_cache_snapshots_files_and_folders(tmp_path: Path) -> None:
    snapshot = tmp_path / "hub" / "models--stabilityai--sd-turbo" / "snapshots" / REVISION
    assert hf_repo_id(snapshot) == "stabilityai/sd-turbo"
    assert display_name(snapshot) == "stabilityai/sd-turbo"
    assert hf_repo_id(tmp_path / "hub" / "models--gpt2" / "snapshots" / REVISION) == "gpt2"
    assert hf_repo_id(tmp_path / "snapshots" / REVISION) is None
    checkpoint = tmp_path / "dreamy_v2.safetensors"
    checkpoint.write_bytes(b"x")
    assert display_name(checkpoint) == "dreamy_v2"
    assert display_name(tmp_path / "my-model") == "my-model"


def test_generate_by_hub_name_records_the_name_and_reruns(
    capsys, hub: Path, tmp_path: Path
) -> None:
    code, events = generate(capsys, "org/tiny-sd", tmp_path / "out")
    assert code == 0, events
    [path] = image_paths(events)
    assert a1111_model(path) == "org/tiny-sd"
    settings = read_image_settings(path)
    assert settings.model_name == "org/tiny-sd" and settings.request.model == "org/tiny-sd"
    assert history_paths(capsys, "org/tiny-sd") == [path]
    assert main(["history", "list", "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)["entries"]
    assert entry["model"] == "org/tiny-sd" and REVISION not in json.dumps(entry)

    code, events = cli(capsys, "rerun", path, "--out", str(tmp_path / "again"))
    assert code == 0, events
    assert np.array_equal(pixels(image_paths(events)[0]), pixels(path))
    code, events = cli(capsys, "rerun", str(entry["id"]), "--out", str(tmp_path / "by-id"))
    assert code == 0, events
    assert np.array_equal(pixels(image_paths(events)[0]), pixels(path))


def test_generate_by_snapshot_path_records_the_name(capsys, hub: Path, tmp_path: Path) -> None:
    code, events = generate(capsys, str(hub), tmp_path / "out")
    assert code == 0, events
    [path] = image_paths(events)
    assert a1111_model(path) == "org/tiny-sd"
    assert read_image_settings(path).model_name == "org/tiny-sd"
    notices = [e["message"] for e in events if e["event"] == "notice"]
    assert "Loading org/tiny-sd…" in notices
    # The history filter takes the name or the path.
    for model in ("org/tiny-sd", str(hub)):
        assert history_paths(capsys, model) == [path]
    assert history_paths(capsys, REVISION) == []


def test_rerun_finds_the_model_by_name_after_the_snapshot_changed(
    capsys, hub: Path, tmp_path: Path, tiny_model: Path
) -> None:
    code, events = generate(capsys, str(hub), tmp_path / "out")
    [path] = image_paths(events)
    shutil.rmtree(hub.parents[1])  # the model was updated: a new revision only
    hub_snapshot(tmp_path / "hub", "org/tiny-sd", tiny_model, revision="9a" * 20)
    code, events = cli(capsys, "rerun", path, "--out", str(tmp_path / "again"))
    assert code == 0, events
    notices = [e["message"] for e in events if e["event"] == "notice"]
    assert f"The model {hub} is gone; using org/tiny-sd, which has its name." in notices
    assert np.array_equal(pixels(image_paths(events)[0]), pixels(path))


def test_a1111_image_naming_a_hub_model_reruns(capsys, hub: Path, tmp_path: Path) -> None:
    info = PngInfo()
    info.add_text(
        "parameters",
        "a cat\nSteps: 2, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 64x64, Model: org/tiny-sd",
    )
    image = tmp_path / "a1111.png"
    Image.new("RGB", (64, 64)).save(image, pnginfo=info)
    code, events = cli(capsys, "rerun", str(image), "--out", str(tmp_path / "o"))
    assert code == 0, events
    assert a1111_model(image_paths(events)[0]) == "org/tiny-sd"
    code, events = cli(capsys, "rerun", str(image), "--model", "org/tiny-sd", "--seed", "6")
    assert code == 0, events


def test_a_checkpoint_in_an_added_folder_is_found_by_its_name(
    capsys, tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sdstudio.testing.checkpoints import save_single_file_checkpoint

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    save_single_file_checkpoint(tiny_model, folder / "mini_v1.safetensors")
    assert main(["models", "add-folder", str(folder)]) == 0
    code, events = generate(capsys, "mini_v1", tmp_path / "out", "--config", str(tiny_model))
    assert code == 0, events
    [path] = image_paths(events)
    assert a1111_model(path) == "mini_v1" and read_image_settings(path).request.model == "mini_v1"
    assert history_paths(capsys, "mini_v1") == [path]


def test_unknown_name_says_how_to_see_the_models(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    code, events = generate(capsys, "org/nothing", tmp_path / "out")
    assert code == 1
    message = events[-1]["message"]
    assert "No model named 'org/nothing' was found" in message
    assert '"sdstudio-cli models list"' in message
    assert not (tmp_path / "out").exists()


def test_ambiguous_name_names_both_and_asks_for_the_path(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    twins = []
    for parent in ("first", "second"):
        twin = tmp_path / parent / "twin"
        twin.mkdir(parents=True)
        (twin / "model_index.json").write_text("{}")
        twins.append(twin)
        assert main(["models", "add-folder", str(tmp_path / parent)]) == 0
    code, events = generate(capsys, "twin", tmp_path / "out")
    assert code == 1
    message = events[-1]["message"]
    assert "2 models are named 'twin'" in message and "Give the path" in message
    assert str(twins[0]) in message and str(twins[1]) in message


def test_names_reach_only_the_catalog_never_a_path(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = ModelEntry("org/tiny-sd", "checkpoint", "diffusers", str(tiny_model), 0, "huggingface")
    lora = ModelEntry("tiny-sd", "lora", "safetensors", str(tiny_model), 0, "folder")
    finder = ModelFinder(lambda: [entry, lora])
    shutil.copytree(tiny_model, tmp_path / "here" / "tiny-sd")
    monkeypatch.chdir(tmp_path / "here")
    assert finder("org/tiny-sd") == tiny_model.resolve()
    assert finder("ORG/Tiny-SD") == tiny_model.resolve()
    assert finder(str(tiny_model)) == tiny_model.resolve()
    for name in ("tiny-sd", "./tiny-sd", "../here/tiny-sd"):  # exist here, but not by name
        with pytest.raises(ModelError, match="No model named"):
            finder(name)
    with pytest.raises(ModelError, match="does not exist"):
        finder(str(tmp_path / "missing"))


def test_rerun_of_an_image_naming_a_local_folder_is_refused(
    capsys, tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    shutil.copytree(tiny_model, tmp_path / "tiny-sd")
    monkeypatch.chdir(tmp_path)
    info = PngInfo()
    info.add_text("parameters", "a cat\nSteps: 2, Seed: 5, Size: 64x64, Model: tiny-sd")
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png", pnginfo=info)
    code, events = cli(capsys, "rerun", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"))
    assert code == 1
    assert "recorded in a.png was not found; give it with --model PATH" in events[-1]["message"]


def test_app_loads_and_runs_a_model_named_by_an_image(
    qtbot, window, hub: Path, tmp_path: Path
) -> None:
    from sdstudio.engine.request import GenerationRequest

    panel = window.panel
    panel.set_known_models([("org/tiny-sd", str(hub), "sd1", "SD 1.x · diffusers")])
    panel.set_model(str(tmp_path / "chosen-before"))
    request = GenerationRequest(
        model="org/tiny-sd", prompt="a boat", steps=2, width=64, height=64, seed=3
    )
    window.pending_settings = request
    window.load_pending_settings()
    assert panel.model_path() == str(hub)
    # A name nothing lists keeps the model chosen now; a gone path falls back to the name.
    window.pending_settings = request.replace(model="../../elsewhere/model")
    window.load_pending_settings()
    assert panel.model_path() == str(hub)
    window.pending_settings = request.replace(model=str(tmp_path / "gone" / REVISION))
    window.pending_model_name = "org/tiny-sd"
    panel.set_model(str(tmp_path / "chosen-before"))
    window.load_pending_settings()
    assert panel.model_path() == str(hub)

    # A history entry whose request names the model re-runs in the app.
    with qtbot.waitSignal(window.controller.finished, timeout=60_000) as finished:
        window.controller.submit(request)
    [written] = finished.args[1]
    assert read_image_settings(written).model_name == "org/tiny-sd"
    assert "org/tiny-sd" in window.library.store.models()
