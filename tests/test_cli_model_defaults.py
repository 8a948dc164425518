"""sdstudio-cli generate: the settings that suit the model for the options not given,
said in one notice, and sizes that cannot be refused before anything runs."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from sdstudio.cli import main
from sdstudio.cli.model_choice import ChosenModel, settings_for
from sdstudio.engine.metadata import read_image_settings


@pytest.fixture(scope="module")
def turbo(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """The tiny model in a folder whose name marks a few-step model."""
    folder = tmp_path_factory.mktemp("turbo") / "tiny-sd-turbo"
    shutil.copytree(tiny_model, folder)
    return folder


def generate(capsys, model: Path, out: Path, *extra: str) -> tuple[int, list[dict]]:
    common = ("--prompt", "a boat", "--seed", "4", "--out", str(out), "--json")
    code = main(["generate", "--model", str(model), *common, *extra])
    lines = capsys.readouterr().out.splitlines()
    return code, [json.loads(line) for line in lines if line.startswith("{")]


def notices(events: list[dict]) -> list[str]:
    return [e["message"] for e in events if e["event"] == "notice"]


def request_of(events: list[dict]):
    [path] = [e["path"] for e in events if e["event"] == "image"]
    return read_image_settings(path).request


def test_few_step_model_gets_its_settings_and_says_so(capsys, turbo: Path, tmp_path: Path) -> None:
    code, events = generate(capsys, turbo, tmp_path, "--width", "64", "--height", "64")
    assert code == 0, events
    request = request_of(events)
    assert (request.steps, request.guidance_scale) == (1, 0.0)
    assert (request.sampler, request.schedule) == ("Euler a", "SGM Uniform")
    assert sum(e["event"] == "step" for e in events) == 1
    assert (
        "Using the settings that suit tiny-sd-turbo: 1 step, CFG 0, Euler a, SGM Uniform "
        "(give --steps, --cfg, --sampler, --schedule to change them)."
    ) in notices(events)


def test_options_given_win_and_only_the_others_are_said(
    capsys, turbo: Path, tmp_path: Path
) -> None:
    given = ("--steps", "3", "--cfg", "1.5", "--sampler", "Euler")
    code, events = generate(capsys, turbo, tmp_path, *given, "--width", "64", "--height", "64")
    assert code == 0, events
    request = request_of(events)
    assert (request.steps, request.guidance_scale, request.sampler) == (3, 1.5, "Euler")
    assert request.schedule == "Automatic"  # plain Euler, as A1111 names it
    assert sum(e["event"] == "step" for e in events) == 3
    assert not [n for n in notices(events) if n.startswith("Using the settings")]
    given = ("--steps", "3", "--cfg", "1.5")
    code, events = generate(capsys, turbo, tmp_path, *given, "--width", "64", "--height", "64")
    assert code == 0, events
    assert (
        "Using the settings that suit tiny-sd-turbo: Euler a, SGM Uniform "
        "(give --sampler, --schedule to change them)."
    ) in notices(events)
    every = ("--steps", "2", "--cfg", "7", "--sampler", "DDIM", "--schedule", "Automatic")
    code, events = generate(capsys, turbo, tmp_path, *every, "--width", "64", "--height", "64")
    assert code == 0, events
    assert not [n for n in notices(events) if n.startswith("Using the settings")]


def test_an_init_image_keeps_its_size(capsys, turbo: Path, tmp_path: Path, init_image) -> None:
    extra = ("--init-image", str(init_image), "--steps", "2", "--strength", "0.5")
    code, events = generate(capsys, turbo, tmp_path, *extra)
    assert code == 0, events
    request = request_of(events)
    assert (request.width, request.height) == (80, 72) and request.guidance_scale == 0.0
    [notice] = [n for n in notices(events) if n.startswith("Using the settings")]
    assert "512" not in notice and "--width" not in notice


def arguments(**given: object) -> argparse.Namespace:
    values: dict[str, object] = dict.fromkeys(
        ("steps", "cfg", "sampler", "schedule", "width", "height")
    )
    return argparse.Namespace(**(values | given))


def test_size_comes_from_the_model_when_not_given(tmp_path: Path) -> None:
    sdxl = ChosenModel("m", tmp_path, "base-xl", "sdxl")
    chosen = settings_for(arguments(), sdxl, with_size=True)
    assert (chosen.width, chosen.height, chosen.steps) == (1024, 1024, 25)
    assert (chosen.sampler, chosen.schedule, chosen.guidance_scale) == ("DPM++ 2M", "Karras", 7.0)
    assert chosen.notice == (
        "Using the settings that suit base-xl: 25 steps, CFG 7, DPM++ 2M, Karras, 1024×1024 "
        "(give --steps, --cfg, --sampler, --schedule, --width/--height to change them)."
    )
    chosen = settings_for(arguments(width=768), sdxl, with_size=True)
    assert (chosen.width, chosen.height) == (768, 1024)
    assert chosen.notice is not None and "height 1024" in chosen.notice
    chosen = settings_for(arguments(), sdxl, with_size=False)
    assert (chosen.width, chosen.height) == (None, None)
    chosen = settings_for(arguments(sampler="DPM++ 2M Karras"), sdxl, with_size=False)
    assert chosen.schedule == "Karras" and "Karras" not in (chosen.notice or "")
    euler_a = settings_for(arguments(sampler="Euler a"), sdxl, with_size=False)
    assert euler_a.schedule == "Automatic"  # Karras does not apply to Euler a


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--width", "0", "Width must be between 64 and 4096 pixels, not 0."),
        ("--height", "0", "Height must be between 64 and 4096 pixels, not 0."),
        ("--width", "-64", "Width must be between 64 and 4096 pixels, not -64."),
        ("--height", "-5", "Height must be between 64 and 4096 pixels, not -5."),
    ],
)
def test_zero_or_negative_size_is_refused(
    capsys, tiny_model: Path, tmp_path: Path, init_image: Path, option: str, value: str, message
) -> None:
    for extra in ((), ("--init-image", str(init_image))):
        code, events = generate(capsys, tiny_model, tmp_path / "out", option, value, *extra)
        assert code == 1
        assert events[-1] == {"event": "error", "message": message}
        assert not (tmp_path / "out").exists()
