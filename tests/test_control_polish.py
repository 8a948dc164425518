"""Image prompts and control around the edges: the info panel lists a record's image
prompts and another tool's IP-Adapters; a ComfyUI editor graph (``workflow`` only) reads
its ControlNet and IPAdapter nodes as the API graph does; the annotator download from the
CLI, recorded so that the model manager deletes it; the model manager's kind labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fake_hub import REPO
from metadata_samples_comfyui import node, txt2img
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.engine.control.annotators import Annotators, annotator_folders
from sdstudio.engine.control.depth_estimation import find_depth_model
from sdstudio.engine.control.image_prompts import ImagePrompt
from sdstudio.engine.control.units import ControlUnit
from sdstudio.engine.metadata import ImageRecord, control_names, ip_adapter_names, png_info
from sdstudio.engine.metadata.comfyui import read_comfyui
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.settings import Settings, load_settings

STYLE = ImagePrompt(
    model="/models/ipadapter/ip-adapter_sd15.safetensors",
    images=("/inputs/style.png", "/inputs/style2.png"),
    weight=0.6,
    start=0.2,
    end=0.9,
)
FACE = ImagePrompt(
    model="ip-adapter-plus-face_sd15", images=("/inputs/face.png",), mask="/inputs/left.png"
)
CANNY = ControlUnit(
    model="control_v11p_sd15_canny", image="/inputs/edges.png", preprocessor="canny"
)
RAN = {
    "control": [{"name": "control_v11p_sd15_canny", "hash": "d14c016b"}],
    "ip_adapters": [
        {"name": "ip-adapter_sd15", "hash": "6a3f4ec5", "encoder": "ViT-H", "kind": "plain"}
    ],
}
SETTINGS = "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512, Model: dreamy"
STYLE_TEXT = (
    "Module: ip-adapter_clip_h, Model: ip-adapter_sd15 [6a3f4ec5], Weight: 0.6, Resize Mode: "
    "Crop and Resize, Processor Res: 512, Guidance Start: 0.2, Guidance End: 0.9, Pixel "
    "Perfect: False, Control Mode: Balanced"
)


def test_the_info_panel_lists_a_records_image_prompts(tmp_path: Path) -> None:
    from sdstudio.ui.info_panel import ShownImage

    request = GenerationRequest(
        model="/models/dreamy.safetensors",
        prompt="a cat",
        seed=5,
        control=(CANNY,),
        ip_adapters=(STYLE, FACE),
    )
    record = ImageRecord(request=request, model_name="dreamy", extra=RAN)
    path = tmp_path / "prompted.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info(record))
    lines = ShownImage.of_file(path).lines()
    assert [
        ("ControlNet 0", control_names.describe(CANNY)),
        ("File", "control_v11p_sd15_canny [d14c016b]"),
    ] in lines
    assert [
        ("Image prompt 0", "ip-adapter_sd15, 2 images, weight 0.6, 0.2–0.9"),
        ("Images", "style.png, style2.png"),
        ("File", "ip-adapter_sd15 [6a3f4ec5]"),
    ] in lines
    # The second ran too, but the record names no file for it: none is guessed.
    assert [
        ("Image prompt 1", "ip-adapter-plus-face_sd15, 1 image, weight 1, 0–1, masked"),
        ("Images", "face.png"),
        ("Mask", "left.png"),
    ] in lines
    keys = [key for line in lines for key, _value in line]
    assert "Also in the image, not applied" not in keys  # its own entries are not extras


def test_the_info_panel_shows_another_tools_ip_adapters_as_not_applied(tmp_path: Path) -> None:
    from sdstudio.ui.info_panel import ShownImage

    face_id = "Module: ip-adapter_face_id, Model: ip-adapter-faceid_sd15 [0a1b2c3d], Weight: 1"
    text = f'a cat\n{SETTINGS}, ControlNet 0: "{STYLE_TEXT}", ControlNet 1: "{face_id}"'
    info = PngInfo()
    info.add_text("parameters", text)
    path = tmp_path / "a1111.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    shown = ShownImage.of_file(path)
    assert shown.request is not None and shown.request.ip_adapters == ()
    lines = shown.lines()
    assert [
        ("ControlNet 0", "IP-Adapter ip-adapter_sd15, ViT-H, weight 0.6, 0.2–0.9"),
        ("Not applied", "no reference images"),
    ] in lines
    keys = [key for line in lines for key, _value in line]
    assert "ControlNet 1" not in keys and not any(k.startswith("Image prompt") for k in keys)
    also = [value for line in lines for key, value in line if key.startswith("Also in the image")]
    assert also == [f"ControlNet 1: {face_id}"]  # FaceID cannot run: kept as written


# The widgets of each node as ComfyUI's editor lists them in ``widgets_values``, in the
# order of its INPUT_TYPES (comfyanonymous/ComfyUI nodes.py, cubiq/ComfyUI_IPAdapter_plus
# IPAdapterPlus.py); a name in brackets is the editor's own value ("control after
# generate", the upload button), which the API graph does not hold.
EDITOR_WIDGETS: dict[str, tuple[str, ...]] = {
    "KSampler": ("seed", "[control]", "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "CheckpointLoaderSimple": ("ckpt_name",),
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "CLIPTextEncode": ("text",),
    "LoadImage": ("image", "[upload]"),
    "LoadImageMask": ("image", "channel", "[upload]"),
    "ControlNetLoader": ("control_net_name",),
    "ControlNetApply": ("strength",),
    "ControlNetApplyAdvanced": ("strength", "start_percent", "end_percent"),
    "Canny": ("low_threshold", "high_threshold"),
    "CLIPVisionLoader": ("clip_name",),
    "IPAdapterUnifiedLoader": ("preset",),
    "IPAdapterModelLoader": ("ipadapter_file",),
    "IPAdapter": ("weight", "start_at", "end_at", "weight_type"),
    "IPAdapterAdvanced": (
        "weight", "weight_type", "combine_embeds", "start_at", "end_at", "embeds_scaling",
    ),
    "PrepImageForClipVision": ("interpolation", "crop_position", "sharpening"),
}  # fmt: skip
EDITOR_DEFAULTS = {
    "[control]": "fixed",
    "[upload]": "image",
    "crop_position": "center",
    "sharpening": 0.0,
}


def editor_graph(graph: dict[str, Any]) -> dict[str, Any]:
    """The editor graph (``workflow``) ComfyUI saves for an API graph: links listed apart,
    widget values by position only."""
    nodes: list[dict[str, Any]] = []
    links: list[list[object]] = []
    for node_id, entry in graph.items():
        inputs = entry["inputs"]
        slots = []
        for name, value in inputs.items():
            if isinstance(value, list):
                links.append([len(links) + 1, int(value[0]), value[1], int(node_id), 0, "*"])
                slots.append({"name": name, "link": len(links)})
        widgets = [
            inputs.get(name, EDITOR_DEFAULTS.get(name))
            for name in EDITOR_WIDGETS.get(entry["class_type"], ())
        ]
        nodes.append(
            {"id": int(node_id), "type": entry["class_type"], "inputs": slots,
             "widgets_values": widgets}
        )  # fmt: skip
    return {"last_node_id": max(int(k) for k in graph), "nodes": nodes, "links": links}


def guided_graph() -> dict[str, Any]:
    """The default graph with a canny ControlNet (advanced), a plain one, an IPAdapter
    through the unified loader and an advanced one with its own loaders, images and mask."""
    return txt2img(
        n3=node(
            "KSampler", seed=7, steps=20, cfg=7.0, sampler_name="euler", scheduler="normal",
            denoise=1.0, model=["30", 0], positive=["12", 0], negative=["12", 1],
            latent_image=["5", 0],
        ),
        n10=node("ControlNetLoader", control_net_name="control_v11p_sd15_canny.safetensors"),
        n11=node("LoadImage", image="pose.png"),
        n13=node("Canny", image=["11", 0], low_threshold=0.4, high_threshold=0.8),
        n12=node(
            "ControlNetApplyAdvanced", positive=["14", 0], negative=["7", 0],
            control_net=["10", 0], image=["13", 0], strength=0.8, start_percent=0.1,
            end_percent=0.75,
        ),
        n15=node("ControlNetLoader", control_net_name="t2i_sketch.pth"),
        n16=node("LoadImage", image="sketch.png"),
        n14=node("ControlNetApply", conditioning=["6", 0], control_net=["15", 0],
                 image=["16", 0], strength=0.5),
        n20=node("IPAdapterUnifiedLoader", model=["4", 0], preset="PLUS (high strength)"),
        n21=node("LoadImage", image="style.png", ),
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
    )  # fmt: skip


def test_an_editor_graph_reads_its_controlnets_and_ip_adapters_as_the_api_graph() -> None:
    graph = guided_graph()
    from_prompt = read_comfyui({"prompt": json.dumps(graph)})
    from_workflow = read_comfyui({"workflow": json.dumps(editor_graph(graph))})
    assert from_workflow.request == from_prompt.request
    assert from_workflow.extras == from_prompt.extras
    assert from_workflow.notes == from_prompt.notes
    # What both read, so that the comparison is not of two empty readings.
    extras = from_workflow.extras
    assert extras["ControlNet 0"] == (
        "Module: canny, Model: control_v11p_sd15_canny.safetensors, Weight: 0.8, "
        "Guidance Start: 0.1, Guidance End: 0.75"
    )
    assert extras["ControlNet 1"] == "Module: none, Model: t2i_sketch.pth, Weight: 0.5"
    assert extras["ControlNet 2"] == (
        "Module: ip-adapter_clip_h, Model: ip-adapter-plus_sd15, Weight: 0.7, "
        "Guidance Start: 0.0, Guidance End: 0.8"
    )
    assert extras["ControlNet 3"] == (
        "Module: ip-adapter_clip_g, Model: ip-adapter_sdxl.safetensors, Weight: 1.2, "
        "Guidance Start: 0.1, Guidance End: 1.0"
    )
    notes = "\n".join(from_workflow.notes)
    assert "holds no settings" not in notes
    assert "(the graph loads it from 'pose.png')" in notes
    assert "(the graph loads 'a.png', 'b.png')" in notes
    assert "ControlNet 3: its weight type 'style transfer' would not apply" in notes
    assert "ControlNet 3 has an attention mask ('left.png')" in notes
    assert "CLIP vision file 'CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors'" in notes
    canny, sketch = control_names.read_units(extras)
    assert canny.unit("x").start == 0.1 and sketch.unit("x").weight == 0.5
    plus, sdxl = ip_adapter_names.read_prompts(extras)
    assert plus.prompt("x") == ImagePrompt("ip-adapter-plus_sd15", ("x",), 0.7, end=0.8)
    assert sdxl.encoder == "ViT-bigG" and sdxl.prompt("x").start == 0.1


def test_an_editor_graph_of_the_first_ipadapter_plugin_is_read() -> None:
    """``IPAdapterApply`` (the plugin's first version) grew widgets release by release:
    a shorter list of an older one reads as far as it goes."""
    graph = txt2img(
        n3=node(
            "KSampler", seed=7, steps=20, cfg=7.0, sampler_name="euler", scheduler="normal",
            denoise=1.0, model=["30", 0], positive=["6", 0], negative=["7", 0],
            latent_image=["5", 0],
        ),
        n23=node("IPAdapterModelLoader", ipadapter_file="ip-adapter_sd15.safetensors"),
        n25=node("LoadImage", image="a.png"),
        n30=node("IPAdapterApply", model=["4", 0], ipadapter=["23", 0], image=["25", 0]),
    )  # fmt: skip
    workflow = editor_graph(graph)
    applied = next(n for n in workflow["nodes"] if n["type"] == "IPAdapterApply")
    applied["widgets_values"] = [0.4, 0.3, "original", 0.25, 0.9, False]
    parsed = read_comfyui({"workflow": json.dumps(workflow)})
    assert parsed.extras["ControlNet 0"] == (
        "Module: ip-adapter_clip_h, Model: ip-adapter_sd15.safetensors, Weight: 0.4, "
        "Guidance Start: 0.25, Guidance End: 0.9"
    )
    assert "ControlNet 0: its noise 0.3 would not apply." in parsed.notes
    applied["widgets_values"] = [0.4, 0.0]  # before start_at and end_at were added
    parsed = read_comfyui({"workflow": json.dumps(workflow)})
    assert parsed.extras["ControlNet 0"].endswith(
        "Weight: 0.4, Guidance Start: 0.0, Guidance End: 1.0"
    )


# --- The annotator download, recorded and deleted like the app's other downloads ----------


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The tiny Depth Anything V2 transformers folder as the fake hub's repo."""
    from sdstudio.testing import tiny_depth

    folder = tiny_depth.save_hf_folder(tmp_path_factory.mktemp("repo") / "hf", 2)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    files["pytorch_model.bin"] = b"pickle" * 10
    return files


@pytest.fixture
def offered(monkeypatch: pytest.MonkeyPatch) -> str:
    """The fake hub's repo offered as an annotator download (the fake hub serves one repo)."""
    from sdstudio.engine.models import download

    monkeypatch.setitem(download.ANNOTATOR_DOWNLOADS, REPO, ("Tiny depth (depth_anything)", 0.0))
    return REPO


def test_the_cli_offers_the_annotator_download(capsys: pytest.CaptureFixture[str]) -> None:
    from sdstudio.cli import main

    with pytest.raises(SystemExit):
        main(["models", "download", "--help"])
    shown = capsys.readouterr().out
    assert "depth-anything/Depth-Anything-V2-Small-hf: Depth Anything V2 Small" in shown
    assert main(["models", "download", "depth-anything/Depth-Anything-V2-Small-hf",
                 "--revision", "v1"]) == 1  # fmt: skip
    assert "fetched at its main revision; leave out --revision" in capsys.readouterr().err
    assert load_settings(AppPaths.default()).downloaded_models == ()


def test_an_annotator_downloaded_from_the_cli_is_found_and_deleted_in_the_model_manager(
    qtbot: Any, hub: Any, cache: Path, offered: str
) -> None:
    from sdstudio.cli import main
    from sdstudio.engine.models.download import annotator_snapshot
    from sdstudio.ui.model_manager import ModelManager

    paths = AppPaths.default()
    assert main(["models", "download", offered, "--endpoint", hub.endpoint]) == 0
    folder = paths.models_dir / "annotators"
    snapshot = annotator_snapshot(folder, offered)
    assert snapshot is not None and snapshot.parent.name == "snapshots"
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "model.safetensors"]
    assert not cache.exists()  # not into the Hugging Face cache
    assert load_settings(paths).downloaded_models == (offered,)
    annotators = Annotators(lambda: annotator_folders(paths, load_settings(paths)))
    assert find_depth_model("depth_anything_v2", annotators) == snapshot / "config.json"

    manager = ModelManager(paths, load_settings(paths))
    qtbot.addWidget(manager)
    with qtbot.waitSignal(manager.listed, timeout=30_000):
        pass
    rows = [manager.table.topLevelItem(i) for i in range(manager.table.topLevelItemCount())]
    [row] = [r for r in rows if r.text(1) == "Annotator"]
    assert (row.text(0), row.text(7)) == ("tiny-turbo", str(snapshot))
    assert manager.status.text() == "1 model"
    row.setSelected(True)
    assert manager.remove_button.isEnabled()
    with qtbot.waitSignal(manager.listed, timeout=30_000):
        manager.remove_button.click()
    assert not snapshot.exists() and annotator_snapshot(folder, offered) is None
    assert load_settings(paths).downloaded_models == ()
    assert manager.table.topLevelItemCount() == 0
    manager.shutdown()


def test_an_annotator_download_without_its_files_is_not_listed(tmp_path: Path) -> None:
    from sdstudio.engine.models.download import annotator_snapshot

    repo = tmp_path / "models--org--depth"
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc", "utf-8")
    assert annotator_snapshot(tmp_path, "org/depth") is None  # config.json comes last
    (repo / "snapshots" / "abc" / "config.json").write_text("{}", "utf-8")
    assert annotator_snapshot(tmp_path, "org/depth") == repo / "snapshots" / "abc"
    (repo / "refs" / "main").write_text("../../elsewhere", "utf-8")
    assert annotator_snapshot(tmp_path, "org/depth") is None
    assert annotator_snapshot(tmp_path, "org/other") is None


def test_the_model_manager_names_ip_adapters_and_clip_vision_encoders(
    qtbot: Any, tmp_path: Path
) -> None:
    from sdstudio.testing.tiny_control import write_header_file
    from sdstudio.testing.tiny_ip_adapter import save_tiny_encoder
    from sdstudio.ui.model_manager import ModelManager

    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "checkpoints").mkdir(parents=True)
    adapter = {
        "image_proj.proj.weight": (3072, 1024),
        "image_proj.norm.weight": (768,),
        "ip_adapter.1.to_k_ip.weight": (320, 768),
        "ip_adapter.1.to_v_ip.weight": (320, 768),
    }
    write_header_file(comfy / "models" / "ipadapter" / "ip-adapter_sd15.safetensors", adapter)
    save_tiny_encoder(comfy / "models" / "clip_vision" / "CLIP-ViT-H-14.safetensors")
    paths = AppPaths.default()
    manager = ModelManager(paths, Settings(model_folders=(str(comfy),)))
    qtbot.addWidget(manager)
    with qtbot.waitSignal(manager.listed, timeout=30_000):
        pass
    rows = [manager.table.topLevelItem(i) for i in range(manager.table.topLevelItemCount())]
    kinds = {row.text(0): row.text(1) for row in rows}
    assert kinds == {"ip-adapter_sd15": "IP-Adapter", "CLIP-ViT-H-14": "CLIP vision"}
    manager.shutdown()
