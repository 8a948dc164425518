"""Control units in image metadata: A1111's ControlNet extension's ``ControlNet N`` entries
written and read back (and its earlier format read), hostile entries kept as written,
ControlNets in a ComfyUI graph, sdstudio's own record, the CLI's ``info`` and ``history
show``, and the info panel's lines."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from metadata_samples_comfyui import node, txt2img
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.cli import main
from sdstudio.engine.control.units import ControlMode, ControlResize, ControlUnit
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.history import HistoryStore
from sdstudio.engine.metadata import ImageRecord, png_info, read_image_settings
from sdstudio.engine.metadata.a1111 import format_parameters, read_parameters, split_parameters
from sdstudio.engine.metadata.comfyui import read_comfyui
from sdstudio.engine.metadata.control_names import describe, read_units
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.request import GenerationRequest

CANNY = ControlUnit(
    model="control_v11p_sd15_canny",
    image="/inputs/edges.png",
    preprocessor="canny",
    threshold_a=100.0,
    threshold_b=200.0,
)
DEPTH = ControlUnit(
    model="control_v11f1p_sd15_depth",
    image="/inputs/room.png",
    preprocessor="depth_midas",
    weight=0.65,
    start=0.1,
    end=0.85,
    mode=ControlMode.CONTROL,
    resize=ControlResize.FILL,
    resolution=768,
)
RAN = {
    "control": [
        {"name": "control_v11p_sd15_canny", "hash": "d14c016b"},
        {"name": "control_v11f1p_sd15_depth.safetensors"},
    ]
}
"""The record's entries for the ControlNet files that ran (the second without a hash)."""
CANNY_TEXT = (
    "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, Resize Mode: "
    "Crop and Resize, Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, Guidance "
    "Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced"
)
"""What the extension writes for a canny unit with its defaults."""
SETTINGS = "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512, Model: dreamy"


def guided(*units: ControlUnit) -> GenerationRequest:
    return GenerationRequest(
        model="/models/dreamy.safetensors", prompt="a cat", seed=5, control=units
    )


def without_image(unit: ControlUnit) -> ControlUnit:
    return dataclasses.replace(unit, image="chosen.png")


def test_a_unit_is_written_as_the_extension_writes_it() -> None:
    text = format_parameters(guided(CANNY, DEPTH), extra=RAN)
    settings = split_parameters(text).settings
    assert settings["ControlNet 0"] == CANNY_TEXT
    assert f'ControlNet 0: "{CANNY_TEXT}"' in text  # quoted: the value holds commas
    assert settings["ControlNet 1"].startswith(
        "Module: depth_midas, Model: control_v11f1p_sd15_depth, Weight: 0.65, "
    )
    assert "Threshold" not in settings["ControlNet 1"]  # no thresholds: A1111 leaves them out
    assert "Control Mode: ControlNet is more important" in settings["ControlNet 1"]
    assert "ControlNet" not in format_parameters(guided())


@pytest.mark.parametrize("mode", list(ControlMode))
@pytest.mark.parametrize("resize", list(ControlResize))
def test_every_mode_and_resize_reads_back(mode: ControlMode, resize: ControlResize) -> None:
    unit = dataclasses.replace(DEPTH, mode=mode, resize=resize, threshold_a=0.4)
    parsed = read_parameters(format_parameters(guided(CANNY, unit)))
    read = read_units(parsed.extras)
    assert [r.unit("chosen.png") for r in read] == [without_image(CANNY), without_image(unit)]
    assert parsed.request.control == ()  # never applied: the text has no control image
    assert (
        parsed.extras["ControlNet 1"]
        == split_parameters(format_parameters(guided(CANNY, unit))).settings["ControlNet 1"]
    )


def test_an_a1111_text_gives_a_note_per_unit_and_its_settings() -> None:
    text = f'a cat\n{SETTINGS}, ControlNet 0: "{CANNY_TEXT}", Version: v1.10.1'
    parsed = read_parameters(text)
    assert parsed.extras["ControlNet 0"] == CANNY_TEXT
    assert (
        "ControlNet 0 (canny, control_v11p_sd15_canny) needs its control image, which the "
        "image does not carry; its settings are kept as written, not applied."
    ) in parsed.notes
    (read,) = read_units(parsed.extras)
    assert read.model_hash == "d14c016b"
    assert read.unit("edges.png") == dataclasses.replace(CANNY, image="edges.png")
    assert read.describe() == "control_v11p_sd15_canny, canny, weight 1, 0–1, balanced"


def test_the_extensions_earlier_format_is_read() -> None:
    legacy = (
        "preprocessor: canny, model: control_sd15_canny [fef5e48e], weight: 0.8, "
        "starting/ending: (0.1, 0.9), resize mode: Scale to Fit (Inner Fit), pixel perfect: "
        "False, control mode: My prompt is more important, preprocessor params: (448, 64, 128)"
    )
    parsed = read_parameters(
        f'a cat\n{SETTINGS}, ControlNet: "{legacy}", ControlNet 1: "{legacy.lower()}"'
    )
    first, second = read_units(parsed.extras)
    expected = ControlUnit(
        model="control_sd15_canny", image="x.png", preprocessor="canny", weight=0.8,
        start=0.1, end=0.9, mode=ControlMode.PROMPT, resize=ControlResize.CROP,
        resolution=448, threshold_a=64.0, threshold_b=128.0,
    )  # fmt: skip
    assert first.key == "ControlNet" and first.unit("x.png") == expected
    assert second.unit("x.png") == expected
    enums = legacy.replace("Scale to Fit (Inner Fit)", "ResizeMode.INNER_FIT")
    enums = enums.replace("My prompt is more important", "ControlMode.PROMPT")
    assert read_units({"ControlNet": enums})[0].unit("x.png") == expected
    assert sum("needs its control image" in note for note in parsed.notes) == 2
    # The extension's "-1" (no slider) and an unset processor resolution take the defaults.
    minus = read_units(
        {"ControlNet 0": "Module: tile, Model: t, Processor Res: -1, Threshold A: -1"}
    )
    assert minus[0].unit("x") == ControlUnit("t", "x", "tile")


def test_values_with_commas_quotes_and_colons_round_trip() -> None:
    odd = ControlUnit(
        model='/cn/my "best", control: (v2).safetensors',
        image="/inputs/a.png",
        preprocessor="lineart, anime",
        control_type='union: "canny"',
        weight=1.25,
    )
    text = format_parameters(guided(odd, CANNY))
    parsed = read_parameters(text)
    assert [r.unit("chosen.png") for r in read_units(parsed.extras)] == [
        dataclasses.replace(odd, image="chosen.png", model='my "best", control: (v2)'),
        without_image(CANNY),
    ]
    assert parsed.request.prompt == "a cat"


HOSTILE = [
    "",
    "garbage without any pair",
    "Module: canny, Model: None",
    "Module: canny",
    "Module: canny, Model: m, Weight: nan",
    "Module: canny, Model: m, Weight: 5",
    "Module: canny, Model: m, Weight: one",
    "Module: canny, Model: m, Guidance Start: 0.9, Guidance End: 0.1",
    "Module: canny, Model: m, Control Mode: Sideways",
    "Module: canny, Model: m, Resize Mode: Stretch",
    "Module: canny, Model: m, Processor Res: 1e400",
    "Module: canny, Model: m, Processor Res: 12.5",
    "Module: canny, Model: m, Threshold A: 1e9",
    'Module: canny, Model: "unterminated, Weight: 1',
    "Module: canny, Model: m, starting/ending: (0.5, 0.2)",
    "Module: canny, Model: m" + ", Weight: 1" * 2000,
    "Module: \x00\ud800, Model: \u202e",
]


READABLE = {
    'Module: canny, Model: "unterminated, Weight: 1': '"unterminated',
    "Module: \x00\ud800, Model: \u202e": "\u202e",
}


@pytest.mark.parametrize("entry", HOSTILE)
def test_a_garbled_entry_never_crashes_and_is_kept_as_written(entry: str) -> None:
    parsed = read_parameters(f"a cat\n{SETTINGS}, ControlNet 0: {json.dumps(entry)}")
    assert parsed.request.control == ()
    kept = parsed.extras.get("ControlNet 0", "")
    assert kept.replace("\ufffd", "") in entry.replace("\x00", "").replace("\ud800", "")
    (read,) = read_units({"ControlNet 0": entry})
    if entry in READABLE:  # only its names are odd: read as written
        assert read.unit("x").model == READABLE[entry]
        return
    assert read.problem
    with pytest.raises(InvalidRequest, match="ControlNet 0 cannot be used"):
        read.unit("x.png")
    if kept:
        assert any(
            note.startswith("ControlNet 0 is kept as written, not read:") for note in parsed.notes
        )


def test_hostile_entries_in_an_image_file_are_read_without_error(tmp_path: Path) -> None:
    info = PngInfo()
    entries = ", ".join(f"ControlNet {i}: {json.dumps(text)}" for i, text in enumerate(HOSTILE))
    info.add_text("parameters", f"a cat\n{SETTINGS}, ControlNet 99: x, {entries}")
    path = tmp_path / "hostile.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    settings = read_image_settings(path)
    assert settings.source == "a1111"
    assert len(read_units(settings.extras)) == 8  # at most eight units


def test_a_record_with_two_units_round_trips_exactly(tmp_path: Path) -> None:
    request = guided(CANNY, DEPTH)
    record = ImageRecord(request=request, model_name="dreamy", extra=RAN, app_version="1.0")
    path = tmp_path / "guided.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info(record))
    settings = read_image_settings(path)
    assert settings.source == "sdstudio"
    assert settings.request == request
    assert settings.record is not None and settings.record.extra == RAN
    entries = split_parameters(settings.parameters).settings
    assert entries["ControlNet 0"] == CANNY_TEXT
    assert "ControlNet 1" in entries and "ControlNet 2" not in entries
    read = read_units(read_parameters(settings.parameters).extras)
    assert [r.unit("chosen.png") for r in read] == [without_image(CANNY), without_image(DEPTH)]


@pytest.mark.parametrize("extra", [{}, {"control": "odd"}, {"control": [1, None]}, {"control": []}])
def test_a_record_without_the_files_names_the_units_own_models(extra: dict[str, object]) -> None:
    unit = dataclasses.replace(CANNY, model="/models/cn/control_v11p_sd15_canny.safetensors")
    entry = split_parameters(format_parameters(guided(unit), extra=extra)).settings["ControlNet 0"]
    assert entry.startswith("Module: canny, Model: control_v11p_sd15_canny, Weight: 1.0")


def comfy_graph() -> dict[str, object]:
    """The default graph guided by a canny ControlNet and, after it, a plain one."""
    return txt2img(
        n3=node(
            "KSampler", seed=7, steps=20, cfg=7.0, sampler_name="euler", scheduler="normal",
            denoise=1.0, model=["4", 0], positive=["12", 0], negative=["12", 1],
            latent_image=["5", 0],
        ),
        n10=node("ControlNetLoader", control_net_name="control_v11p_sd15_canny.safetensors"),
        n11=node("LoadImage", image="pose.png", upload="image"),
        n13=node("Canny", image=["11", 0], low_threshold=0.4, high_threshold=0.8),
        n12=node(
            "ControlNetApplyAdvanced", positive=["14", 0], negative=["7", 0],
            control_net=["10", 0], image=["13", 0], strength=0.8, start_percent=0.0,
            end_percent=0.75,
        ),
        n15=node("ControlNetLoader", control_net_name="t2i_sketch.pth"),
        n16=node("LoadImage", image="sketch.png"),
        n14=node("ControlNetApply", conditioning=["6", 0], control_net=["15", 0],
                 image=["16", 0], strength=0.5),
        n20=node("ControlNetApply", conditioning=["6", 0], control_net=["99", 0], strength=1),
    )  # fmt: skip


def test_comfyui_controlnets_are_named_with_their_strength_and_image() -> None:
    parsed = read_comfyui({"prompt": json.dumps(comfy_graph())})
    assert parsed.request.prompt == "a castle on a hill"  # read through both ControlNets
    assert parsed.request.negative_prompt == "blurry"
    assert parsed.request.control == ()
    assert parsed.extras["ControlNet 0"] == (
        "Module: canny, Model: control_v11p_sd15_canny.safetensors, Weight: 0.8, "
        "Guidance Start: 0.0, Guidance End: 0.75"
    )
    assert parsed.extras["ControlNet 1"] == "Module: none, Model: t2i_sketch.pth, Weight: 0.5"
    assert "ControlNet 2" not in parsed.extras
    notes = "\n".join(parsed.notes)
    assert (
        "ControlNet 0 (control_v11p_sd15_canny.safetensors, weight 0.8) needs its control "
        "image, which the image does not carry (the graph loads it from 'pose.png')"
    ) in notes
    assert "'sketch.png'" in notes
    assert "The ControlNet node 20 loads no ControlNet; it was not read." in notes
    first, second = read_units(parsed.extras)
    assert first.unit("x").end == 0.75 and first.unit("x").preprocessor == "canny"
    assert second.unit("x") == ControlUnit("t2i_sketch.pth", "x", weight=0.5)


def test_a_hostile_comfyui_controlnet_is_not_read() -> None:
    graph = comfy_graph()
    graph["12"]["inputs"] |= {"strength": "strong", "image": ["12", 0]}  # type: ignore[index]
    parsed = read_comfyui({"prompt": json.dumps(graph)})
    assert parsed.extras["ControlNet 0"].endswith("Weight: unknown, Guidance Start: 0.0, "
                                                  "Guidance End: 0.75")  # fmt: skip
    assert "weight unknown" in "\n".join(parsed.notes)
    unreadable, _sketch = read_units(parsed.extras)
    assert unreadable.problem == "its weight 'unknown' is unusable"
    graph["10"]["inputs"]["control_net_name"] = ["10", 0]  # type: ignore[index]
    graph["15"]["inputs"]["control_net_name"] = 'a, "b"'  # type: ignore[index]
    parsed = read_comfyui({"prompt": json.dumps(graph)})
    assert parsed.extras == {"ControlNet 0": "Module: none, Model: a  'b', Weight: 0.5"}
    assert "The ControlNet node 12 loads no ControlNet; it was not read." in parsed.notes
    assert read_units(parsed.extras)[0].unit("x").model == "a  'b'"


def test_cli_info_and_history_show_give_one_line_a_unit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    image = tmp_path / "a1111.png"
    info = PngInfo()
    info.add_text("parameters", f'a cat\n{SETTINGS}, ControlNet 0: "{CANNY_TEXT}"')
    Image.new("RGB", (8, 8)).save(image, pnginfo=info)
    assert main(["info", str(image)]) == 0
    out = capsys.readouterr().out
    assert (
        "ControlNet 0: control_v11p_sd15_canny, canny, weight 1, 0–1, balanced "
        "(not applied: no control image)"
    ) in out
    assert "Also in the image (not applied)" not in out

    record = ImageRecord(request=guided(CANNY, DEPTH), model_name="dreamy", extra=RAN)
    path = tmp_path / "guided.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info(record))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "ControlNet 1: control_v11f1p_sd15_depth, depth_midas, weight 0.65, 0.1–0.85, control first"
        in out
    )
    with HistoryStore(AppPaths.default().history_db) as store:
        entry_id = store.add(path, record)
    assert main(["history", "show", str(entry_id)]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    at = next(i for i, line in enumerate(lines) if line.startswith("ControlNet:"))
    assert lines[at].split(":", 1)[1].strip() == describe(CANNY)
    assert lines[at + 1] == describe(DEPTH)
    files = next(line for line in lines if line.startswith("ControlNet files:"))
    assert files.endswith(
        "control_v11p_sd15_canny (hash d14c016b), control_v11f1p_sd15_depth.safetensors"
    )


def test_the_info_panel_shows_each_unit(tmp_path: Path) -> None:
    from sdstudio.ui.info_panel import ShownImage

    record = ImageRecord(request=guided(CANNY, DEPTH), model_name="dreamy", extra=RAN)
    path = tmp_path / "guided.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info(record))
    lines = ShownImage.of_file(path).lines()
    assert [
        ("ControlNet 0", describe(CANNY)),
        ("File", "control_v11p_sd15_canny [d14c016b]"),
    ] in lines
    assert [("ControlNet 1", describe(DEPTH)), ("File", "control_v11f1p_sd15_depth")] in lines
    plain = tmp_path / "a1111.png"
    info = PngInfo()
    info.add_text("parameters", f'a cat\n{SETTINGS}, ControlNet 0: "{CANNY_TEXT}", ControlNet 1: x')
    Image.new("RGB", (8, 8)).save(plain, pnginfo=info)
    lines = ShownImage.of_file(plain).lines()
    assert [("ControlNet 0", describe(CANNY)), ("Not applied", "no control image")] in lines
    also = [value for line in lines for key, value in line if key.startswith("Also in the image")]
    assert also == ["ControlNet 1: x"]  # the unreadable one stays with the extras
