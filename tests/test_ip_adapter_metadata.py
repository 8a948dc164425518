"""Image prompts (IP-Adapters) in image metadata: written as A1111's ControlNet extension
writes an IP-Adapter unit, numbered after the control units, and read back apart from
them (also the extension's earlier module names and Forge's); hostile entries kept as
written; cubiq's IPAdapter nodes in a ComfyUI graph; sdstudio's own record; the CLI's
``info`` and ``history show``. Also a control unit's Pixel Perfect."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from metadata_samples_comfyui import node, txt2img
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.cli import main
from sdstudio.engine.control.image_prompts import ImagePrompt
from sdstudio.engine.control.units import ControlMode, ControlResize, ControlUnit
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.history import HistoryStore
from sdstudio.engine.metadata import ImageRecord, png_info, read_image_settings
from sdstudio.engine.metadata.a1111 import format_parameters, read_parameters, split_parameters
from sdstudio.engine.metadata.comfyui import read_comfyui
from sdstudio.engine.metadata.control_names import read_units
from sdstudio.engine.metadata.ip_adapter_names import (
    describe,
    guess_encoder,
    is_image_prompt,
    prompt_text,
    read_prompts,
)
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
    pixel_perfect=True,
)
STYLE = ImagePrompt(
    model="/models/ipadapter/ip-adapter_sd15.safetensors",
    images=("/inputs/style.png", "/inputs/style2.png"),
    weight=0.6,
    start=0.2,
    end=0.9,
)
RAN = {
    "control": [
        {"name": "control_v11p_sd15_canny", "hash": "d14c016b"},
        {"name": "control_v11f1p_sd15_depth"},
    ],
    "ip_adapters": [
        {"name": "ip-adapter_sd15", "hash": "6a3f4ec5", "encoder": "ViT-H", "kind": "plain"}
    ],
}
STYLE_TEXT = (
    "Module: ip-adapter_clip_h, Model: ip-adapter_sd15 [6a3f4ec5], Weight: 0.6, Resize Mode: "
    "Crop and Resize, Processor Res: 512, Guidance Start: 0.2, Guidance End: 0.9, Pixel "
    "Perfect: False, Control Mode: Balanced"
)
SETTINGS = "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512, Model: dreamy"


def guided(
    units: tuple[ControlUnit, ...] = (), prompts: tuple[ImagePrompt, ...] = ()
) -> GenerationRequest:
    return GenerationRequest(
        model="/models/dreamy.safetensors",
        prompt="a cat",
        seed=5,
        control=units,
        ip_adapters=prompts,
    )


def test_image_prompts_are_written_after_the_units_and_read_back_apart() -> None:
    text = format_parameters(guided((CANNY, DEPTH), (STYLE,)), extra=RAN)
    settings = split_parameters(text).settings
    assert [key for key in settings if key.startswith("ControlNet")] == [
        "ControlNet 0",
        "ControlNet 1",
        "ControlNet 2",
    ]
    assert settings["ControlNet 2"] == STYLE_TEXT
    assert (
        "Pixel Perfect: True, Control Mode: ControlNet is more important"
        in (settings["ControlNet 1"])
    )
    parsed = read_parameters(text)
    assert parsed.request.control == () and parsed.request.ip_adapters == ()  # no images
    units = [read.unit("x.png") for read in read_units(parsed.extras)]
    assert units == [dataclasses.replace(u, image="x.png") for u in (CANNY, DEPTH)]
    (read,) = read_prompts(parsed.extras)
    assert read.key == "ControlNet 2" and read.model_hash == "6a3f4ec5"
    assert read.encoder == "ViT-H" and read.module == "ip-adapter_clip_h"
    again = read.prompt(["a.png", "b.png"])
    assert again == dataclasses.replace(STYLE, model="ip-adapter_sd15", images=("a.png", "b.png"))
    assert (
        "ControlNet 2 (IP-Adapter ip-adapter_sd15) needs its reference images, which the "
        "image does not carry; its settings are kept as written, not applied."
    ) in parsed.notes
    assert sum("needs its control image" in note for note in parsed.notes) == 2
    assert "ControlNet" not in format_parameters(guided())


@pytest.mark.parametrize(
    ("model", "encoder_file", "module"),
    [
        ("ip-adapter_sd15.bin", "", "ip-adapter_clip_h"),
        ("/m/ip-adapter-plus_sdxl_vit-h.safetensors", "", "ip-adapter_clip_h"),
        ("ip-adapter_sdxl", "", "ip-adapter_clip_g"),
        ("ip-adapter_sd15_vit-G", "", "ip-adapter_clip_g"),
        ("my-adapter", "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors", "ip-adapter_clip_g"),
        ("ip-adapter_sdxl", "/enc/CLIP-ViT-H-14-laion2B.safetensors", "ip-adapter_clip_h"),
        ("my-adapter", "clip_l.pth", "ip-adapter_clip_l"),
    ],
)
def test_without_a_record_the_model_is_named_and_its_encoder_guessed(
    model: str, encoder_file: str, module: str
) -> None:
    prompt = ImagePrompt(model=model, images=("a.png",), encoder=encoder_file)
    for extra in ({}, {"ip_adapters": "odd"}, {"ip_adapters": [None]}, {"ip_adapters": []}):
        text = split_parameters(format_parameters(guided((), (prompt,)), extra=extra)).settings
        assert text["ControlNet 0"].startswith(f"Module: {module}, Model: ")
    stem = Path(model).name.removesuffix(".bin").removesuffix(".safetensors")
    assert prompt_text(prompt).split(", ")[1] == f"Model: {stem}"
    # A record's encoder wins over the guess; an unknown one does not.
    assert prompt_text(prompt, {"encoder": "ViT-L"}).startswith("Module: ip-adapter_clip_l")
    assert prompt_text(prompt, {"encoder": "?"}).startswith(f"Module: {module}")


@pytest.mark.parametrize(
    ("module", "encoder"),
    [
        ("ip-adapter_clip_h", "ViT-H"),
        ("ip-adapter_clip_g", "ViT-bigG"),
        ("ip-adapter_clip_l", "ViT-L"),
        ("ip-adapter_clip_sd15", "ViT-H"),
        ("ip-adapter_clip_sdxl", "ViT-bigG"),
        ("ip-adapter_clip_sdxl_plus_vith", "ViT-H"),
        ("ip-adapter-auto", ""),
        ("CLIP-ViT-H (IPAdapter)", "ViT-H"),  # Forge
        ("CLIP-ViT-bigG (IPAdapter)", "ViT-bigG"),
    ],
)
def test_every_module_name_of_a1111_and_forge_is_an_image_prompt(module: str, encoder: str) -> None:
    entry = (
        f'"Module: {module}, Model: ip-adapter-plus_sdxl_vit-h [3f2cdc26], Weight: 0.8, '
        "Resize Mode: Crop and Resize, Processor Res: 512, Guidance Start: 0.0, Guidance "
        'End: 1.0, Pixel Perfect: False, Control Mode: Balanced"'
    )
    canny = (
        '"Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, Guidance '
        'Start: 0.0, Guidance End: 1.0"'
    )
    parsed = read_parameters(f"a cat\n{SETTINGS}, ControlNet 0: {entry}, ControlNet 1: {canny}")
    (unit,) = read_units(parsed.extras)
    assert unit.key == "ControlNet 1" and unit.unit("x").preprocessor == "canny"
    (read,) = read_prompts(parsed.extras)
    assert read.encoder == encoder and read.key == "ControlNet 0"
    assert read.prompt("face.png") == ImagePrompt(
        "ip-adapter-plus_sdxl_vit-h", ("face.png",), weight=0.8
    )
    assert read.describe().startswith("ip-adapter-plus_sdxl_vit-h")
    assert "weight 0.8, 0–1" in read.describe()
    assert sum("needs its reference images" in n for n in parsed.notes) == 1
    assert sum("needs its control image" in n for n in parsed.notes) == 1


@pytest.mark.parametrize(
    ("module", "why"),
    [
        ("ip-adapter_face_id", "FaceID"),
        ("ip-adapter_face_id_plus", "FaceID"),
        ("InsightFace+CLIP-H (IPAdapter)", "FaceID"),
        ("ip-adapter_pulid", "PuLID"),
        ("instant_id_face_embedding", "InstantID"),
    ],
)
def test_face_kinds_are_noted_not_read(module: str, why: str) -> None:
    entry = f'"Module: {module}, Model: ip-adapter-faceid-plusv2_sd15 [6e14fc1a], Weight: 1.0"'
    parsed = read_parameters(f"a cat\n{SETTINGS}, ControlNet 0: {entry}")
    assert read_units(parsed.extras) == []  # not a ControlNet either
    (read,) = read_prompts(parsed.extras)
    assert read.problem.startswith(f"{why}: it needs InsightFace")
    assert parsed.extras["ControlNet 0"] == entry.strip('"')
    assert any(
        note.startswith("ControlNet 0 (an IP-Adapter) is kept as written, not read: " + why)
        for note in parsed.notes
    )
    with pytest.raises(InvalidRequest, match="cannot be used"):
        read.prompt("x.png")


def test_settings_an_image_prompt_does_not_take_are_named_in_the_note() -> None:
    entry = (
        '"Module: ip-adapter_clip_h, Model: ip-adapter_sd15, Weight: 1.0, Resize Mode: '
        'Just Resize, Control Mode: My prompt is more important"'
    )
    parsed = read_parameters(f"a cat\n{SETTINGS}, ControlNet 0: {entry}")
    (note,) = [n for n in parsed.notes if n.startswith("ControlNet 0")]
    assert note.endswith(
        "Its control mode 'My prompt is more important', resize mode 'Just Resize' would not apply."
    )


HOSTILE = [
    ("Module: ip-adapter_clip_h, Weight: 1.0", "it names no IP-Adapter model"),
    ("Module: ip-adapter_clip_h, Model: None", "it names no IP-Adapter model"),
    ("Module: ip-adapter_clip_h, Model: a, Weight: lots", "its weight 'lots' is unusable"),
    ("Module: ip-adapter_clip_h, Model: a, Weight: 5", "weight must be between 0 and 2"),
    ("Module: ip-adapter_clip_h, Model: a, Guidance Start: 0.9, Guidance End: 0.1", "before"),
]


@pytest.mark.parametrize(("entry", "problem"), HOSTILE)
def test_an_unusable_entry_is_kept_as_written(entry: str, problem: str) -> None:
    parsed = read_parameters(f'a cat\n{SETTINGS}, ControlNet 3: "{entry}"')
    assert parsed.extras["ControlNet 3"] == entry
    (read,) = read_prompts(parsed.extras)
    assert problem in read.problem and read.describe().startswith("unusable: ")
    assert any("kept as written, not read" in note for note in parsed.notes)
    assert read_units(parsed.extras) == []
    assert not is_image_prompt("Module: ip-adapter_clip_h, Model: a" + " " * 5000)


def test_at_most_four_image_prompts_are_read() -> None:
    entry = '"Module: ip-adapter_clip_h, Model: ip-adapter_sd15, Weight: 1.0"'
    text = ", ".join(f"ControlNet {i}: {entry}" for i in range(6))
    parsed = read_parameters(f"a cat\n{SETTINGS}, {text}")
    assert [r.key for r in read_prompts(parsed.extras)] == [f"ControlNet {i}" for i in range(4)]
    assert "2 more IP-Adapter entries were not read." in parsed.notes


def test_pixel_perfect_is_written_and_read_back() -> None:
    text = format_parameters(guided((CANNY, DEPTH)))
    settings = split_parameters(text).settings
    assert "Pixel Perfect: False" in settings["ControlNet 0"]
    assert "Pixel Perfect: True" in settings["ControlNet 1"]
    first, second = read_units(read_parameters(text).extras)
    assert not first.unit("x").pixel_perfect and second.unit("x").pixel_perfect
    assert second.describe().endswith(", pixel perfect")
    legacy = "preprocessor: canny, model: c, pixel perfect: true"
    assert read_units({"ControlNet": legacy})[0].unit("x").pixel_perfect
    (odd,) = read_units({"ControlNet 0": "Module: canny, Model: c, Pixel Perfect: maybe"})
    assert odd.problem == "its pixel perfect 'maybe' is neither True nor False"


def test_sdstudios_record_keeps_image_prompts_exactly(tmp_path: Path) -> None:
    prompt = dataclasses.replace(STYLE, mask="/inputs/where.png", encoder="clip_h.pth")
    record = ImageRecord(request=guided((CANNY,), (prompt,)), model_name="dreamy", extra=RAN)
    path = tmp_path / "prompted.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info(record))
    settings = read_image_settings(path)
    assert settings.source == "sdstudio" and settings.request.ip_adapters == (prompt,)
    assert (
        split_parameters(settings.parameters)
        .settings["ControlNet 1"]
        .startswith("Module: ip-adapter_clip_h, Model: ip-adapter_sd15 [6a3f4ec5], Weight: 0.6")
    )
    # The parameters text alone (as another tool keeps it) gives the same settings.
    bare = tmp_path / "bare.png"
    info = PngInfo()
    info.add_text("parameters", settings.parameters)
    Image.new("RGB", (8, 8)).save(bare, pnginfo=info)
    (read,) = read_prompts(read_image_settings(bare).extras)
    assert read.prompt(prompt.images, prompt.mask) == dataclasses.replace(
        prompt, model="ip-adapter_sd15", encoder=""
    )


def comfy_graph() -> dict[str, object]:
    """The default graph with a ControlNet, a unified loader's IPAdapter, then an advanced
    one with its own loaders, two images, a mask and settings sdstudio does not take."""
    return txt2img(
        n3=node(
            "KSampler", seed=7, steps=20, cfg=7.0, sampler_name="euler", scheduler="normal",
            denoise=1.0, model=["31", 0], positive=["12", 0], negative=["7", 0],
            latent_image=["5", 0],
        ),
        n10=node("ControlNetLoader", control_net_name="control_v11p_sd15_canny.safetensors"),
        n11=node("LoadImage", image="pose.png"),
        n12=node("ControlNetApply", conditioning=["6", 0], control_net=["10", 0],
                 image=["11", 0], strength=0.5),
        n20=node("IPAdapterUnifiedLoader", model=["4", 0], preset="PLUS (high strength)"),
        n21=node("LoadImage", image="style.png", upload="image"),
        n22=node("IPAdapter", model=["20", 0], ipadapter=["20", 1], image=["21", 0],
                 weight=0.7, start_at=0.0, end_at=0.8, weight_type="standard"),
        n23=node("IPAdapterModelLoader", ipadapter_file="ip-adapter_sdxl.safetensors"),
        n24=node("CLIPVisionLoader", clip_name="CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors"),
        n25=node("LoadImage", image="a.png"),
        n26=node("LoadImage", image="b.png"),
        n27=node("ImageBatch", image1=["25", 0], image2=["28", 0]),
        n28=node("PrepImageForClipVision", image=["26", 0], interpolation="LANCZOS"),
        n29=node("LoadImageMask", image="left.png", channel="alpha"),
        n30=node("IPAdapterAdvanced", model=["22", 0], ipadapter=["23", 0], image=["27", 0],
                 clip_vision=["24", 0], attn_mask=["29", 0], weight=1.2,
                 weight_type="style transfer", combine_embeds="average", start_at=0.1,
                 end_at=1.0, embeds_scaling="K+V"),
        n31=node("IPAdapterFaceID", model=["30", 0], ipadapter=["23", 0], image=["25", 0],
                 weight=1.0),
    )  # fmt: skip


def test_comfyui_ip_adapters_are_kept_with_notes() -> None:
    parsed = read_comfyui({"prompt": json.dumps(comfy_graph())})
    assert parsed.request.prompt == "a castle on a hill"  # read through every IPAdapter node
    assert parsed.model_name == "v1-5-pruned-emaonly.safetensors"
    assert parsed.request.ip_adapters == ()
    assert parsed.extras["ControlNet 0"].startswith("Module: none, Model: control_v11p")
    assert parsed.extras["ControlNet 1"] == (
        "Module: ip-adapter_clip_h, Model: ip-adapter-plus_sd15, Weight: 0.7, "
        "Guidance Start: 0.0, Guidance End: 0.8"
    )
    assert parsed.extras["ControlNet 2"] == (
        "Module: ip-adapter_clip_g, Model: ip-adapter_sdxl.safetensors, Weight: 1.2, "
        "Guidance Start: 0.1, Guidance End: 1.0"
    )
    notes = "\n".join(parsed.notes)
    assert (
        "ControlNet 1 (IP-Adapter ip-adapter-plus_sd15, weight 0.7) needs its reference "
        "images, which the image does not carry (the graph loads 'style.png')"
    ) in notes
    assert "(the graph loads 'a.png', 'b.png')" in notes
    assert "ControlNet 2: its weight type 'style transfer' would not apply" in notes
    assert "ControlNet 2: its combine embeds 'average' would not apply" in notes
    assert "ControlNet 2: its embeds scaling 'K+V' would not apply" in notes
    assert "ControlNet 2 has an attention mask ('left.png')" in notes
    assert "CLIP vision file 'CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors'" in notes
    assert "The IPAdapterFaceID node 31 is an IP-Adapter sdstudio does not read" in notes
    assert "weight type 'standard'" not in notes
    assert [unit.key for unit in read_units(parsed.extras)] == ["ControlNet 0"]
    plus, sdxl = read_prompts(parsed.extras)
    assert plus.prompt("x") == ImagePrompt("ip-adapter-plus_sd15", ("x",), 0.7, end=0.8)
    assert sdxl.encoder == "ViT-bigG" and sdxl.prompt("x").weight == 1.2


def test_comfyui_unified_presets_follow_the_checkpoint_and_odd_ones_are_noted() -> None:
    graph = comfy_graph()
    graph["4"]["inputs"]["ckpt_name"] = "sd_xl_base_1.0.safetensors"  # type: ignore[index]
    parsed = read_comfyui({"prompt": json.dumps(graph)})
    assert "Model: ip-adapter-plus_sdxl_vit-h," in parsed.extras["ControlNet 1"]
    assert parsed.extras["ControlNet 1"].startswith("Module: ip-adapter_clip_h")
    graph["20"]["inputs"]["preset"] = "FULL FACE - SD1.5 only (portraits stronger)"  # type: ignore[index]
    graph["23"]["inputs"]["ipadapter_file"] = ["23", 0]  # type: ignore[index]
    parsed = read_comfyui({"prompt": json.dumps(graph)})
    notes = "\n".join(parsed.notes)
    assert "which has no SDXL model; it was not read" in notes
    assert "The IPAdapterAdvanced node 30 loads no IP-Adapter; it was not read." in notes
    assert [k for k in parsed.extras if k.startswith("ControlNet")] == ["ControlNet 0"]
    graph["22"]["inputs"]["weight"] = "strong"  # type: ignore[index]
    graph["20"]["inputs"]["preset"] = "STANDARD (medium strength)"  # type: ignore[index]
    parsed = read_comfyui({"prompt": json.dumps(graph)})
    (unusable,) = read_prompts(parsed.extras)
    assert unusable.problem == "its weight 'unknown' is unusable"


def test_cli_info_and_history_show_list_image_prompts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    image = tmp_path / "a1111.png"
    info = PngInfo()
    info.add_text("parameters", f'a cat\n{SETTINGS}, ControlNet 0: "{STYLE_TEXT}"')
    Image.new("RGB", (8, 8)).save(image, pnginfo=info)
    assert main(["info", str(image)]) == 0
    out = capsys.readouterr().out
    assert (
        "ControlNet 0: IP-Adapter ip-adapter_sd15, ViT-H, weight 0.6, 0.2–0.9 (not applied: "
        "no reference images)"
    ) in out
    assert "Also in the image (not applied)" not in out
    assert "needs its reference images" in out

    record = ImageRecord(request=guided((CANNY,), (STYLE,)), model_name="dreamy", extra=RAN)
    path = tmp_path / "prompted.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info(record))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "Image prompt 0: ip-adapter_sd15, 2 images, weight 0.6, 0.2–0.9, file "
        "ip-adapter_sd15 [6a3f4ec5]"
    ) in out
    assert "Image prompt 0 images: /inputs/style.png, /inputs/style2.png" in out
    with HistoryStore(AppPaths.default().history_db) as store:
        entry_id = store.add(path, record)
    assert main(["history", "show", str(entry_id)]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    at = next(i for i, line in enumerate(lines) if line.startswith("Image prompts:"))
    assert lines[at].endswith("ip-adapter_sd15, 2 images, weight 0.6, 0.2–0.9")
    assert lines[at + 1 : at + 3] == ["image: /inputs/style.png", "image: /inputs/style2.png"]
    assert any(
        line.startswith("IP-Adapter files:") and "ip-adapter_sd15 (hash 6a3f4ec5)" in line
        for line in lines
    )


def test_describe_and_guess() -> None:
    masked = dataclasses.replace(STYLE, images=("a.png",), mask="m.png")
    assert describe(masked) == "ip-adapter_sd15, 1 image, weight 0.6, 0.2–0.9, masked"
    assert guess_encoder("ip-adapter_sdxl") == "ViT-bigG"
    assert guess_encoder("ip-adapter-plus-face_sd15") == "ViT-H"


def test_an_editor_graphs_ip_adapter_is_read_by_its_widget_order() -> None:
    """An editor graph lists an IPAdapter node's widget values unnamed, in the order of its
    inputs; a node without them is noted, not guessed."""
    workflow = {
        "nodes": [
            {
                "id": 3,
                "type": "KSampler",
                "inputs": [{"name": "model", "link": 1}, {"name": "positive", "link": 2}],
                "widgets_values": [123, "fixed", 25, 6.0, "euler", "normal", 1],
            },
            {"id": 4, "type": "CheckpointLoaderSimple", "widgets_values": ["dream.safetensors"]},
            {"id": 6, "type": "CLIPTextEncode", "widgets_values": ["a harbour"]},
            {"id": 9, "type": "IPAdapterModelLoader", "widgets_values": ["ip-adapter_sd15.bin"]},
            {
                "id": 10,
                "type": "IPAdapterAdvanced",
                "inputs": [{"name": "model", "link": 3}, {"name": "ipadapter", "link": 4}],
                "widgets_values": [0.5, "style transfer", "concat", 0.2, 0.8, "V only"],
            },
        ],
        "links": [[1, 10, 0, 3, 0, "MODEL"], [2, 6, 0, 3, 1, "COND"], [3, 4, 0, 10, 0, "MODEL"],
                  [4, 9, 0, 10, 1, "IPADAPTER"]],
    }  # fmt: skip
    parsed = read_comfyui({"workflow": json.dumps(workflow)})
    assert (parsed.request.prompt, parsed.model_name) == ("a harbour", "dream.safetensors")
    (read,) = read_prompts(parsed.extras)
    assert read.prompt("x") == ImagePrompt("ip-adapter_sd15.bin", ("x",), 0.5, 0.2, 0.8)
    assert "ControlNet 0: its weight type 'style transfer' would not apply" in "\n".join(
        parsed.notes
    )
    workflow["nodes"][4]["widgets_values"] = []  # type: ignore[index]
    parsed = read_comfyui({"workflow": json.dumps(workflow)})
    assert read_prompts(parsed.extras) == []
    assert (
        "The IPAdapterAdvanced node 10 holds no settings (an editor graph does not name them); "
        "it was not read."
    ) in parsed.notes
