"""Lone transformer files of the flow families (original and diffusers layouts, fp8,
GGUF) recognised from their headers and loaded offline into the same model."""

from __future__ import annotations

import copy
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from sdstudio.engine.errors import ModelError
from sdstudio.engine.parts.denoiser_configs import CLASSES, denoiser_config
from sdstudio.engine.parts.denoiser_keys import chroma_to_diffusers, flux1_to_diffusers
from sdstudio.engine.parts.denoisers import (
    foreign_denoiser,
    identify_denoiser,
    load_denoiser,
    read_denoiser_file,
)
from sdstudio.engine.parts.gguf_files import gguf_quantization, gguf_shapes
from sdstudio.testing.original_layouts import to_original_layout
from sdstudio.testing.tiny_denoiser_files import (
    FAMILIES,
    SD35_OPTIONS,
    build_tiny_denoiser,
    fp8_rounded,
    tiny_denoiser_output,
    write_denoiser_file,
    write_denoiser_gguf,
)

UNET = "model.diffusion_model."


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every connection attempt is refused and recorded: loading must not need the Hub."""
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("network use in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield attempts
    assert not attempts, f"tried to connect to {attempts}"


def shapes_of(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in tensors.items()}


def assert_same_model(loaded: Any, model: Any, family: str, atol: float = 1e-5) -> None:
    assert type(loaded) is type(model)
    expected = tiny_denoiser_output(model, family)
    torch.testing.assert_close(tiny_denoiser_output(loaded, family), expected, atol=atol, rtol=0)


# --- the two layouts -----------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_both_layouts_load_into_the_same_model(family: str, tmp_path: Path) -> None:
    model = build_tiny_denoiser(family)
    other = tiny_denoiser_output(build_tiny_denoiser(family, seed=1), family)
    assert not torch.allclose(other, tiny_denoiser_output(model, family), atol=1e-3)
    cases = (("original", ""), ("original", UNET), ("diffusers", ""))
    for layout, prefix in cases:
        path = write_denoiser_file(
            tmp_path / f"{layout}{len(prefix)}.safetensors",
            family,
            model,
            layout=layout,
            prefix=prefix,
        )
        found = read_denoiser_file(path)
        assert found is not None and found.family == family and found.quantization == ""
        assert found.layout == ("diffusers" if family == "qwen-image" else layout)
        assert_same_model(load_denoiser(path, dtype=torch.float32), model, family)


def test_sd35_style_blocks_and_flux_schnell(tmp_path: Path) -> None:
    """Query/key norms and a second attention (SD 3.5 Medium); no guidance embedding
    (Flux.1 schnell)."""
    sd35 = build_tiny_denoiser("sd3", **SD35_OPTIONS)
    path = write_denoiser_file(tmp_path / "sd35.safetensors", "sd3", sd35, prefix=UNET)
    loaded = load_denoiser(path, dtype=torch.float32)
    assert loaded.config.qk_norm == "rms_norm" and list(loaded.config.dual_attention_layers) == [0]
    assert_same_model(loaded, sd35, "sd3")
    for guidance, variant in ((True, "dev"), (False, "schnell")):
        flux = build_tiny_denoiser("flux1", guidance_embeds=guidance)
        path = write_denoiser_file(tmp_path / f"{variant}.safetensors", "flux1", flux)
        found = read_denoiser_file(path)
        assert found is not None and found.variant == variant
        assert found.label == f"Flux.1 {variant} transformer"
        loaded = load_denoiser(path, dtype=torch.bfloat16)
        assert loaded.config.guidance_embeds is guidance
        assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize(
    ("family", "ours", "theirs", "options"),
    [
        (
            "flux1",
            flux1_to_diffusers,
            "convert_flux_transformer_checkpoint_to_diffusers",
            {"guidance_embeds": True},
        ),
        ("chroma", chroma_to_diffusers, "convert_chroma_transformer_checkpoint_to_diffusers", {}),
    ],
)
def test_names_map_as_diffusers_maps_them_at_the_released_width(
    family: str, ours: Any, theirs: str, options: dict[str, Any]
) -> None:
    """diffusers' converters only take 3072-wide files; ours read the width. Rows are
    numbered so that any misplaced split or swap shows (columns do not matter)."""
    from diffusers.loaders import single_file_utils

    with torch.device("meta"):
        model = getattr(__import__("diffusers"), CLASSES[family])(
            num_layers=1, num_single_layers=1, **options
        )
    original = to_original_layout(family, dict(model.state_dict()))
    numbered = {k: torch.arange(v.shape[0]).reshape(-1, 1) for k, v in original.items()}
    converted = ours(dict(numbered))
    expected = getattr(single_file_utils, theirs)(dict(numbered))
    assert converted.keys() == expected.keys() == model.state_dict().keys()
    for key, value in expected.items():
        assert torch.equal(converted[key], value), key


# --- rules and variants at the released sizes ----------------------------------------

RELEASED: dict[str, tuple[str, str, dict[str, Any]]] = {
    "Flux.1 dev": ("flux1", "dev", dict(guidance_embeds=True)),
    "Flux.1 schnell": ("flux1", "schnell", dict(guidance_embeds=False)),
    "Flux.1 Fill": ("flux1", "Fill", dict(guidance_embeds=True, in_channels=384, out_channels=64)),
    "Chroma": ("chroma", "", {}),
    "SD 3 Medium": (
        "sd3",
        "Medium",
        dict(
            num_layers=24,
            num_attention_heads=24,
            caption_projection_dim=1536,
            pos_embed_max_size=192,
        ),
    ),
    "SD 3.5 Large": (
        "sd3",
        "Large",
        dict(
            num_layers=38,
            num_attention_heads=38,
            caption_projection_dim=2432,
            pos_embed_max_size=192,
            qk_norm="rms_norm",
        ),
    ),
    "SD 3.5 Medium": (
        "sd3",
        "3.5 Medium",
        dict(
            num_layers=24,
            num_attention_heads=24,
            caption_projection_dim=1536,
            pos_embed_max_size=384,
            qk_norm="rms_norm",
            dual_attention_layers=tuple(range(13)),
        ),
    ),
    "Z-Image": ("zimage", "", dict(axes_lens=[1536, 512, 512])),
    "Qwen-Image": ("qwen-image", "", dict(out_channels=16)),
    "Flux.2 Klein 4B": (
        "flux2-klein",
        "4B",
        dict(
            in_channels=128,
            num_layers=5,
            num_single_layers=20,
            num_attention_heads=24,
            joint_attention_dim=7680,
            guidance_embeds=False,
        ),
    ),
    "Flux.2 Klein 9B": (
        "flux2-klein",
        "9B",
        dict(
            in_channels=128,
            num_layers=8,
            num_single_layers=24,
            num_attention_heads=32,
            joint_attention_dim=12288,
            guidance_embeds=False,
        ),
    ),
}


@pytest.mark.parametrize("name", RELEASED)
def test_released_models_are_told_apart_and_configured_from_shapes(name: str) -> None:
    """Full-size architectures on the meta device (no memory): variant, label and every
    config value read from the shapes of either layout are the released model's."""
    import diffusers

    family, variant, arguments = RELEASED[name]
    with torch.device("meta"):
        model = getattr(diffusers, CLASSES[family])(**arguments)
    state = dict(model.state_dict())
    for layout, shapes in (
        ("diffusers", shapes_of(state)),
        (
            "original",
            {UNET + k: v for k, v in shapes_of(to_original_layout(family, state)).items()},
        ),
    ):
        found = identify_denoiser(shapes, quantization="GGUF Q4_K")
        assert found is not None and (found.family, found.variant) == (family, variant)
        assert found.label == f"{name} transformer (GGUF Q4_K)"
        config = denoiser_config(shapes, family)
        assert config.pop("_class_name") == CLASSES[family]
        for key, value in config.items():
            actual = model.config[key]
            same = (
                list(value) == list(actual) if isinstance(value, (list, tuple)) else value == actual
            )
            assert same, f"{layout} {key}: {value} != {actual}"


def test_models_sdstudio_does_not_run_are_named(tmp_path: Path) -> None:
    import diffusers

    with torch.device("meta"):
        depth = diffusers.FluxTransformer2DModel(
            num_layers=1, num_single_layers=1, in_channels=128, out_channels=64
        )
        dev2 = diffusers.Flux2Transformer2DModel(num_layers=1, num_single_layers=1)
        chroma = diffusers.ChromaTransformer2DModel(num_layers=1, num_single_layers=1)
    # Chroma Radiance works on pixels: 16 x 16-pixel patches in, a NeRF-style head out.
    radiance = to_original_layout("chroma", dict(chroma.state_dict()))
    del radiance["img_in.weight"], radiance["img_in.bias"]
    radiance["img_in_patch.weight"] = torch.empty(3072, 3, 16, 16, device="meta")
    radiance["nerf_image_embedder.embedder.0.weight"] = torch.empty(64, 19, device="meta")
    cases: dict[str, tuple[str, Any]] = {
        "Flux.1 Depth or Canny": ("flux1", depth.state_dict()),
        "Flux.2 dev": ("flux2-klein", dev2.state_dict()),
        "Chroma Radiance": ("", radiance),
    }
    for name, (family, state) in cases.items():
        original = to_original_layout(family, dict(state)) if family else state
        for shapes in (shapes_of(dict(state)), shapes_of(original)):
            assert identify_denoiser(shapes) is None
            assert foreign_denoiser(shapes) == name
    tiny_depth = build_tiny_denoiser("flux1", in_channels=128, out_channels=64)
    path = write_denoiser_file(tmp_path / "depth.safetensors", "flux1", tiny_depth)
    assert read_denoiser_file(path) is None
    with pytest.raises(ModelError, match=r"a Flux\.1 Depth or Canny transformer, which sdstudio"):
        load_denoiser(path, dtype=torch.float32)


# --- fp8 -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["flux1", "qwen-image", "zimage"])
def test_fp8_files_load_upcast(family: str, tmp_path: Path) -> None:
    """Without fp8 storage (tests/test_fp8_storage.py tests it), fp8 weights are upcast."""
    model = build_tiny_denoiser(family)
    path = write_denoiser_file(
        tmp_path / "fp8.safetensors", family, model, fp8="plain", prefix=UNET
    )
    found = read_denoiser_file(path)
    assert found is not None and found.quantization == "fp8" and found.label.endswith("(fp8)")
    loaded = load_denoiser(path, dtype=torch.float32, fp8_storage=False)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert_same_model(loaded, fp8_rounded(copy.deepcopy(model)), family)


def test_scaled_fp8_files_are_scaled_back(tmp_path: Path) -> None:
    model = build_tiny_denoiser("flux1", guidance_embeds=True)
    path = write_denoiser_file(
        tmp_path / "d.safetensors", "flux1", model, fp8="scaled", layout="diffusers"
    )
    assert_same_model(
        load_denoiser(path, dtype=torch.float32, fp8_storage=False),
        fp8_rounded(copy.deepcopy(model), scaled=True),
        "flux1",
    )
    # In the original layout q, k and v share one scale: close to the model, not equal.
    path = write_denoiser_file(tmp_path / "o.safetensors", "flux1", model, fp8="scaled")
    upcast = load_denoiser(path, dtype=torch.float32, fp8_storage=False)
    assert_same_model(upcast, model, "flux1", atol=0.2)


# --- GGUF -------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "atol"), [("F16", 5e-3), ("Q8_0", 3e-2)])
def test_flux_gguf_stays_quantized_and_matches(kind: str, atol: float, tmp_path: Path) -> None:
    from diffusers.quantizers.gguf.utils import GGUFLinear

    model = build_tiny_denoiser("flux1", guidance_embeds=True)
    path = write_denoiser_gguf(tmp_path / f"flux1-dev-{kind}.gguf", "flux1", model, kind=kind)
    assert gguf_shapes(path) == shapes_of(to_original_layout("flux1", dict(model.state_dict())))
    assert gguf_quantization(path) == kind
    found = read_denoiser_file(path)
    assert found is not None and found.label == f"Flux.1 dev transformer (GGUF {kind})"
    loaded = load_denoiser(path, dtype=torch.float32)
    linear = loaded.transformer_blocks[0].attn.to_q
    if kind == "F16":  # diffusers reads F16 (and F32) tensors as plain tensors, in dtype
        assert linear.weight.dtype == torch.float32
    else:
        assert isinstance(linear, GGUFLinear) and linear.weight.quant_type.name == kind  # type: ignore[attr-defined]
    assert_same_model(loaded, model, "flux1", atol=atol)


@pytest.mark.parametrize("family", ["chroma", "sd3", "zimage", "qwen-image", "flux2-klein"])
def test_gguf_files_of_the_other_families(family: str, tmp_path: Path) -> None:
    """BF16 keeps convolutions, position tables and pad tokens quantized in the file;
    they are computed as plain tensors. Q8_0 splits quantized fused rows."""
    model = build_tiny_denoiser(family)
    for kind, atol in (("BF16", 3e-2), ("Q8_0", 5e-2)):
        path = write_denoiser_gguf(tmp_path / f"{kind}.gguf", family, model, kind=kind)
        assert gguf_quantization(path) == kind
        assert_same_model(load_denoiser(path, dtype=torch.float32), model, family, atol=atol)


# --- files that are not (whole) transformers --------------------------------------------


def test_damaged_and_foreign_gguf_files_are_refused(tmp_path: Path) -> None:
    path = write_denoiser_gguf(
        tmp_path / "flux.gguf", "flux1", build_tiny_denoiser("flux1"), kind="Q8_0"
    )
    data = path.read_bytes()
    for size, words in (
        (len(data) - 100, "truncated"),
        (len(data) // 2, "truncated"),
        (3, "not a GGUF"),
    ):
        cut = tmp_path / f"cut{size}.gguf"
        cut.write_bytes(data[:size])
        for read in (gguf_shapes, gguf_quantization, read_denoiser_file):
            with pytest.raises(ModelError, match=words):
                read(cut)
        with pytest.raises(ModelError, match=words):
            load_denoiser(cut, dtype=torch.float32)
    text = tmp_path / "notes.gguf"
    text.write_text("GGUF is a file format; this is a text file\n" * 5)
    with pytest.raises(ModelError, match="truncated or damaged"):
        gguf_shapes(text)
    text.write_text("a text file renamed\n")
    with pytest.raises(ModelError, match="not a GGUF file"):
        load_denoiser(text, dtype=torch.float32)


def test_unreadable_gguf_types_are_named(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(tmp_path / "iq.gguf"), arch="flux")
    for key, value in to_original_layout(
        "flux1", dict(build_tiny_denoiser("flux1").state_dict())
    ).items():
        writer.add_tensor(key, value.detach().numpy())
    iq2 = gguf.GGMLQuantizationType.IQ2_XXS  # 66 bytes per 256 values
    writer.add_tensor("extra.weight", np.zeros((2, 66), dtype=np.uint8), raw_dtype=iq2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert gguf_shapes(tmp_path / "iq.gguf")["extra.weight"] == (2, 256)
    with pytest.raises(ModelError, match="IQ2_XXS"):
        load_denoiser(tmp_path / "iq.gguf", dtype=torch.float32)


def test_other_files_are_no_transformers(tmp_path: Path) -> None:
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2
        )
    )
    lora = {
        "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.zeros(4, 32),
        "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.zeros(96, 4),
    }
    peft = {"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 32)}
    cases = {
        "text encoder": {f"text_model.{k}": v for k, v in encoder.state_dict().items()},
        "CLIP text encoder": encoder.state_dict(),
        "LoRA": lora,
        "peft": peft,
    }
    for name, tensors in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
        assert read_denoiser_file(path) is None
        with pytest.raises(ModelError, match="CLIP text encoder" if "text" in name else "LoRA"):
            load_denoiser(path, dtype=torch.float32)


def test_incomplete_and_truncated_safetensors_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = build_tiny_denoiser("flux1")
    tensors = to_original_layout("flux1", dict(model.state_dict()))
    del tensors["single_blocks.0.linear2.weight"]
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "partial.safetensors")
    )
    with pytest.raises(ModelError, match="lacks"):
        load_denoiser(tmp_path / "partial.safetensors", dtype=torch.float32)
    path = write_denoiser_file(tmp_path / "whole.safetensors", "sd3", build_tiny_denoiser("sd3"))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(ModelError, match="truncated"):
        load_denoiser(cut, dtype=torch.float32)
