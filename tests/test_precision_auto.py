"""The precision ``auto`` picks on the CPU for Stable Diffusion models, recorded and used
again on a re-run; the guarded, tiled VAE decode on the CPU."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from sdstudio.cli import main
from sdstudio.engine import precision
from sdstudio.engine.devices import DeviceConfig, choose_device
from sdstudio.engine.errors import DeviceError
from sdstudio.engine.precision import (
    SD_CPU_PRECISION,
    auto_precision,
    cpu_bf16_feature,
    family_precision,
    recorded_precision,
    rerun_device,
    sd_cpu_precision,
)
from sdstudio.engine.vae import guard_cpu_decode

FLAGS = "flags\t\t: fpu sse2 avx2 avx512f"


@pytest.fixture
def cpu_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU with AMX, the tests' pin of float32 lifted."""
    monkeypatch.delenv(SD_CPU_PRECISION, raising=False)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda cpuinfo=None: True)
    monkeypatch.setattr(precision, "_linux_cpu_bf16_feature", lambda: "AMX")


@pytest.fixture
def cpu_without_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SD_CPU_PRECISION, raising=False)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda cpuinfo=None: False)
    monkeypatch.setattr(precision, "_linux_cpu_bf16_feature", lambda: "")


@pytest.mark.parametrize(
    ("flags", "feature"),
    [
        (FLAGS, ""),
        (FLAGS + " avx512_bf16 amx_bf16 amx_tile", "AMX"),
        (FLAGS + " avx512_bf16", "AVX512-BF16"),
        ("Features\t: fp asimd bf16 i8mm", "Arm BF16"),
    ],
)
def test_the_cpus_bfloat16_feature_is_named(flags: str, feature: str) -> None:
    assert cpu_bf16_feature(f"processor\t: 0\n{flags}\n") == feature


def test_auto_picks_bfloat16_for_sd_models_on_a_cpu_with_it(cpu_bf16: None) -> None:
    cpu = choose_device("cpu")
    for family in ("", "sd1", "sd2", "sdxl", "flux1"):
        assert family_precision(cpu, family).precision == "bfloat16"
    assert sd_cpu_precision() == ("bfloat16", "the CPU has AMX")
    assert auto_precision("cpu") == "bfloat16: the CPU has AMX"
    assert family_precision(choose_device("cpu", "float32"), "sd1").precision == "float32"
    # A re-run of an image recorded without a precision: SD in float32, flow as before.
    legacy = DeviceConfig("cpu", "float32", cpu_bf16_unet=False)
    assert family_precision(legacy, "sd1").precision == "float32"
    assert family_precision(legacy, "flux1").precision == "bfloat16"
    assert family_precision(DeviceConfig("cuda", "float16"), "sd1").precision == "float16"


def test_auto_keeps_float32_on_a_cpu_without_bfloat16(
    cpu_without_bf16: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu = choose_device("cpu")
    assert family_precision(cpu, "sd1").precision == "float32"
    assert family_precision(cpu, "flux1").precision == "float32"
    assert auto_precision("cpu") == "float32: the CPU has no native bfloat16"
    monkeypatch.setenv(SD_CPU_PRECISION, "bfloat16")  # for SD models only
    assert family_precision(cpu, "sd1").precision == "bfloat16"
    assert family_precision(cpu, "flux1").precision == "float32"


def test_the_environment_sets_the_cpus_choice(
    cpu_bf16: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SD_CPU_PRECISION, "float32")
    assert family_precision(choose_device("cpu"), "sd1").precision == "float32"
    assert family_precision(choose_device("cpu"), "flux1").precision == "bfloat16"
    assert auto_precision("cpu") == (
        f"float32: set by {SD_CPU_PRECISION}; flow-matching models in bfloat16"
    )
    monkeypatch.setenv(SD_CPU_PRECISION, "half")
    with pytest.raises(DeviceError, match="set it to float32 or bfloat16"):
        family_precision(choose_device("cpu"), "sd1")


def test_a_rerun_uses_the_recorded_precision(cpu_bf16: None) -> None:
    assert recorded_precision("cpu (bfloat16)") == ("cpu", "bfloat16")
    assert recorded_precision("cuda (float16)") == ("cuda", "float16")
    for nothing in ("", "cpu", "cpu (auto)", "cpu (int8)", "(float32)"):
        assert recorded_precision(nothing) is None
    cpu = choose_device("cpu")
    old = rerun_device(cpu, "cpu (float32)")
    assert family_precision(old, "sd1").precision == "float32"
    assert family_precision(old, "flux1").precision == "float32"
    assert family_precision(rerun_device(cpu, "cpu (bfloat16)"), "sd1").precision == "bfloat16"
    foreign = rerun_device(cpu, "")  # another tool's image: SD as before, flow as before
    assert family_precision(foreign, "sd1").precision == "float32"
    assert family_precision(foreign, "flux1").precision == "bfloat16"
    elsewhere = rerun_device(cpu, "cuda (float16)")  # made on a GPU: this CPU's choice
    assert family_precision(elsewhere, "sd1").precision == "bfloat16"
    chosen = choose_device("cpu", "bfloat16")
    assert rerun_device(chosen, "cpu (float32)") == chosen  # the user's choice wins


def test_sd_runs_in_bfloat16_channels_last_records_it_and_repeats(
    cpu_bf16: None, tiny_model: Path, tmp_path: Path
) -> None:
    from sdstudio.engine.generation import Engine
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.engine.request import GenerationRequest

    engine = Engine(PipelineManager(choose_device("cpu")), tmp_path / "inputs")
    request = GenerationRequest(
        model=str(tiny_model), prompt="a boat", steps=1, width=64, height=64, seed=3
    )
    first = next(engine.generate(request))
    pipe = engine.pipelines.pipeline(str(tiny_model), request.mode)
    assert {pipe.unet.dtype, pipe.vae.dtype, pipe.text_encoder.dtype} == {torch.bfloat16}
    conv = pipe.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert first.record.device == "cpu (bfloat16)"
    assert first.image.tobytes() == next(engine.generate(request)).image.tobytes()


@pytest.mark.slow  # four generations, each loading the model
def test_cli_rerun_is_exact_in_the_recorded_precision(
    cpu_bf16: None, capsys, tiny_model: Path, tmp_path: Path
) -> None:
    def run(*args: str) -> Path:
        assert main([*args, "--out", str(tmp_path / "out"), "--json"]) == 0
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return Path(next(e["path"] for e in events if e["event"] == "image"))

    def device(path: Path) -> str:
        with Image.open(path) as image:
            return json.loads(image.info["sdstudio"])["device"]

    made = {}
    for chosen in ("auto", "float32"):
        made[chosen] = run(
            "generate", "--model", str(tiny_model), "--prompt", "a boat", "--steps", "2",
            "--width", "64", "--height", "64", "--seed", "4", "--precision", chosen,
        )  # fmt: skip
    assert device(made["auto"]) == "cpu (bfloat16)"
    assert device(made["float32"]) == "cpu (float32)"
    for path in made.values():
        again = run("rerun", str(path))  # auto: the recorded precision
        assert device(again) == device(path)
        with Image.open(path) as image, Image.open(again) as redone:
            assert image.tobytes() == redone.tobytes()


def test_cli_info_without_an_image_tells_the_precision(cpu_bf16: None, capsys) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "Device: cpu" in out or "Device: cuda" in out or "Device: mps" in out
    if "Device: cpu" in out:
        assert "Precision (auto): bfloat16: the CPU has AMX" in out


def _tiny_vae(dtype: torch.dtype) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    return vae.eval().to(dtype)


def test_a_nan_in_a_bfloat16_decode_decodes_again_in_float32(caplog) -> None:
    vae = _tiny_vae(torch.bfloat16)
    reference = copy.deepcopy(vae).to(torch.float32)

    def overflow(module, inputs, output):  # what bfloat16 alone would do
        return output * float("nan") if output.dtype == torch.bfloat16 else output

    vae.post_quant_conv.register_forward_hook(overflow)
    guard_cpu_decode(vae)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    latents = latents.to(torch.bfloat16)
    with caplog.at_level(logging.INFO), torch.inference_mode():
        first = vae.decode(latents).sample
        second = vae.decode(latents).sample
        expected = reference.decode(latents.float()).sample
    assert first.dtype == torch.float32 and torch.equal(first, expected)
    assert torch.equal(first, second)
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "sdstudio.engine.vae"
    ]
    assert len(warnings) == 1 and "decoding again in float32" in warnings[0].getMessage()
    assert vae.dtype == torch.bfloat16  # the float32 copy is dropped


def test_large_images_decode_in_tiles_and_copies_keep_the_guard() -> None:
    vae = _tiny_vae(torch.float32)
    plain = copy.deepcopy(vae)
    guard_cpu_decode(vae, large_pixels=32 * 32)
    guard_cpu_decode(vae, large_pixels=32 * 32)  # once is enough
    small = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    large = torch.randn(1, 4, 20, 20, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert torch.equal(vae.decode(small).sample, plain.decode(small).sample)
        tiled = vae.decode(large).sample
        assert vae.use_tiling is False  # encodes stay whole
        assert torch.equal(tiled, vae.decode(large).sample)  # tiles are deterministic
        assert not torch.equal(tiled, plain.decode(large).sample)
        copied = copy.deepcopy(vae)
        assert copied.decode.__self__ is copied  # the guard, bound to the copy
        assert torch.equal(copied.decode(large).sample, tiled)


def test_only_sd_pipelines_in_bfloat16_go_channels_last() -> None:
    from types import SimpleNamespace

    from sdstudio.engine.precision import cpu_layout

    def laid_out(unet: object, dtype: torch.dtype, device: str = "cpu") -> bool:
        vae = _tiny_vae(dtype)
        cpu_layout(SimpleNamespace(unet=unet, vae=vae), DeviceConfig(device, "x"))
        assert hasattr(vae, "_sdstudio_tiling") is (device == "cpu")  # the guard
        return vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)

    unet = _tiny_vae(torch.bfloat16)  # a model in bfloat16 standing for the UNet
    assert laid_out(unet, torch.bfloat16)
    assert unet.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not laid_out(unet, torch.float32)  # float32 keeps the layout of its images
    assert not laid_out(None, torch.bfloat16)  # a flow family's VAE too
    assert not laid_out(unet, torch.bfloat16, "cuda")
