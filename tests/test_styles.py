"""Prompt styles in A1111's styles.csv format: reading, applying, finding them in a prompt,
the own file and A1111's, and ``sdstudio-cli styles`` / ``generate --style``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdstudio.cli import generate, main
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.prompting.styles import (
    Style,
    a1111_style_files,
    all_styles,
    apply_styles,
    extract_styles,
    find_styles,
    format_styles,
    import_styles,
    merge_prompt,
    parse_styles,
    read_styles,
    styled_request,
    write_styles,
)
from sdstudio.engine.request import GenerationRequest

A1111_CSV = (
    "\ufeffname,prompt,negative_prompt\r\n"
    '"Cinematic, dark","cinematic still of {prompt}, moody, ""film"" grain","cartoon, '
    'drawing"\r\n'
    "Sharp,highly detailed,blurry\r\n"
    "# Headings,,\r\n"
    'Multi,"line one\nline two",\r\n'
)


def test_reads_quotes_commas_newlines_and_skips_headings() -> None:
    styles = parse_styles(A1111_CSV)
    assert [s.name for s in styles] == ["Cinematic, dark", "Sharp", "Multi"]
    assert styles[0].prompt == 'cinematic still of {prompt}, moody, "film" grain'
    assert styles[0].negative_prompt == "cartoon, drawing"
    assert styles[2].prompt == "line one\nline two"


def test_missing_negative_column_and_a1111s_first_text_column() -> None:
    assert parse_styles("name,prompt\nA,red\n") == [Style("A", "red", "")]
    assert parse_styles("name,text\nB,blue\n") == [Style("B", "blue", "")]
    with pytest.raises(InvalidRequest, match="name and prompt columns"):
        parse_styles("title,words\nA,b\n")


def test_apply_replaces_the_placeholder_or_appends_with_a_comma() -> None:
    assert merge_prompt("art of {prompt}, 4k", "a cat") == "art of a cat, 4k"
    assert merge_prompt("4k", "a cat") == "a cat, 4k"
    assert merge_prompt("4k", "  ") == "4k"
    assert merge_prompt("", "a cat") == "a cat"
    cinematic, sharp, _ = parse_styles(A1111_CSV)
    prompt, negative = apply_styles("a cat", "ugly", [cinematic, sharp])
    assert prompt == 'cinematic still of a cat, moody, "film" grain, highly detailed'
    assert negative == "ugly, cartoon, drawing, blurry"


def test_extract_finds_the_applied_styles_as_a1111_does() -> None:
    styles = parse_styles(A1111_CSV)
    prompt, negative = apply_styles("a cat", "ugly", styles[:2])
    assert extract_styles(prompt, negative, styles) == (
        ("Cinematic, dark", "Sharp"),
        "a cat",
        "ugly",
    )
    assert extract_styles("a dog", "", styles) == ((), "a dog", "")


def test_request_holds_the_applied_text_and_the_names() -> None:
    request = GenerationRequest(model="m", prompt="a cat", negative_prompt="ugly")
    styled = styled_request(request, parse_styles(A1111_CSV)[1:2])
    assert (styled.prompt, styled.negative_prompt) == ("a cat, highly detailed", "ugly, blurry")
    assert styled.styles == ("Sharp",)
    with pytest.raises(InvalidRequest, match=r"Unknown style 'Nope'.*Sharp"):
        find_styles(["Nope"], parse_styles(A1111_CSV))


def test_write_round_trip_and_name_checks(tmp_path: Path) -> None:
    path = tmp_path / "styles.csv"
    styles = [Style("A, b", 'say "hi", {prompt}', "x\ny")]
    write_styles(path, styles)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")  # A1111 reads it too
    assert [(s.name, s.prompt, s.negative_prompt) for s in read_styles(path)] == [
        ("A, b", 'say "hi", {prompt}', "x\ny")
    ]
    assert format_styles([]).startswith("name,prompt,negative_prompt")
    with pytest.raises(InvalidRequest, match="named 'A'"):
        write_styles(path, [Style("A"), Style("A")])
    with pytest.raises(InvalidRequest, match="needs a name"):
        write_styles(path, [Style(" ")])


def test_a1111_install_styles_are_listed_after_the_own(tmp_path: Path) -> None:
    install = tmp_path / "webui"
    (install / "models" / "Stable-diffusion").mkdir(parents=True)
    (install / "styles.csv").write_text(A1111_CSV, encoding="utf-8")
    own = tmp_path / "own.csv"
    write_styles(own, [Style("Sharp", "crisp")])
    files = a1111_style_files([str(tmp_path), str(install)])
    assert files == [install / "styles.csv"]
    found = {s.name: s for s in all_styles(own, files)}
    assert found["Sharp"].prompt == "crisp"  # the own one hides A1111's
    assert found["Multi"].source == str(install / "styles.csv")
    added, replaced = import_styles(install / "styles.csv", own)
    assert (added, replaced) == (2, 1)
    assert [s.name for s in read_styles(own)] == ["Sharp", "Cinematic, dark", "Multi"]


def test_cli_styles_import_list_and_generate_style(
    tmp_path: Path,
    tiny_model: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = tmp_path / "styles.csv"
    source.write_text(A1111_CSV, encoding="utf-8")
    assert main(["styles", "--import-a1111", str(source)]) == 0
    assert "Imported 3 styles" in capsys.readouterr().out
    assert main(["styles", "--list", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["name"] for e in listed if e["event"] == "style"] == [
        "Cinematic, dark",
        "Sharp",
        "Multi",
    ]
    assert AppPaths.default().styles_file.is_file()
    made: list[GenerationRequest] = []
    monkeypatch.setattr(generate, "_run", lambda request, *rest: made.append(request) or 0)
    args = ["generate", "--model", str(tiny_model), "--prompt", "a cat", "--negative", "ugly",
            "--style", "Cinematic, dark", "--style", "Sharp"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr()
    [request] = made
    assert request.prompt == 'cinematic still of a cat, moody, "film" grain, highly detailed'
    assert request.negative_prompt == "ugly, cartoon, drawing, blurry"
    assert request.styles == ("Cinematic, dark", "Sharp")
    assert main(["generate", "--model", str(tiny_model), "--prompt", "x", "--style", "No"]) == 1
    assert "Unknown style 'No'" in capsys.readouterr().err
    assert len(made) == 1
