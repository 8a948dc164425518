"""Settings an image holds that sdstudio does not apply are kept and shown, and a re-run
finds a local checkpoint by the model hash an image records when its name is unknown."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.cli import main
from sdstudio.engine.hashing import HashCache
from sdstudio.engine.metadata import read_image_settings
from sdstudio.engine.metadata.a1111 import read_parameters
from sdstudio.engine.metadata.values import build_request
from sdstudio.engine.models.catalog import ModelEntry
from sdstudio.engine.models.lookup import ModelFinder

HIRES = {
    "Denoising strength": "0.45",
    "Hires upscale": "2",
    "Hires steps": "1",
    "Hires upscaler": "Lanczos",
}
"""A hires fix: read into the request, not kept."""
REFINER = {"Refiner": "sd_xl_refiner_1.0 [7440042bbd]", "Refiner switch at": "0.8"}
"""A refiner: read into the request, not kept."""
EXTRAS = {
    "Hires checkpoint": "sd_xl_base_1.0 [31e35c80fc]",
    "ADetailer model": "hand_yolov8n.pt",
    "ADetailer prompt": "a face, smiling",
    "ADetailer confidence": "0.3",
    "VAE hash": "735e4c3a44",
    "Lora hashes": "add_detail: 7c6bad76eb54",
    "TI hashes": "easynegative: c74b4e810b03",
    "Version": "v1.10.1",
}


def a1111_text(model: str = "v1-5-pruned-emaonly", model_hash: str = "6ce0161689") -> str:
    """A1111 text with a hires pass (on another checkpoint), ADetailer and a refiner, keys
    in A1111's order."""
    settings = [
        ("Steps", "2"),
        ("Sampler", "Euler a"),
        ("CFG scale", "7"),
        ("Seed", "5"),
        ("Size", "64x64"),
        ("Model hash", model_hash),
        ("Model", model),
        ("Clip skip", "2"),
        ("Distilled CFG Scale", "2.5"),
        *HIRES.items(),
        *EXTRAS.items(),
        *REFINER.items(),
    ]
    quoted = [(k, json.dumps(v) if any(c in v for c in ",:") else v) for k, v in settings]
    line = ", ".join(f"{key}: {value}" for key, value in quoted)
    return f"a red boat\nNegative prompt: blurry\n{line}"


def png_with(path: Path, parameters: str) -> Path:
    info = PngInfo()
    info.add_text("parameters", parameters)
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    return path


def test_a1111_keys_without_a_request_field_are_kept_with_their_values() -> None:
    parsed = read_parameters(a1111_text())
    assert dict(parsed.extras) == EXTRAS
    assert parsed.model_hash == "6ce0161689"
    assert parsed.request.clip_skip == 2 and parsed.request.steps == 2
    assert parsed.request.distilled_guidance == 2.5 and "distilled_guidance" in parsed.read
    # With a hires pass the denoising strength is the second pass's, not the request's.
    assert "strength" not in parsed.read and parsed.request.strength == 0.75
    hires = parsed.request.hires
    assert hires is not None and "hires" in parsed.read
    assert (hires.scale, hires.steps, hires.upscaler, hires.denoise) == (2, 1, "Lanczos", 0.45)
    refiner = parsed.request.refiner
    assert refiner is not None and (refiner.model, refiner.switch_at) == ("sd_xl_refiner_1.0", 0.8)
    kept = [note for note in parsed.notes if "not applied" in note]
    settings = [key for key in EXTRAS if key != "Version" and "hash" not in key]
    assert kept == [f"Also in the image, kept but not applied by sdstudio: {', '.join(settings)}."]


def test_denoising_strength_without_a_hires_pass_is_the_strength() -> None:
    text = "a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Denoising strength: 0.3"
    parsed = read_parameters(text)
    assert parsed.request.strength == 0.3 and "strength" in parsed.read
    assert dict(parsed.extras) == {} and parsed.model_hash == ""
    assert not any("not applied" in note for note in parsed.notes)


def test_unusable_mapped_values_are_kept_not_dropped() -> None:
    text = (
        "a cat\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Align Your Steps, CFG scale: 7, "
        "Seed: 1, Size: big, Clip skip: 99"
    )
    parsed = read_parameters(text)
    assert parsed.extras["Schedule type"] == "Align Your Steps"
    assert parsed.extras["Size"] == "big" and parsed.extras["Clip skip"] == "99"
    assert parsed.request.clip_skip == 1
    assert "Clip skip '99' is unusable; the default 1 is used." in parsed.notes


def test_other_readers_get_empty_extras_and_hash_by_default() -> None:
    parsed = build_request({"prompt": "a cat", "steps": 4})
    assert dict(parsed.extras) == {} and parsed.model_hash == ""
    kept = build_request({"prompt": "a"}, extras={"cfg_rescale": 0.2, "bad": object()})
    assert dict(kept.extras) == {"cfg_rescale": "0.2"}
    assert kept.notes[-1] == "Also in the image, kept but not applied by sdstudio: cfg_rescale."
    # The version and hashes only describe the image: kept, but not noted as settings.
    described = build_request({"prompt": "a"}, extras={"Version": "v1", "Lora hashes": "a: 1"})
    assert len(described.extras) == 2 and not any("not applied" in n for n in described.notes)


def test_info_shows_the_hash_and_the_settings_not_applied(capsys, tmp_path: Path) -> None:
    image = png_with(tmp_path / "hires.png", a1111_text())
    settings = read_image_settings(image)
    assert dict(settings.extras) == EXTRAS and settings.model_hash == "6ce0161689"

    assert main(["info", str(image), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["request"]["prompt"] == "a red boat" and data["request"]["steps"] == 2
    assert data["model_hash"] == "6ce0161689" and data["extras"] == EXTRAS
    assert sum("not applied" in note for note in data["notes"]) == 1

    assert main(["info", str(image)]) == 0
    out = capsys.readouterr().out
    assert "Model hash: 6ce0161689" in out
    assert "Also in the image (not applied): Hires checkpoint: sd_xl_base_1.0 [31e35c80fc], " in out
    assert "Hires fix: upscale 2 with Lanczos, 1 step, denoising 0.45" in out
    assert "ADetailer prompt: a face, smiling" in out
    assert "Refiner: sd_xl_refiner_1.0, switch at 0.8" in out  # applied, not kept aside


def test_find_by_hash_hashes_each_file_once(tmp_path: Path) -> None:
    files = []
    for name in ("one", "two"):
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(name.encode() * 100)
        files.append(path)
    entries = [
        ModelEntry(p.stem, "checkpoint", "safetensors", str(p), 300, "folder", "sd1", "SD 1.x")
        for p in files
    ]
    refiner = ModelEntry("r", "checkpoint", "safetensors", str(files[1]), 300, "folder")
    refiner = ModelEntry(**{**refiner.to_dict(), "family": "sdxl-refiner", "flags": ()})
    finder = ModelFinder(lambda: entries)
    digest = hashlib.sha256(files[1].read_bytes()).hexdigest()
    cache = HashCache(tmp_path / "hashes.json")
    told: list[list[str]] = []
    hashing = lambda found: told.append([e.name for e in found])  # noqa: E731
    found = finder.find_by_hash(digest[:10].upper(), cache, size=(512, 512), on_hashing=hashing)
    assert found is not None and found.name == "two" and told == [["one", "two"]]
    again = finder.find_by_hash(digest, cache, size=(512, 512), on_hashing=hashing)
    assert again is not None and again.name == "two" and len(told) == 1  # from the cache
    assert finder.find_by_hash("12345678", cache) is None  # the old 8-digit hash
    assert finder.find_by_hash("0" * 10, cache) is None
    # An SD 1.x checkpoint did not make a 4096 px image; a refiner makes none.
    assert finder.find_by_hash(digest, cache, size=(4096, 4096)) is None
    assert ModelFinder(lambda: [refiner]).find_by_hash(digest, cache) is None


@pytest.fixture
def checkpoint_folder(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny single-file checkpoint ``mini_v1`` in a model folder added to sdstudio."""
    from sdstudio.testing.checkpoints import save_single_file_checkpoint

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    save_single_file_checkpoint(tiny_model, folder / "mini_v1.safetensors")
    assert main(["models", "add-folder", str(folder)]) == 0
    return folder / "mini_v1.safetensors"


def rerun(capsys, image: Path, out: Path, config: Path) -> tuple[int, list[dict]]:
    """Re-run an image of :func:`a1111_text` (without its SDXL refiner: the model is SD 1.x)."""
    arguments = ["rerun", str(image), "--out", str(out), "--config", str(config), "--json"]
    code = main([*arguments, "--refiner", "none"])
    lines = capsys.readouterr().out.splitlines()
    return code, [json.loads(line) for line in lines if line.startswith("{")]


@pytest.mark.parametrize("length", [10, 64])
def test_rerun_finds_the_model_by_its_hash_when_the_name_is_unknown(
    capsys, tmp_path: Path, tiny_model: Path, checkpoint_folder: Path, length: int
) -> None:
    capsys.readouterr()
    digest = hashlib.sha256(checkpoint_folder.read_bytes()).hexdigest()[:length]
    image = png_with(tmp_path / "elsewhere.png", a1111_text("my_renamed_model", digest))
    code, events = rerun(capsys, image, tmp_path / "out", tiny_model)
    assert code == 0, events
    notices = [e["message"] for e in events if e["event"] == "notice"]
    expected = (
        f"The model was found by its hash: {digest} is mini_v1 ({checkpoint_folder}). "
        "No model named 'my_renamed_model' was found."
    )
    assert expected in notices
    assert any(n.startswith(f"Looking for the model by its hash {digest}") for n in notices)
    [path] = [e["path"] for e in events if e["event"] == "image"]
    assert read_image_settings(path).model_name == "mini_v1"

    # The file was hashed once: the next re-run compares the remembered hash.
    code, events = rerun(capsys, image, tmp_path / "again", tiny_model)
    assert code == 0, events
    notices = [e["message"] for e in events if e["event"] == "notice"]
    assert expected in notices and not any(n.startswith("Looking for") for n in notices)


def test_rerun_with_an_unknown_name_and_hash_still_asks_for_the_model(
    capsys, tmp_path: Path, tiny_model: Path, checkpoint_folder: Path
) -> None:
    capsys.readouterr()
    image = png_with(tmp_path / "other.png", a1111_text("someone_elses", "0123456789"))
    code, events = rerun(capsys, image, tmp_path / "out", tiny_model)
    assert code == 1
    assert "'someone_elses' recorded in other.png was not found" in events[-1]["message"]
