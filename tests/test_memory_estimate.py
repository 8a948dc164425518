"""The memory a model needs, read from its files before loading: the arithmetic on
headers of real sizes, tiny files of every kind checked against the loaded weights,
the verdict for this computer, the refusal, and the number format per family."""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path

import pytest
import torch

from sdstudio.engine.devices import DeviceConfig, choose_device
from sdstudio.engine.errors import OutOfMemory
from sdstudio.engine.memory import (
    Fit,
    Machine,
    fit,
    plan_before_loading,
    plan_memory,
    ram_available,
    refusal,
    weights_bytes,
)
from sdstudio.engine.memory_estimate import (
    GB,
    MemoryEstimate,
    activation_bytes,
    estimate_model,
    file_bytes,
    header_bytes,
    stays_fp8,
    tensor_bytes,
    weight_files,
)
from sdstudio.engine.models.split_layout import assemble, complete, transformer_part
from sdstudio.engine.precision import cpu_has_bf16, family_precision, model_precision

X86_FLAGS = "flags\t\t: fpu vme de pse tsc msr pae avx2 avx512f avx512bw"
ARM_FEATURES = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics"


def header_of(model: torch.nn.Module, dtype: str = "BF16") -> dict[str, dict[str, object]]:
    """A safetensors header listing a model's tensors, as a file of ``dtype`` holds them."""
    return {
        name: {"dtype": dtype, "shape": list(t.shape)} for name, t in model.state_dict().items()
    }


@pytest.fixture(scope="module")
def flux_dev_headers() -> dict[str, dict[str, dict[str, object]]]:
    """Headers with the shapes of the released Flux.1 dev files (built on the meta device)."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    vae_config = json.loads(
        (Path("resources/model_configs/flux1-dev/vae/config.json")).read_text("utf-8")
    )
    with torch.device("meta"):
        transformer = diffusers.FluxTransformer2DModel(guidance_embeds=True)
        t5 = T5EncoderModel(
            T5Config(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24,
                     feed_forward_proj="gated-gelu", vocab_size=32128)
        )  # fmt: skip
        clip = CLIPTextModel(
            CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, projection_dim=768)
        )  # fmt: skip
        vae = diffusers.AutoencoderKL.from_config(vae_config)
    return {
        "transformer": header_of(transformer),
        "text_encoder": header_of(clip),
        "text_encoder_2": {k: v for k, v in header_of(t5).items() if "embed_tokens" not in k},
        "vae": header_of(vae, "F32"),
    }


def test_tensor_bytes_follow_the_compute_dtype_except_integers() -> None:
    assert tensor_bytes("F8_E4M3", (3072, 3072), 2) == 3072 * 3072 * 2  # fp8 upcast
    assert tensor_bytes("F32", (10, 4), 2) == 80
    assert tensor_bytes("BF16", (10, 4), 4) == 160
    assert tensor_bytes("I64", (1, 77), 2) == 77 * 8
    header = {
        "__metadata__": {"format": "pt"},
        "model.diffusion_model.a": {"dtype": "F16", "shape": [4, 4]},
        "model_ema.a": {"dtype": "F16", "shape": [4, 4]},
        "first_stage_model.b": {"dtype": "F32", "shape": [2]},
    }
    assert header_bytes(header, 2) == (16 + 16 + 2) * 2
    assert header_bytes(header, 4, "model.diffusion_model.") == 64
    assert header_bytes(header, 2, exclude=("model_ema.",)) == 36


def test_flux_dev_at_real_size_and_the_verdict_for_three_computers(flux_dev_headers) -> None:
    sizes = {name: header_bytes(h, 2) for name, h in flux_dev_headers.items()}
    assert 23.5 * GB < sizes["transformer"] < 24.0 * GB  # 11.9 B parameters
    assert 9.4 * GB < sizes["text_encoder_2"] < 9.6 * GB  # T5-XXL, 4.76 B
    fp8 = {k: {**v, "dtype": "F8_E4M3"} for k, v in flux_dev_headers["transformer"].items()}
    assert header_bytes(fp8, 2) == sizes["transformer"]  # fp8 upcast without fp8 storage
    assert header_bytes(flux_dev_headers["transformer"], 4) == 2 * sizes["transformer"]
    estimate = MemoryEstimate(
        tuple(sizes.items()), activation_bytes(1024, 2), activation_bytes(1024, 2, tiled=True),
        "bfloat16", 1024, family_id="flux1",
    )  # fmt: skip
    assert 33.5 * GB < estimate.weights < 34.0 * GB
    assert estimate.largest == sizes["transformer"]
    laptop = Machine("cpu", None, int(22.1 * GB))
    assert fit(estimate, laptop) is Fit.NO
    message = refusal("flux1-dev", estimate, laptop)
    assert message.startswith(f"flux1-dev needs about {estimate.total / GB:.1f} GB in bfloat16")
    assert "this computer has 22.1 GB of memory available" in message
    assert message.endswith(
        ": use a GGUF (quantized) version of its transformer, or close other programs."
    )
    gaming = Machine("cuda", int(23 * GB), int(60 * GB))
    assert fit(estimate, gaming) is Fit.OFFLOAD
    planned = plan_memory(
        "auto", "cuda", estimate.weights, gaming.vram,
        largest=estimate.largest, headroom=estimate.activations,
        tiled_headroom=estimate.tiled_activations,
    )  # fmt: skip
    assert planned.offload == "group"  # the transformer alone is larger than the GPU
    assert fit(estimate, Machine("cuda", int(80 * GB), int(60 * GB))) is Fit.FITS
    assert fit(estimate, Machine("cuda", int(23 * GB), int(16 * GB))) is Fit.NO


def test_activations_grow_with_the_area_and_dtype() -> None:
    assert activation_bytes(1024, 2) > 3 * activation_bytes(512, 2) // 2
    assert activation_bytes(1024, 4) > activation_bytes(1024, 2)
    assert activation_bytes(1024, 2, tiled=True) < activation_bytes(1024, 2)


def test_a_diffusers_folder_estimate_is_its_loaded_weights(tiny_model: Path) -> None:
    from diffusers import DiffusionPipeline

    estimate = estimate_model(tiny_model, "float32")
    assert estimate.certain and estimate.size == 512
    assert {name for name, _ in estimate.components} == {"unet", "vae", "text_encoder"}
    pipe = DiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
    assert estimate.weights == weights_bytes(pipe)
    half = estimate_model(tiny_model, "float16")
    assert half.weights == estimate.weights // 2


def test_variant_files_are_counted_only_without_plain_ones(tmp_path: Path) -> None:
    for name in ("model.safetensors", "model.fp16.safetensors", "config.json"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in weight_files(tmp_path)] == ["model.safetensors"]
    (tmp_path / "model.safetensors").unlink()
    assert [p.name for p in weight_files(tmp_path)] == ["model.fp16.safetensors"]


@pytest.fixture(scope="module")
def comfy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdstudio.testing.tiny_split import save_tiny_comfyui_model

    root = tmp_path_factory.mktemp("ComfyUI")
    save_tiny_comfyui_model(root, "flux1")
    save_tiny_comfyui_model(root, "flux1", name="tiny-dev", gguf="Q8_0", guidance_embeds=True)
    return root


@pytest.mark.parametrize("name", ["tiny-flux1.safetensors", "tiny-dev-Q8_0.gguf"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_split_model_estimate_is_its_assembled_weights(
    comfy: Path, name: str, dtype: torch.dtype
) -> None:
    """Transformer (GGUF kept quantized), text encoders and VAE found as the engine finds them."""
    path = comfy / "models" / "diffusion_models" / name
    precision = str(dtype).removeprefix("torch.")
    estimate = estimate_model(path, precision)
    assert estimate.certain and estimate.size == 1024
    assert [n for n, _ in estimate.components] == [
        "transformer", "text_encoder", "text_encoder_2", "vae"
    ]  # fmt: skip
    split = complete(path, transformer_part(path), (), "")  # type: ignore[arg-type]
    assert estimate_model(path, precision, split=split) == estimate
    pipe = assemble(split, dtype=dtype)
    loaded = weights_bytes(pipe)
    # Only small tensors the loaders drop or keep as buffers differ (CLIP-L's projection).
    assert 0 <= estimate.weights - loaded < loaded / 1000
    if name.endswith(".gguf"):
        layout_bytes = file_bytes(path, 2)
        assert layout_bytes < header_bytes(
            {k: {"dtype": "F32", "shape": list(v.shape)} for k, v in
             pipe.transformer.state_dict().items()}, 2
        )  # fmt: skip


def test_fp8_linear_weights_count_one_byte_where_they_stay_fp8(flux_dev_headers) -> None:
    assert tensor_bytes("F8_E4M3", (3072, 3072), 2, kept_fp8=True) == 3072 * 3072
    assert tensor_bytes("BF16", (3072, 3072), 4, kept_fp8=True) == 3072 * 3072 * 4
    assert stays_fp8("double_blocks.0.img_attn.qkv.weight", "F8_E4M3", (9216, 3072))
    assert stays_fp8("encoder.block.0.layer.1.DenseReluDense.wo.weight", "F8_E5M2", (4, 8))
    assert not stays_fp8("double_blocks.0.img_attn.qkv.bias", "F8_E4M3", (9216,))
    assert not stays_fp8("double_blocks.0.img_attn.qkv.weight", "BF16", (9216, 3072))
    for table in ("shared", "encoder.embed_tokens", "model.embed_tokens", "token_embedding"):
        assert not stays_fp8(f"{table}.weight", "F8_E4M3", (32128, 4096))
    # Released sizes: every tensor of these headers marked fp8, only linear weights kept.
    fp8 = {
        name: {k: {**v, "dtype": "F8_E4M3"} for k, v in header.items()}
        for name, header in flux_dev_headers.items()
    }
    transformer = header_bytes(fp8["transformer"], 2, fp8_storage=True)
    assert 11.8 * GB < transformer < 12.0 * GB  # 24 GB in bfloat16
    assert header_bytes(fp8["transformer"], 4, fp8_storage=True) < transformer * 1.01
    t5 = header_bytes(fp8["text_encoder_2"], 2, fp8_storage=True)
    assert 4.85 * GB < t5 < 4.95 * GB  # its embedding (0.26 GB) in bfloat16


@pytest.fixture(scope="module")
def comfy_fp8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ComfyUI tree with a tiny Flux.1 of fp8 parts: a scaled fp8 transformer and a
    plain fp8 T5."""
    from sdstudio.testing.tiny_denoiser_files import build_tiny_denoiser, write_denoiser_file
    from sdstudio.testing.tiny_split import save_tiny_comfyui_model
    from sdstudio.testing.tiny_text_encoder_files import write_fp8

    root = tmp_path_factory.mktemp("ComfyUI")
    path = save_tiny_comfyui_model(root, "flux1", name="tiny-fp8")
    model = build_tiny_denoiser("flux1")
    write_denoiser_file(path, "flux1", model, prefix="model.diffusion_model.", fp8="scaled")
    encoders = root / "models" / "text_encoders"
    write_fp8(encoders / "t5xxl_fp16.safetensors", encoders / "t5xxl_fp8_e4m3fn.safetensors")
    (encoders / "t5xxl_fp16.safetensors").unlink()
    return path


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_fp8_split_model_estimate_is_its_assembled_weights(
    comfy_fp8: Path, dtype: torch.dtype
) -> None:
    """fp8 weights kept fp8 count one byte, as loaded; upcast ones the compute dtype's."""
    from sdstudio.engine.parts.denoisers import load_denoiser
    from sdstudio.engine.parts.text_encoders import load_text_encoder

    precision = str(dtype).removeprefix("torch.")
    estimate = estimate_model(comfy_fp8, precision)
    assert estimate.certain
    split = complete(comfy_fp8, transformer_part(comfy_fp8), (), "")  # type: ignore[arg-type]
    pipe = assemble(split, dtype=dtype)
    assert pipe.transformer.proj_out.weight.dtype == torch.float8_e4m3fn
    loaded = weights_bytes(pipe)
    assert 0 <= estimate.weights - loaded < loaded / 1000
    kept = sum(
        p.numel()
        for component in (pipe.transformer, pipe.text_encoder_2)
        for p in component.parameters()
        if p.dtype == torch.float8_e4m3fn
    )
    upcast = estimate_model(comfy_fp8, precision, fp8_storage=False)
    assert upcast.weights - estimate.weights == kept * (dtype.itemsize - 1)
    t5 = split.text_encoders[1]
    assert t5 is not None
    parts = {
        "transformer": load_denoiser(comfy_fp8, dtype=dtype, fp8_storage=False),
        "text_encoder_2": load_text_encoder(t5, "T5EncoderModel", dtype=dtype, fp8_storage=False),
    }
    full = weights_bytes(type(pipe)(**{**pipe.components, **parts}))
    assert 0 <= upcast.weights - full < full / 1000


def test_unreadable_and_pickled_files_leave_the_estimate_uncertain(
    tmp_path: Path, tiny_model: Path
) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(struct.pack("<Q", 10_000) + b"{}")
    pickled = tmp_path / "old.ckpt"
    pickled.write_bytes(b"x" * 1000)
    for path in (broken, pickled):
        estimate = estimate_model(path, "float32")
        assert not estimate.certain and estimate.weights == path.stat().st_size
        config = choose_device("cpu")
        assert plan_before_loading("auto", config, path, path.stem) is None
    partial = shutil.copytree(tiny_model, tmp_path / "downloading")
    for weights in (partial / "unet").glob("*.safetensors"):
        weights.unlink()
    estimate = estimate_model(partial, "float32")
    assert estimate.unknown == ("unet (no weight files)",)
    assert {name for name, _ in estimate.components} == {"vae", "text_encoder"}


def write_huge_checkpoint(path: Path, data_bytes: int) -> None:
    """An SD 1.x-like safetensors checkpoint declaring ``data_bytes`` of weights, written
    as a sparse file: its header is real, its data takes no disk space."""
    header = {
        "model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3],
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": [768],
    }
    entries, offset = {}, 0
    for name, shape in header.items():
        size = 2 * int(torch.Size(shape).numel())
        entries[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    rest = (data_bytes - offset) // 2
    entries["model.diffusion_model.out.2.weight"] = {
        "dtype": "F16", "shape": [rest], "data_offsets": [offset, offset + 2 * rest],
    }  # fmt: skip
    raw = json.dumps(entries).encode()
    with path.open("wb") as file:
        file.write(struct.pack("<Q", len(raw)) + raw)
        file.truncate(8 + len(raw) + offset + 2 * rest)


@pytest.mark.skipif(sys.platform == "win32", reason="sparse files")
def test_a_model_larger_than_this_computer_is_refused_before_loading(tmp_path: Path) -> None:
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.engine.request import Mode

    available = ram_available()
    if available is None or available > 1.5e12:
        pytest.skip("this computer's free memory is unknown or larger than the test model")
    model = tmp_path / "enormous.safetensors"
    write_huge_checkpoint(model, 2 * 10**12)  # 2 TB of fp16, 4 TB in float32
    estimate = estimate_model(model, "float32")
    assert estimate.certain and estimate.weights == 4 * 10**12
    manager = PipelineManager(choose_device("cpu"))
    with pytest.raises(
        OutOfMemory, match=r"enormous needs about 4\d{3}\.\d GB in float32; "
    ) as refused:
        manager.pipeline(str(model), Mode.TXT2IMG)
    assert "GB of memory available: use a smaller model, run it in bfloat16" in str(refused.value)
    assert manager.model is None


def test_the_plan_is_logged_and_told_where_it_slows_the_model(
    tiny_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sdstudio.engine.memory import MemoryPlan, describe
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.engine.request import Mode

    said: list[str] = []
    manager = PipelineManager(choose_device("cpu"))
    with caplog.at_level("INFO", logger="sdstudio.engine.memory"):
        manager.pipeline(str(tiny_model), Mode.TXT2IMG, said.append)
    assert said == ["Loading tiny-sd…"]  # all in main memory at full speed: nothing to tell
    assert "Loading tiny-sd: needs about " in caplog.text and "all on the device" in caplog.text
    assert manager.memory_plan.reason.startswith("cpu")
    estimate = estimate_model(tiny_model, "float16")
    gpu = Machine("cuda", 3 * GB, 32 * GB)
    told = describe("tiny-sd", estimate, gpu, MemoryPlan("group", True, True))
    assert told.startswith(f"Loading tiny-sd: needs about {estimate.total / GB:.1f} GB, 3.0 GB")
    assert told.endswith("free; layers stream to the GPU.")


def test_ram_from_meminfo() -> None:
    text = "MemTotal:       32000000 kB\nMemFree:  100 kB\nMemAvailable:   22100000 kB\n"
    assert ram_available(text) == 22_100_000 * 1024
    assert ram_available("MemTotal: 5 kB\n") is None
    measured = ram_available()
    assert measured is None or measured > 0


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [
        (X86_FLAGS, False),
        (X86_FLAGS + " avx512_bf16 avx512_vnni", True),  # Cooper Lake, Zen 4
        (X86_FLAGS + " amx_bf16 amx_tile", True),  # Sapphire Rapids
        (ARM_FEATURES, False),
        (ARM_FEATURES + " bf16 i8mm", True),  # Graviton 3, Apple M2 under Linux
        ("model name : something with bf16 in its name", False),
        ("", False),
    ],
)
def test_native_bf16_is_told_from_cpuinfo(cpuinfo: str, native: bool) -> None:
    assert cpu_has_bf16("processor\t: 0\n" + cpuinfo + "\n") is native


def test_precision_per_family_and_the_users_choice_wins() -> None:
    cpu = choose_device("cpu")
    flow = "bfloat16" if cpu_has_bf16() else "float32"
    assert family_precision(cpu, "flux1").precision == flow
    assert family_precision(cpu, "qwen-image").precision == flow
    assert family_precision(family_precision(cpu, "flux1"), "sd1").precision == "float32"
    assert family_precision(cpu, "sdxl") == cpu
    chosen = choose_device("cpu", "float32")
    assert family_precision(chosen, "flux1").precision == "float32"
    assert family_precision(choose_device("cpu", "bfloat16"), "sd1").precision == "bfloat16"
    gpu = DeviceConfig("cuda", "float16")
    assert family_precision(gpu, "sdxl").precision == "float16"
    cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported(False)
    assert family_precision(gpu, "flux1").precision == ("bfloat16" if cuda_bf16 else "float16")


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_a_flow_folder_loads_and_records_its_family_precision(
    tmp_path: Path, tiny_model: Path
) -> None:
    from sdstudio.engine.generation import Engine
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.engine.request import GenerationRequest
    from sdstudio.testing.tiny_flow import save_tiny_flux

    flux = save_tiny_flux(tmp_path / "tiny-flux")
    cpu = choose_device("cpu")
    expected = "bfloat16" if cpu_has_bf16() else "float32"
    assert model_precision(cpu, flux).precision == expected
    assert model_precision(cpu, tiny_model).precision == "float32"
    engine = Engine(PipelineManager(cpu), tmp_path / "inputs")
    request = GenerationRequest(
        model=str(flux), prompt="a red boat", steps=2, width=64, height=64, seed=5,
        sampler="Euler", schedule="Simple", guidance_scale=1.0,
    )  # fmt: skip
    first = next(engine.generate(request))
    assert engine.pipelines.pipeline(str(flux), request.mode).transformer.dtype == getattr(
        torch, expected
    )
    assert first.record.device == f"cpu ({expected})"
    again = next(engine.generate(request))
    assert first.image.tobytes() == again.image.tobytes()
    sd_request = GenerationRequest(
        model=str(tiny_model), prompt="a boat", steps=2, width=64, height=64
    )
    sd = next(engine.generate(sd_request))
    assert sd.record.device == "cpu (float32)"
