"""IP-Adapter and CLIP vision encoder files: recognised from their tensors where users keep
them (A1111, ComfyUI, InvokeAI), listed by the catalog under their own kinds, and
refused with a clear message when they cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sdstudio.engine.control.clip_vision_files import (
    choose_encoder,
    config_from_shapes,
    inspect_encoder,
    load_encoder,
)
from sdstudio.engine.control.image_prompts import ImagePrompt
from sdstudio.engine.control.ip_adapter_files import (
    find_ip_adapter,
    inspect_ip_adapter,
    list_ip_adapters,
)
from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.generation import Engine
from sdstudio.engine.models.catalog import list_models, network_folders
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.settings import Settings
from sdstudio.testing.tiny_control import SDXL_CONTROLNET_SHAPES, write_header_file
from sdstudio.testing.tiny_ip_adapter import save_tiny_encoder, save_tiny_ip_adapter

SDXL_PLAIN = {
    "image_proj.proj.weight": (8192, 1280),
    "image_proj.proj.bias": (8192,),
    "image_proj.norm.weight": (2048,),
    "ip_adapter.1.to_k_ip.weight": (640, 2048),
    "ip_adapter.1.to_v_ip.weight": (640, 2048),
}
SD15_PLUS = {
    "image_proj.latents": (1, 16, 768),
    "image_proj.proj_in.weight": (768, 1280),
    "image_proj.proj_out.weight": (768, 768),
    "ip_adapter.1.to_k_ip.weight": (320, 768),
}
SD15_FULL = {
    "image_proj.proj.0.weight": (1280, 1280),
    "image_proj.proj.2.weight": (3072, 1280),
    "image_proj.proj.3.weight": (768,),
    "ip_adapter.1.to_k_ip.weight": (320, 768),
}
FACEID = {
    "image_proj.proj.0.weight": (1024, 512),
    "image_proj.norm.weight": (768,),
    "ip_adapter.1.to_k_ip.weight": (320, 768),
    "ip_adapter.1.to_k_lora.down.weight": (128, 320),
}
OPEN_CLIP = {"visual.transformer.resblocks.0.attn.in_proj_weight": (3840, 1280)}


def test_kinds_families_and_encoders_from_headers(tmp_path: Path) -> None:
    xl = inspect_ip_adapter(write_header_file(tmp_path / "ip-adapter_sdxl.safetensors", SDXL_PLAIN))
    assert (xl.family, xl.kind, xl.encoder, xl.hidden_states) == (
        "sdxl",
        "plain",
        "ViT-bigG",
        False,
    )
    plus = inspect_ip_adapter(write_header_file(tmp_path / "ip-adapter-plus_sd15.safetensors",
                                                SD15_PLUS))  # fmt: skip
    assert (plus.family, plus.kind, plus.encoder, plus.hidden_states) == (
        "sd1",
        "plus",
        "ViT-H",
        True,
    )
    full = inspect_ip_adapter(write_header_file(tmp_path / "full.safetensors", SD15_FULL))
    assert (full.kind, full.encoder) == ("full", "ViT-H")
    light = inspect_ip_adapter(write_header_file(tmp_path / "ip-adapter_sd15_light.safetensors",
                                                 {**SDXL_PLAIN}))  # fmt: skip
    assert light.kind == "light"


def test_refusals(tmp_path: Path, tiny_model: Path) -> None:
    with pytest.raises(ModelError, match=r"FaceID.*insightface"):
        inspect_ip_adapter(write_header_file(tmp_path / "faceid.safetensors", FACEID))
    with pytest.raises(ModelError, match="not an IP-Adapter"):
        inspect_ip_adapter(write_header_file(tmp_path / "cn.safetensors", SDXL_CONTROLNET_SHAPES))
    good = save_tiny_ip_adapter(tiny_model, tmp_path / "cut.safetensors")
    good.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ModelError, match=r"cannot be read.*truncated"):
        inspect_ip_adapter(good)
    pickle = save_tiny_ip_adapter(tiny_model, tmp_path / "cut.bin")
    pickle.write_bytes(pickle.read_bytes()[:200])
    with pytest.raises(ModelError, match="truncated or damaged"):
        inspect_ip_adapter(pickle)
    with pytest.raises(ModelError, match="OpenCLIP"):
        config_from_shapes(OPEN_CLIP, "open_clip.safetensors")
    with pytest.raises(ModelError, match="IP-Adapter; give it as an image prompt"):
        from sdstudio.engine.control.control_files import inspect_controlnet

        inspect_controlnet(write_header_file(tmp_path / "x" / "ip.safetensors", SDXL_PLAIN))


def test_finding_adapters_and_their_encoder(tmp_path: Path, tiny_model: Path) -> None:
    adapters, encoders = tmp_path / "ipadapter", tmp_path / "clip_vision"
    save_tiny_ip_adapter(tiny_model, adapters / "ip-adapter_tiny.safetensors")
    invoke = adapters / "tiny_invoke"
    save_tiny_ip_adapter(tiny_model, invoke / "ip_adapter.bin", plus=True)
    (invoke / "image_encoder.txt").write_text("InvokeAI/tiny-folder\n", "utf-8")
    assert find_ip_adapter("ip-adapter_tiny [0123abcd]", [adapters]).name.endswith(".safetensors")
    folder = inspect_ip_adapter(find_ip_adapter("tiny_invoke", [adapters]))
    assert (folder.name, folder.kind, folder.encoder_hint) == (
        "tiny_invoke",
        "plus",
        "InvokeAI/tiny-folder",
    )
    assert sorted(a.name for a in list_ip_adapters([adapters])) == [
        "ip-adapter_tiny",
        "tiny_invoke",
    ]
    with pytest.raises(InvalidRequest, match=r"was not found \(looked in .*ipadapter\)"):
        find_ip_adapter("nowhere", [adapters])
    with pytest.raises(
        InvalidRequest, match=r"needs a CLIP vision encoder.*looked in .*clip_vision"
    ):
        choose_encoder(folder, "", [encoders])
    # A file with Hugging Face names and a transformers folder are the same encoder.
    single = inspect_encoder(save_tiny_encoder(encoders / "tiny-file.safetensors"))
    saved = inspect_encoder(save_tiny_encoder(encoders / "tiny-folder", folder=True))
    assert (single.hidden, single.embed) == (saved.hidden, saved.embed) == (64, 16)
    assert choose_encoder(folder, "", [encoders]).name == "tiny-folder"  # the one named
    assert choose_encoder(folder, "tiny-file", [encoders]).name == "tiny-file"
    with pytest.raises(InvalidRequest, match="No ViT-H CLIP vision encoder that fits"):
        choose_encoder(folder, "ViT-H", [encoders])
    pixels = torch.rand(1, 3, 32, 32)
    outputs = [
        load_encoder(e, dtype=torch.float32, device="cpu")(pixels).image_embeds
        for e in (single, saved)
    ]
    assert torch.equal(outputs[0], outputs[1])


def test_a1111_pickled_encoder_and_adapters_among_controlnets(
    tmp_path: Path, tiny_model: Path, paths
) -> None:
    """A1111 keeps IP-Adapters in models/ControlNet and the encoders the ControlNet
    extension downloaded as clip_h.pth (a pickle with Hugging Face's names)."""
    from sdstudio.testing.tiny_control import save_tiny_controlnet
    from sdstudio.testing.tiny_ip_adapter import build_tiny_encoder

    root = tmp_path / "webui"
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    controlnets = root / "models" / "ControlNet"
    save_tiny_ip_adapter(tiny_model, controlnets / "ip-adapter_tiny.safetensors")
    save_tiny_ip_adapter(tiny_model, controlnets / "ip-adapter-plus_tiny.bin", plus=True)
    save_tiny_controlnet(tiny_model, controlnets / "control_tiny")
    downloads = root / "extensions" / "sd-webui-controlnet" / "annotator" / "downloads"
    (downloads / "clip_vision").mkdir(parents=True)
    torch.save(build_tiny_encoder().state_dict(), downloads / "clip_vision" / "clip_h.pth")
    settings = Settings(model_folders=(str(root),))
    entries = {e.name: e for e in list_models(paths, settings, with_hf=False).entries}
    assert entries["ip-adapter_tiny"].kind == "ipadapter"
    assert entries["ip-adapter-plus_tiny"].kind == "ipadapter"
    assert entries["control_tiny"].kind == "controlnet"
    assert entries["clip_h"].kind == "clip_vision"
    assert controlnets in network_folders(paths, settings, "ipadapter")
    encoder_dirs = network_folders(paths, settings, "clip_vision")
    plus = inspect_ip_adapter(find_ip_adapter("ip-adapter-plus_tiny", [controlnets]))
    assert choose_encoder(plus, "", encoder_dirs).name == "clip_h"


def test_an_sdxl_adapter_on_an_sd1_model_and_a_flow_model_are_refused(
    manager, tmp_path: Path, tiny_model: Path
) -> None:
    from sdstudio.testing.tiny_flow import save_tiny_sd3

    write_header_file(tmp_path / "ip" / "ip-adapter_sdxl.safetensors", SDXL_PLAIN)
    engine = Engine(manager, tmp_path / "inputs", ip_adapter_dirs=lambda: [tmp_path / "ip"])
    image = tmp_path / "ref.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    prompts = (ImagePrompt("ip-adapter_sdxl", (str(image),)),)
    request = GenerationRequest(prompt="x", model=str(tiny_model), ip_adapters=prompts)
    with pytest.raises(InvalidRequest, match=r"an SDXL IP-Adapter on an SD 1\.x model"):
        next(engine.generate(request))
    sd3 = save_tiny_sd3(tmp_path / "sd3")
    with pytest.raises(InvalidRequest, match=r"IP-Adapters guide SD 1\.x, SDXL and Flux\.1 models"):
        next(engine.generate(request.replace(model=str(sd3))))


def test_comfyui_and_invokeai_folders(tmp_path: Path, tiny_model: Path, paths) -> None:
    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "checkpoints").mkdir(parents=True)
    save_tiny_ip_adapter(tiny_model, comfy / "models" / "ipadapter" / "ip-adapter_tiny.safetensors")
    save_tiny_encoder(comfy / "models" / "clip_vision" / "CLIP-tiny.safetensors")
    invoke = tmp_path / "invokeai"
    (invoke / "invokeai.yaml").parent.mkdir(parents=True, exist_ok=True)
    (invoke / "invokeai.yaml").write_text("InvokeAI: {}\n", "utf-8")
    adapter = invoke / "models" / "sd-1" / "ip_adapter" / "tiny_invoke"
    save_tiny_ip_adapter(tiny_model, adapter / "ip_adapter.bin", plus=True)
    (adapter / "image_encoder.txt").write_text("tiny_encoder", "utf-8")
    save_tiny_encoder(invoke / "models" / "any" / "clip_vision" / "tiny_encoder", folder=True)
    settings = Settings(model_folders=(str(comfy), str(invoke)))
    entries = {e.name: e for e in list_models(paths, settings, with_hf=False).entries}
    assert entries["ip-adapter_tiny"].kind == "ipadapter"
    assert entries["CLIP-tiny"].kind == "clip_vision"
    assert (entries["tiny_invoke"].kind, entries["tiny_invoke"].format) == (
        "ipadapter",
        "diffusers",
    )
    assert entries["tiny_encoder"].kind == "clip_vision"
    found = inspect_ip_adapter(
        find_ip_adapter("tiny_invoke", network_folders(paths, settings, "ipadapter"))
    )
    encoder = choose_encoder(found, "", network_folders(paths, settings, "clip_vision"))
    assert encoder.name == "tiny_encoder"  # image_encoder.txt names it


def test_released_encoder_configs_from_shapes() -> None:
    """ViT-H (ComfyUI's CLIP-ViT-H-14-laion2B) and OpenAI's ViT-L, from their shapes."""

    def shapes(hidden: int, layers: int, projection: int, mlp: int) -> dict:
        found = {
            "vision_model.embeddings.patch_embedding.weight": (hidden, 3, 14, 14),
            "vision_model.embeddings.position_embedding.weight": (257, hidden),
            "vision_model.encoder.layers.0.mlp.fc1.weight": (mlp, hidden),
            "visual_projection.weight": (projection, hidden),
        }
        found[f"vision_model.encoder.layers.{layers - 1}.mlp.fc2.weight"] = (hidden, mlp)
        return found

    vit_h = config_from_shapes(shapes(1280, 32, 1024, 5120), "CLIP-ViT-H-14.safetensors")
    assert vit_h["num_hidden_layers"] == 32 and vit_h["image_size"] == 224
    assert (vit_h["num_attention_heads"], vit_h["hidden_act"]) == (16, "gelu")
    vit_l = config_from_shapes(shapes(1024, 24, 768, 4096), "clip_vitl.pth")
    assert (vit_l["num_attention_heads"], vit_l["hidden_act"]) == (16, "quick_gelu")
