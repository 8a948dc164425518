"""Wildcards and variants: resolution, its errors, the folders searched, the A1111
``Template`` fields and the ``wildcards`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdstudio.cli import main
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata.a1111 import format_parameters, read_parameters
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.prompting.wildcards import (
    MAX_DEPTH,
    Wildcards,
    has_wildcards,
    resolve,
    wildcard_folders,
)
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.settings import Settings


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "wildcards"
    write(folder, "colors", "# colours\nred\n\n  blue  \ngreen\n")
    write(folder, "animal", "__colors__ cat\n__colors__ dog\n")
    write(folder, "clothes/hats", "beret\nfedora\n")
    write(folder, "clothes/shoes", "boots\n")
    return folder


def test_same_seed_same_text_and_seeds_differ(folder: Path) -> None:
    template = "__animal__, {day|night|dusk}, {2$$a|b|c|d}"
    first = [resolve(template, seed, [folder]) for seed in range(20)]
    again = [Wildcards([folder]).resolve(template, seed) for seed in range(20)]
    assert first == again
    assert len(set(first)) > 5
    # Fixed by random.Random's defined sequence: the same on every run and platform.
    assert resolve("{a|b|c|d|e|f|g|h}", 1) == "c"
    assert resolve("__colors__", 1, [folder]) == "red"


def test_lines_skip_blanks_and_comments_and_nest(folder: Path) -> None:
    assert Wildcards([folder]).lines("colors") == ["red", "blue", "green"]
    seen = {resolve("__animal__", seed, [folder]) for seed in range(40)}
    assert seen == {f"{c} {a}" for c in ("red", "blue", "green") for a in ("cat", "dog")}


def test_sub_folders_globs_and_case(folder: Path) -> None:
    wildcards = Wildcards([folder])
    assert wildcards.names() == ["animal", "clothes/hats", "clothes/shoes", "colors"]
    assert {wildcards.resolve("__clothes/hats__", s) for s in range(20)} == {"beret", "fedora"}
    assert wildcards.lines("clothes/*") == ["beret", "fedora", "boots"]
    assert wildcards.lines("Colors") == ["red", "blue", "green"]


def test_variants_picks_and_weights(folder: Path) -> None:
    picks = [resolve("{2$$a|b|c}", seed) for seed in range(30)]
    assert all(len(p.split(", ")) == 2 and len(set(p.split(", "))) == 2 for p in picks)
    ranged = {len(resolve("{1-3$$ and $$a|b|c}", s).split(" and ")) for s in range(40)}
    assert ranged == {1, 2, 3}
    assert resolve("{5$$a|b}", 3) in ("a, b", "b, a")
    weighted = [resolve("{0.01::rare|100::common}", s) for s in range(50)]
    assert weighted.count("common") >= 48
    assert resolve("{0::never|always}", 7) == "always"
    lines = resolve("{2$$__colors__}", 4, [folder]).split(", ")
    assert len(set(lines)) == 2 and set(lines) <= {"red", "blue", "green"}
    assert {resolve("{x {a|b}|x {a|b}}", s) for s in range(20)} == {"x a", "x b"}


def test_text_without_wildcards_is_untouched() -> None:
    text = "a (cat:1.2), {masterpiece}, [dog|fox], [a:b:0.5], \\{a|b\\}, <lora:x:0.5>, snake_case"
    assert not has_wildcards(text)
    assert resolve(text, 5) == text
    assert has_wildcards("x", "{a|b}") and has_wildcards("__colors__")


def test_unknown_wildcard_names_the_folders(folder: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"__nothing__ is unknown; searched .*wildcards"):
        resolve("a __nothing__", 1, [folder])
    with pytest.raises(InvalidRequest, match="no wildcard folders"):
        resolve("__colors__", 1)


@pytest.mark.parametrize(
    "name", ["../secret", "clothes/../../secret", "/etc/passwd", "a//b", "..\\secret"]
)
def test_paths_outside_the_folders_are_refused(folder: Path, name: str) -> None:
    write(folder.parent, "secret", "password\n")
    with pytest.raises(InvalidRequest, match="not a name inside the wildcard folders"):
        resolve(f"__{name}__", 1, [folder])
    assert resolve("__C:/x__", 1, [folder]) == "__C:/x__"  # not a wildcard name: text


def test_recursion_limit_and_bad_variants(folder: Path) -> None:
    write(folder, "loop", "again __loop__\n")
    with pytest.raises(InvalidRequest, match=f"more than {MAX_DEPTH} levels.*__loop__"):
        resolve("__loop__", 1, [folder])
    write(folder, "empty", "# nothing\n\n")
    with pytest.raises(InvalidRequest, match="__empty__ has no lines"):
        resolve("__empty__", 1, [folder])
    with pytest.raises(InvalidRequest, match="give a number of picks"):
        resolve("{x$$a|b}", 1)
    with pytest.raises(InvalidRequest, match="all weigh 0"):
        resolve("{0::a|0::b}", 1)


def test_folders_of_a1111_comfyui_and_plain_folders(tmp_path: Path) -> None:
    paths = AppPaths.under(tmp_path / "home")
    a1111, comfy, plain = tmp_path / "webui", tmp_path / "ComfyUI", tmp_path / "mine"
    (a1111 / "models" / "Stable-diffusion").mkdir(parents=True)
    (comfy / "models" / "checkpoints").mkdir(parents=True)
    dynamic = a1111 / "extensions" / "sd-dynamic-prompts" / "wildcards"
    impact = comfy / "custom_nodes" / "ComfyUI-Impact-Pack"
    for made in (paths.wildcards_dir, dynamic, impact / "wildcards", impact / "custom_wildcards"):
        made.mkdir(parents=True)
    (plain / "wildcards").mkdir(parents=True)
    write(paths.wildcards_dir, "colors", "own\n")
    write(dynamic, "colors", "a1111\n")
    write(dynamic, "styles", "oil\n")
    write(impact / "custom_wildcards", "poses", "sitting\n")
    settings = Settings(model_folders=(str(a1111), str(comfy), str(plain), str(tmp_path / "gone")))
    folders = wildcard_folders(paths, settings)
    assert folders == [
        paths.wildcards_dir,
        dynamic,
        impact / "wildcards",
        impact / "custom_wildcards",
        plain / "wildcards",
    ]
    wildcards = Wildcards(folders)
    assert wildcards.resolve("__colors__ __styles__ __poses__", 1) == "own oil sitting"


def test_parameters_carry_the_template_and_read_back_to_the_prompt_made_with() -> None:
    request = GenerationRequest(
        model="m", prompt="a __animal__, {day|night}", negative_prompt="{ugly|blurry}", seed=5
    )
    extra = {"wildcards": {"prompt": "a red cat, day", "negative_prompt": "blurry"}}
    text = format_parameters(request, extra=extra)
    assert text.startswith("a red cat, day\nNegative prompt: blurry\n")
    assert 'Template: "a __animal__, {day|night}"' in text
    assert "Negative Template: {ugly|blurry}" in text
    parsed = read_parameters(text)  # the prompts made the image: they re-run it
    assert parsed.request.prompt == "a red cat, day"
    assert parsed.request.negative_prompt == "blurry"
    assert parsed.extras["Template"] == "a __animal__, {day|night}"
    assert parsed.extras["Negative Template"] == "{ugly|blurry}"
    assert any("Template" in n for n in parsed.notes)
    plain = format_parameters(request.replace(prompt="a cat", negative_prompt=""))
    assert "Template" not in plain
    assert read_parameters(plain).request.prompt == "a cat"


def test_cli_lists_and_resolves(paths: AppPaths, capsys: pytest.CaptureFixture[str]) -> None:
    write(paths.wildcards_dir, "colors", "red\nblue\n")
    write(paths.wildcards_dir, "clothes/hats", "beret\n")
    assert main(["wildcards", "--list"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed == ["__clothes/hats__", "__colors__"]
    assert main(["wildcards", "--resolve", "__colors__ {a|b}", "--seed", "3", "--json"]) == 0
    [one] = json.loads(capsys.readouterr().out)
    assert one == {"seed": 3, "prompt": resolve("__colors__ {a|b}", 3, [paths.wildcards_dir])}
    assert main(["wildcards", "--resolve", "{a|b}", "--seed", "3", "--batch", "2"]) == 0
    assert capsys.readouterr().out.split("\n")[:2] == [
        f"3: {resolve('{a|b}', 3)}",
        f"4: {resolve('{a|b}', 4)}",
    ]
    assert main(["wildcards", "--resolve", "__nope__", "--seed", "1"]) != 0
    assert "__nope__ is unknown" in capsys.readouterr().err


def test_info_panel_shows_the_prompt_made_with_and_the_template() -> None:
    from sdstudio.engine.metadata.record import ImageRecord
    from sdstudio.ui.info_panel import ShownImage

    request = GenerationRequest(model="m", prompt="a __animal__", negative_prompt="{x|y}", seed=2)
    extra = {"wildcards": {"prompt": "a red cat", "negative_prompt": "y"}}
    shown = ShownImage("i.png", request, record=ImageRecord(request, extra=extra))
    lines = shown.lines()
    assert lines[:4] == [
        [("Prompt", "a red cat")],
        [("Template", "a __animal__")],
        [("Negative prompt", "y")],
        [("Negative template", "{x|y}")],
    ]
    assert "Template: " in shown.parameters()
    read = read_parameters(format_parameters(request, extra=extra))
    from_text = ShownImage("i.png", read.request, extras=read.extras)
    assert from_text.lines()[:2] == [[("Prompt", "a red cat")], [("Template", "a __animal__")]]
    assert not any(label.startswith("Also") for line in from_text.lines() for label, _ in line)
