"""Hostile metadata: bounded cost (no pixel decode, capped texts), text that can always be
stored and printed, and one clear error type for records no parser should choke on."""

from __future__ import annotations

import io
import json
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hostile_images import (
    apng,
    chunk,
    huge_png,
    itxt_chunk,
    png_with_big_text,
    record_decoding,
    text_chunk,
    with_chunks_before_end,
)
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.cli import main
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.history import HistoryStore
from sdstudio.engine.history.library import rebuild
from sdstudio.engine.metadata import ImageRecord, png_info, read_image_settings
from sdstudio.engine.metadata.a1111 import format_parameters
from sdstudio.engine.metadata.files import MAX_TEXT_BYTES
from sdstudio.engine.request import GenerationRequest

A1111 = "a lighthouse\nSteps: 21, Sampler: Euler a, CFG scale: 6, Seed: 5, Size: 512x768"
HOSTILE = "\ud800 a \x00 cat \x1b[2J\udfff"  # lone surrogates, NUL, a terminal escape


def _png(path: Path, *chunks: bytes) -> Path:
    """An 8x8 PNG with ``chunks`` after its image data."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    path.write_bytes(with_chunks_before_end(buffer.getvalue(), *chunks))
    return path


# --- Cost: metadata never decodes pixels and reads bounded text ------------------------------


def test_a_huge_image_gives_its_settings_without_decoding_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = huge_png(tmp_path / "huge.png", 13000, 13000, after=text_chunk("parameters", A1111))
    decoded = record_decoding(monkeypatch)
    settings = read_image_settings(path)
    assert (settings.source, settings.request.steps, settings.request.seed) == ("a1111", 21, 5)
    assert decoded == []


def test_text_after_the_last_of_400_frames_is_read_without_decoding_any(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = apng(tmp_path / "anim.png", 400, after=text_chunk("parameters", A1111))
    decoded = record_decoding(monkeypatch)
    assert read_image_settings(path).request.steps == 21
    assert decoded == []


def test_a_60_mb_text_chunk_is_left_out_unread(tmp_path: Path) -> None:
    path = png_with_big_text(tmp_path / "big.png", "parameters", 60_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidRequest, match=r"'parameters' text \(60\.0 MB\) is larger than"):
            read_image_settings(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000


def test_an_oversized_text_does_not_hide_the_settings_next_to_it(tmp_path: Path) -> None:
    record = ImageRecord(GenerationRequest(model="m", prompt="kept", seed=3))
    big = text_chunk("parameters", "x" * (MAX_TEXT_BYTES + 1))
    path = _png(tmp_path / "big.png", big, text_chunk("sdstudio", record.to_json()))
    settings = read_image_settings(path)
    assert settings.request.prompt == "kept"
    assert any("larger than" in note for note in settings.notes)


def test_a_compressed_text_bomb_is_left_out(tmp_path: Path) -> None:
    compressor = zlib.compressobj(9)
    bomb = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(64)) + compressor.flush()
    path = _png(tmp_path / "bomb.png", chunk(b"zTXt", b"parameters\0\0" + bomb))
    with pytest.raises(InvalidRequest, match=r"larger than 1\.0 MB decompressed"):
        read_image_settings(path)


# --- Text that cannot be stored or printed -----------------------------------------------------


def _record_png(path: Path, **request: object) -> Path:
    data = {
        "format": "sdstudio",
        "version": 1,
        "request": {
            "model": f"m{HOSTILE}",
            "prompt": HOSTILE,
            "negative_prompt": HOSTILE,
            **request,
        },
        "model_name": HOSTILE,
        "extra": {HOSTILE: [HOSTILE]},
    }
    return _png(path, text_chunk("sdstudio", json.dumps(data)))  # \ud800 escapes


def _a1111_png(path: Path) -> Path:
    text = f'{HOSTILE}\nSteps: 20, Sampler: "\\ud800", Seed: 2, Size: 64x64, Model: "\\udc00x"'
    return _png(path, itxt_chunk("parameters", text.encode("utf-8", "surrogatepass")))


def _comfyui_png(path: Path) -> Path:
    graph = {
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "positive": ["6", 0]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": HOSTILE}},
    }
    return _png(path, text_chunk("prompt", json.dumps(graph)))


def _exif_jpeg(path: Path) -> Path:
    text = f"{HOSTILE}\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 2, Size: 64x64"
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode("utf-16-be", "surrogatepass")
    Image.new("RGB", (64, 64)).save(path, "JPEG", exif=exif)
    return path


SOURCES = {
    "sdstudio": _record_png,
    "a1111": _a1111_png,
    "comfyui": _comfyui_png,
    "exif": _exif_jpeg,
}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_unstorable_characters_are_replaced_at_the_parser(tmp_path: Path, source: str) -> None:
    path = SOURCES[source](tmp_path / "hostile.png")
    settings = read_image_settings(path)
    request = settings.request
    assert "\ufffd a \ufffd cat \ufffd[2J\ufffd" in request.prompt
    # Everything made from the request can be written: JSON, A1111 text, a PNG, UTF-8.
    for text in (request.to_json(), settings.parameters, repr(settings.record)):
        text.encode("utf-8")
    record = settings.record or ImageRecord(request)
    format_parameters(request.with_seed_resolved(), model_name=settings.model_name).encode()
    Image.new("RGB", (8, 8)).save(tmp_path / "again.png", pnginfo=png_info(record))
    assert read_image_settings(tmp_path / "again.png").request.prompt == request.prompt
    assert ImageRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_info_prints_an_image_with_unstorable_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str
) -> None:
    path = SOURCES[source](tmp_path / "hostile.png")
    assert main(["info", str(path)]) == 0
    assert main(["info", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert "\ufffd a \ufffd cat" in out and "\x1b" not in out and "\x00" not in out


def test_rerun_of_such_an_image_writes_and_records_the_new_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_model: Path
) -> None:
    path = _record_png(tmp_path / "hostile.png", steps=2, width=64, height=64)
    out = tmp_path / "out"
    code = main(["rerun", str(path), "--model", str(tiny_model), "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    [written] = out.glob("*.png")
    assert read_image_settings(written).request.prompt.startswith("\ufffd a \ufffd cat")


def test_history_rebuild_indexes_such_an_image(tmp_path: Path) -> None:
    folder = tmp_path / "outputs"
    folder.mkdir()
    _record_png(folder / "hostile.png")
    with HistoryStore(tmp_path / "history.sqlite3") as store:
        report = rebuild(store, [folder])
        assert (report.added, report.skipped) == (1, [])
        [entry] = store.page()
        assert entry.prompt.startswith("\ufffd a \ufffd cat")


# --- Records no parser should choke on -------------------------------------------------------


def _record(request: str = '{"model": "m", "prompt": "p"}', **fields: str) -> str:
    parts = {"format": '"sdstudio"', "version": "1", "request": request, **fields}
    return "{" + ", ".join(f'"{key}": {value}' for key, value in parts.items()) + "}"


def _nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


BAD_RECORDS = {
    "100k-deep list": ("[" * 100_000, "nested too deeply"),
    "deep extra": (_record(extra=_nested(100)), "nested too deeply"),
    "5000-digit seed": (_record('{"model": "m", "prompt": "p", "seed": 9' + "0" * 5000 + "}"),
                        "seed is out of range"),
    "1e400 steps": (_record('{"model": "m", "prompt": "p", "steps": 1e400}'),
                    "steps is out of range"),
    "10**40 width": (_record('{"model": "m", "prompt": "p", "width": 1' + "0" * 40 + "}"),
                     "width is out of range"),
    "-1e400 strength": (_record('{"model": "m", "prompt": "p", "strength": -1e400}'),
                        "strength is out of range"),
    "version as text": (_record(version='"1"'), r"its version '1' is not a version number"),
    "version true": (_record(version="true"), r"its version True is not a version number"),
    "schema as text": (_record('{"schema": "1", "model": "m", "prompt": "p"}'),
                       r"request schema '1' is not a version number"),
    "init image number": (_record('{"model": "m", "prompt": "p", "init_image": 5}'),
                          "init image is not a path"),
    "request as list": (_record("[1]"), "holds no generation request"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_bad_records_give_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    text, message = BAD_RECORDS[case]
    with pytest.raises(InvalidRequest, match=message) as raised:
        ImageRecord.from_json(text)
    assert len(str(raised.value)) < 200 and "update" not in str(raised.value)
    info = PngInfo()
    info.add_text("sdstudio", text, zip=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "bad.png", pnginfo=info)
    assert main(["info", str(tmp_path / "bad.png")]) == 1
    err = capsys.readouterr().err
    assert message.replace("\\", "") in err.replace("\\", "") and "unexpected" not in err


def test_numbers_no_setting_can_hold_are_dropped_from_a_record_and_other_tools(
    tmp_path: Path,
) -> None:
    record = ImageRecord.from_json(_record(duration_s="1" + "0" * 400))
    assert record.duration_s == 0.0
    metadata = '{"positive_prompt": "x", "seed": 9' + "0" * 5000 + ', "steps": 1e400, "width": 512}'
    path = _png(tmp_path / "invoke.png", text_chunk("invokeai_metadata", metadata))
    request = read_image_settings(path).request
    assert (request.prompt, request.seed, request.steps, request.width) == ("x", -1, 20, 512)


def test_a_newer_record_still_asks_for_an_update() -> None:
    with pytest.raises(InvalidRequest, match="Please update sdstudio"):
        ImageRecord.from_json(_record(version="2"))
