"""Text encoders loaded from single safetensors files.

Tiny random encoders with the real vocabularies are written in the layouts real
files have (Hugging Face names, ComfyUI's prefixes, Qwen's and transformers 5's
Qwen2.5-VL names, fp8 with and without scales); loading one must give the model it
was written from. Real sizes are checked on the meta device, without weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sdstudio.engine.errors import ModelError
from sdstudio.engine.parts.text_encoder_configs import find_layouts
from sdstudio.engine.parts.text_encoder_loading import build_model, model_config
from sdstudio.engine.parts.text_encoders import (
    TextEncoderFile,
    find_text_encoders,
    identify_text_encoder,
    inspect_text_encoder,
    load_text_encoder,
    read_header,
)
from sdstudio.testing import tiny_text_encoder_files as tiny

CLIP_IDS = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407, 49407]])
T5_IDS = torch.tensor([[3, 9, 1202, 13, 3, 9, 1712, 1]])
QWEN_IDS = torch.tensor([[151644, 872, 198, 64, 6548, 315, 264, 8251, 151645, 198]])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("text_encoders")
    written = {
        "clip_l": tiny.write_tiny_clip(folder / "clip_l.safetensors", width=32),
        "clip_g": tiny.write_tiny_clip(
            folder / "clip_g.safetensors",
            width=48,
            layers=2,
            prefix="text_encoders.clip_g.transformer.",
            dtype=torch.float16,
        ),
        "clip_bare": tiny.write_tiny_clip(
            folder / "clip_bare.safetensors", width=32, projection=False
        ),
        "t5": tiny.write_tiny_t5(folder / "t5xxl.safetensors"),
        "qwen3": tiny.write_tiny_qwen3(folder / "qwen_3_4b.safetensors", layers=36),
        "qwen3_head": tiny.write_tiny_qwen3(folder / "qwen_3_8b.safetensors", lm_head=True),
        "vl": tiny.write_tiny_qwen25_vl(folder / "qwen_2.5_vl_7b.safetensors"),
        "vl5": tiny.write_tiny_qwen25_vl(folder / "vl_t5.safetensors", layout="transformers"),
    }
    written["t5_fp8"] = tiny.write_fp8(written["t5"], folder / "t5xxl_fp8_e4m3fn.safetensors")
    written["vl_fp8"] = tiny.write_fp8(
        written["vl"], folder / "vl_fp8_scaled.safetensors", scaled=True
    )
    return written


def hidden_states_equal(loaded: Any, reference: Any, **inputs: Any) -> bool:
    with torch.no_grad():
        ours = loaded(**inputs, output_hidden_states=True).hidden_states
        theirs = reference(**inputs, output_hidden_states=True).hidden_states
    return len(ours) == len(theirs) and all(
        torch.equal(a, b) for a, b in zip(ours, theirs, strict=True)
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("clip_l", TextEncoderFile("clip", "CLIP (width 32)", 32, 1)),
        ("clip_g", TextEncoderFile("clip", "CLIP (width 48)", 48, 2)),
        ("t5", TextEncoderFile("t5", "T5 (width 96)", 96, 2)),
        ("t5_fp8", TextEncoderFile("t5", "T5 (width 96) fp8", 96, 2, "fp8")),
        ("qwen3", TextEncoderFile("qwen3", "Qwen3 (width 32)", 32, 36)),
        ("vl", TextEncoderFile("qwen2.5-vl", "Qwen2.5-VL (width 32)", 32, 2)),
        ("vl5", TextEncoderFile("qwen2.5-vl", "Qwen2.5-VL (width 32)", 32, 2)),
        ("vl_fp8", TextEncoderFile("qwen2.5-vl", "Qwen2.5-VL (width 32) fp8", 32, 2, "fp8")),
    ],
)
def test_files_are_told_from_their_headers(
    files: dict[str, Path], name: str, expected: TextEncoderFile
) -> None:
    assert inspect_text_encoder(files[name]) == expected
    _, shapes, _ = read_header(files[name])
    plain = identify_text_encoder(shapes)
    assert plain is not None and (plain.kind, plain.width) == (expected.kind, expected.width)


def test_what_a_file_holds_besides_its_encoder(files: dict[str, Path]) -> None:
    _, shapes, _ = read_header(files["clip_l"])
    whole_clip = shapes | {
        "vision_model.embeddings.patch_embedding.weight": (64, 3, 14, 14),
        "visual_projection.weight": (32, 64),
        "logit_scale": (),
    }
    assert identify_text_encoder(whole_clip) == TextEncoderFile("clip", "CLIP (width 32)", 32, 1)
    checkpoint = shapes | {"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3)}
    assert identify_text_encoder(checkpoint) is None
    scaled = shapes | {"scaled_fp8": (0,), "text_model.encoder.layers.0.mlp.fc1.scale_weight": ()}
    found = identify_text_encoder(scaled)
    assert found is not None and (found.label, found.quantization) == ("CLIP (width 32) fp8", "fp8")


def real_shapes(
    model_class: str, config: Any, rename: dict[str, str]
) -> dict[str, tuple[int, ...]]:
    """The tensor shapes of a full-size model (built on the meta device), renamed as
    the released files name them."""
    import transformers
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = getattr(transformers, model_class)(config)
    shapes = {}
    for name, tensor in model.state_dict().items():
        for old, new in rename.items():
            if name.startswith(old):
                name = new + name.removeprefix(old)
                break
        shapes[name] = tuple(tensor.shape)
    return shapes


@pytest.mark.slow
def test_real_sizes_give_the_released_configs(tmp_path: Path) -> None:
    from transformers import CLIPTextConfig, Qwen2_5_VLConfig, Qwen3Config, T5Config

    clip_l = CLIPTextConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        projection_dim=768,
        hidden_act="quick_gelu",
    )
    clip_g = CLIPTextConfig(
        hidden_size=1280,
        intermediate_size=5120,
        num_hidden_layers=32,
        num_attention_heads=20,
        projection_dim=1280,
        hidden_act="gelu",
    )
    t5 = T5Config(
        d_model=4096,
        d_kv=64,
        d_ff=10240,
        num_layers=24,
        num_heads=64,
        feed_forward_proj="gated-gelu",
    )
    qwen3 = Qwen3Config(
        hidden_size=2560,
        intermediate_size=9728,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=True,
    )
    vl = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 152064,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        },
        vision_config={
            "depth": 32,
            "hidden_size": 1280,
            "num_heads": 16,
            "intermediate_size": 3420,
            "out_hidden_size": 3584,
            "fullatt_block_indexes": [7, 15, 23, 31],
        },
    )
    comfy_vl = {"model.language_model.": "model.", "model.visual.": "visual."}
    cases = [
        ("CLIPTextModelWithProjection", clip_l, {}, "CLIP-L", 12),
        (
            "CLIPTextModelWithProjection",
            clip_g,
            {"": "text_encoders.clip_g.transformer."},
            "CLIP-G",
            32,
        ),
        ("T5EncoderModel", t5, {}, "T5-XXL", 24),
        ("Qwen3Model", qwen3, {"": "model."}, "Qwen3 4B", 36),
        ("Qwen2_5_VLForConditionalGeneration", vl, comfy_vl, "Qwen2.5-VL 7B", 28),
    ]
    for model_class, config, rename, label, layers in cases:
        shapes = real_shapes(model_class, config, rename)
        found = identify_text_encoder(shapes)
        assert found is not None and (found.label, found.layers) == (label, layers)
        canonical = find_layouts(shapes)[0].shapes(shapes)
        inferred = model_config(model_class, canonical)
        if model_class.startswith("CLIP"):
            assert inferred.num_attention_heads == config.num_attention_heads
            assert inferred.hidden_act == config.hidden_act
            assert inferred.projection_dim == config.projection_dim
        elif model_class.startswith("T5"):
            assert (inferred.num_heads, inferred.d_kv, inferred.d_ff) == (64, 64, 10240)
            assert inferred.is_gated_act
        elif model_class.startswith("Qwen3"):
            assert (
                inferred.num_attention_heads,
                inferred.num_key_value_heads,
                inferred.head_dim,
            ) == (32, 8, 128)
            assert inferred.tie_word_embeddings
        else:
            text, vision = inferred.text_config, inferred.vision_config
            assert (text.num_attention_heads, text.num_key_value_heads) == (28, 4)
            assert text.rope_parameters["mrope_section"] == [16, 24, 24]
            assert (vision.num_heads, vision.spatial_merge_size) == (16, 2)
            assert vision.fullatt_block_indexes == [7, 15, 23, 31]
        # Every weight of the full-size class is found under the file's names.
        canonical_class = "Qwen3ForCausalLM" if model_class == "Qwen3Model" else model_class
        model, sources = build_model(tmp_path / "real.safetensors", canonical_class, canonical)
        assert len(sources) == len(dict(model.named_parameters(remove_duplicate=False)))


def test_clip_files_load_as_the_model_they_were_written_from(files: dict[str, Path]) -> None:
    reference = tiny.tiny_clip(width=32)
    with_projection = load_text_encoder(
        files["clip_l"], "CLIPTextModelWithProjection", dtype=torch.float32
    )
    assert hidden_states_equal(with_projection, reference, input_ids=CLIP_IDS)
    with torch.no_grad():
        assert torch.equal(with_projection(CLIP_IDS).text_embeds, reference(CLIP_IDS).text_embeds)
    plain = load_text_encoder(files["clip_l"], "CLIPTextModel", dtype=torch.float32)
    assert hidden_states_equal(plain, reference, input_ids=CLIP_IDS)
    assert not plain.training and plain.device.type == "cpu"

    clip_g = load_text_encoder(files["clip_g"], "CLIPTextModelWithProjection", dtype=torch.float16)
    assert clip_g.dtype == torch.float16
    reference_g = tiny.tiny_clip(width=48, layers=2, dtype=torch.float16).to(torch.float16)
    assert hidden_states_equal(clip_g, reference_g, input_ids=CLIP_IDS)


def test_clip_without_projection_gets_an_identity_projection(
    files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO"):
        model = load_text_encoder(
            files["clip_bare"], "CLIPTextModelWithProjection", dtype=torch.float32
        )
    assert "identity projection" in caplog.text
    plain = load_text_encoder(files["clip_bare"], "CLIPTextModel", dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(model(CLIP_IDS).text_embeds, plain(CLIP_IDS).pooler_output)


def test_t5_loads_with_its_embedding_shared(files: dict[str, Path]) -> None:
    model = load_text_encoder(files["t5"], "T5EncoderModel", dtype=torch.float32)
    assert hidden_states_equal(model, tiny.tiny_t5(), input_ids=T5_IDS)
    assert model.shared.weight.data_ptr() == model.encoder.embed_tokens.weight.data_ptr()


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_qwen3_loads_with_every_layer_flux2_klein_reads(files: dict[str, Path]) -> None:
    reference = tiny.tiny_qwen3(layers=36)
    mask = torch.ones_like(QWEN_IDS)
    for model_class in ("Qwen3Model", "Qwen3ForCausalLM"):
        model = load_text_encoder(files["qwen3"], model_class, dtype=torch.float32)
        assert hidden_states_equal(model, reference, input_ids=QWEN_IDS, attention_mask=mask)
    with torch.no_grad():
        states = model(input_ids=QWEN_IDS, output_hidden_states=True).hidden_states
    assert len(states) == 37 and states[27].shape == (1, QWEN_IDS.shape[1], 32)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    untied = load_text_encoder(files["qwen3_head"], "Qwen3ForCausalLM", dtype=torch.float32)
    with torch.no_grad():
        logits = untied(input_ids=QWEN_IDS).logits
        expected = tiny.tiny_qwen3(lm_head=True)(input_ids=QWEN_IDS).logits
    assert torch.equal(logits, expected)


@pytest.mark.parametrize("name", ["vl", "vl5"])
def test_qwen25_vl_loads_from_either_naming(files: dict[str, Path], name: str) -> None:
    model = load_text_encoder(
        files[name], "Qwen2_5_VLForConditionalGeneration", dtype=torch.float32
    )
    reference = tiny.tiny_qwen25_vl()
    assert hidden_states_equal(model, reference, input_ids=QWEN_IDS)
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)


def test_fp8_files_are_dequantized(files: dict[str, Path]) -> None:
    """Without fp8 storage (tests/test_fp8_storage.py tests it), fp8 weights are upcast."""
    t5 = load_text_encoder(
        files["t5_fp8"], "T5EncoderModel", dtype=torch.bfloat16, fp8_storage=False
    )
    assert t5.dtype == torch.bfloat16
    name = "encoder.block.0.layer.0.SelfAttention.q.weight"
    with safe_open(str(files["t5_fp8"]), framework="pt") as file:
        stored = file.get_tensor(name)
    assert stored.dtype == torch.float8_e4m3fn
    assert torch.equal(t5.state_dict()[name], stored.to(torch.bfloat16))

    vl = load_text_encoder(
        files["vl_fp8"],
        "Qwen2_5_VLForConditionalGeneration",
        dtype=torch.float32,
        fp8_storage=False,
    )
    name = "model.layers.0.mlp.up_proj.weight"
    with safe_open(str(files["vl_fp8"]), framework="pt") as file:
        expected = file.get_tensor(name).float() * file.get_tensor(
            "model.layers.0.mlp.up_proj.scale_weight"
        )
    assert torch.equal(
        vl.state_dict()["model.language_model.layers.0.mlp.up_proj.weight"], expected
    )

    with torch.no_grad():
        for model, reference, ids in (
            (t5, tiny.tiny_t5(), T5_IDS),
            (vl, tiny.tiny_qwen25_vl(), QWEN_IDS),
        ):
            ours = model(input_ids=ids, output_hidden_states=True).hidden_states[-1].float()
            theirs = reference(input_ids=ids, output_hidden_states=True).hidden_states[-1]
            similarity = torch.nn.functional.cosine_similarity(
                ours.flatten(), theirs.flatten(), dim=0
            )
            assert similarity > 0.99


def test_a_file_with_several_encoders(tmp_path: Path) -> None:
    parts = {
        "text_encoders.clip_l.transformer.": tiny.write_tiny_clip(
            tmp_path / "l.safetensors", width=32
        ),
        "text_encoders.clip_g.transformer.": tiny.write_tiny_clip(
            tmp_path / "g.safetensors", width=48
        ),
        "text_encoders.t5xxl.transformer.": tiny.write_tiny_t5(tmp_path / "t.safetensors"),
    }
    state = {"model.diffusion_model.x_embedder.proj.weight": torch.zeros(8, 16)}
    for prefix, part in parts.items():
        with safe_open(str(part), framework="pt") as file:
            state |= {prefix + name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    path = tmp_path / "sd3_medium_incl_clips_t5xxlfp8.safetensors"
    save_file(state, str(path))
    _, shapes, _ = read_header(path)
    assert identify_text_encoder(shapes) is None
    assert sorted((prefix, info.width) for prefix, info in find_text_encoders(shapes)) == sorted(
        zip(parts, (32, 48, 96), strict=True)
    )
    with pytest.raises(ModelError, match="several CLIP text encoders"):
        load_text_encoder(path, "CLIPTextModel", dtype=torch.float32)
    clip_g = load_text_encoder(
        path,
        "CLIPTextModelWithProjection",
        dtype=torch.float32,
        prefix="text_encoders.clip_g.transformer.",
    )
    assert hidden_states_equal(clip_g, tiny.tiny_clip(width=48), input_ids=CLIP_IDS)
    t5 = load_text_encoder(path, "T5EncoderModel", dtype=torch.float32)
    assert hidden_states_equal(t5, tiny.tiny_t5(), input_ids=T5_IDS)


def test_bad_files_are_refused_with_a_reason(files: dict[str, Path], tmp_path: Path) -> None:
    with safe_open(str(files["clip_l"]), framework="pt") as file:
        state = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118

    missing = tmp_path / "missing.safetensors"
    save_file(
        {k: v for k, v in state.items() if not k.endswith("layers.0.self_attn.k_proj.bias")},
        str(missing),
    )
    with pytest.raises(ModelError, match=r"lacks 1 of the .*self_attn\.k_proj\.bias"):
        load_text_encoder(missing, "CLIPTextModel", dtype=torch.float32)
    no_fc1 = tmp_path / "no_fc1.safetensors"
    save_file({k: v for k, v in state.items() if "mlp.fc1" not in k}, str(no_fc1))
    with pytest.raises(
        ModelError, match=r"incomplete .* has no text_model\.encoder\.layers\.0\.mlp\.fc1"
    ):
        load_text_encoder(no_fc1, "CLIPTextModel", dtype=torch.float32)

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(files["clip_l"].read_bytes()[:200_000])
    with pytest.raises(ModelError, match="truncated"):
        load_text_encoder(truncated, "CLIPTextModel", dtype=torch.float32)

    pickle = tmp_path / "clip_l.ckpt"
    torch.save(state, pickle)
    with pytest.raises(ModelError, match="pickle"):
        load_text_encoder(pickle, "CLIPTextModel", dtype=torch.float32)
    disguised = tmp_path / "disguised.safetensors"
    disguised.write_bytes(pickle.read_bytes())
    with pytest.raises(ModelError, match="pickle"):
        load_text_encoder(disguised, "CLIPTextModel", dtype=torch.float32)

    lora = tmp_path / "lora.safetensors"
    save_file(
        {
            "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 32),
            "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(128, 4),
        },
        str(lora),
    )
    vae = tmp_path / "ae.safetensors"
    save_file(
        {
            "encoder.conv_in.weight": torch.zeros(8, 3, 3, 3),
            "decoder.conv_out.weight": torch.zeros(3, 8, 3, 3),
        },
        str(vae),
    )
    for path, what in ((lora, "a LoRA"), (vae, "a VAE")):
        assert inspect_text_encoder(path) is None
        with pytest.raises(ModelError, match=f"is not a T5 text encoder: it is {what}"):
            load_text_encoder(path, "T5EncoderModel", dtype=torch.float32)

    with pytest.raises(
        ModelError, match=r"not a Qwen3 text encoder: it is a T5 \(width 96\) text encoder"
    ):
        load_text_encoder(files["t5"], "Qwen3Model", dtype=torch.float32)
    with pytest.raises(ModelError, match="cannot build text encoders of class GPT2Model"):
        load_text_encoder(files["t5"], "GPT2Model", dtype=torch.float32)

    extra = tmp_path / "extra.safetensors"
    save_file(
        state | {"text_model.encoder.layers.0.self_attn.rotary.weight": torch.zeros(2)}, str(extra)
    )
    with pytest.raises(ModelError, match=r"holds 1 tensors a CLIPTextModel does not have"):
        load_text_encoder(extra, "CLIPTextModel", dtype=torch.float32)

    packed = tmp_path / "nvfp4.safetensors"
    save_file(
        state
        | {"text_model.encoder.layers.0.mlp.fc2.weight": torch.zeros(32, 64, dtype=torch.uint8)},
        str(packed),
    )
    with pytest.raises(ModelError, match="U8, a packed quantized format"):
        load_text_encoder(packed, "CLIPTextModel", dtype=torch.float32)
