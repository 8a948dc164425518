"""The CUDA fast path, checked on the CPU: the precision by the GPU's capability, fused
attention, channels-last, TF32, no attention slicing, and what ``info`` says."""

from __future__ import annotations

import pytest
import torch

from sdstudio.engine import cuda_path, precision
from sdstudio.engine.cuda_path import (
    Gpu,
    attention_kernel,
    cuda_layout,
    describe_fast_path,
    sd_gpu_precision,
    use_fused_attention,
)
from sdstudio.engine.devices import DeviceConfig
from sdstudio.engine.memory import plan_memory

GIB = 1024**3
A100 = Gpu("NVIDIA A100-SXM4-80GB", (8, 0))
GTX_1660 = Gpu("NVIDIA GeForce GTX 1660 SUPER", (7, 5))
RTX_2080 = Gpu("NVIDIA GeForce RTX 2080", (7, 5))


@pytest.mark.parametrize(
    ("gpu", "expected"),
    [(A100, "float16"), (RTX_2080, "float16"), (GTX_1660, "float32"), (None, "float16")],
)
def test_sd_models_keep_half_precision_but_on_gtx_16_cards(gpu: Gpu, expected: str) -> None:
    chosen, why = sd_gpu_precision(gpu)
    assert chosen == expected
    if expected == "float32":
        assert "GTX 1660" in why and "black" in why


@pytest.mark.parametrize(
    ("gpu", "bf16", "family", "expected"),
    [
        (A100, True, "sd1", "float16"),
        (A100, True, "flux1", "bfloat16"),
        (RTX_2080, False, "flux1", "float16"),
        (GTX_1660, False, "sdxl", "float32"),
    ],
)
def test_the_cuda_precision_follows_the_gpu_and_the_family(
    monkeypatch: pytest.MonkeyPatch, gpu: Gpu, bf16: bool, family: str, expected: str
) -> None:
    monkeypatch.setattr(cuda_path, "current_gpu", lambda: gpu)
    monkeypatch.setattr(precision, "bf16_native", lambda device: bf16)
    config = DeviceConfig("cuda", "float16")
    assert precision.family_precision(config, family).precision == expected
    chosen = DeviceConfig("cuda", "float32", chosen_precision="float32")
    assert precision.family_precision(chosen, family).precision == "float32"


def test_the_attention_kernel_is_named_by_capability_and_precision() -> None:
    assert attention_kernel(A100, "bfloat16").startswith("FlashAttention")
    assert attention_kernel(A100, "float32").startswith("memory-efficient")
    assert attention_kernel(RTX_2080, "float16").startswith("memory-efficient")


def test_describe_fast_path_names_what_runs_only_on_cuda(monkeypatch) -> None:
    assert describe_fast_path(DeviceConfig("cpu", "float32")) == ""
    monkeypatch.setattr(cuda_path, "current_gpu", lambda: A100)
    said = describe_fast_path(DeviceConfig("cuda", "float16", compile=True))
    assert said.startswith("FlashAttention (PyTorch SDPA)")
    assert "TF32" in said and said.endswith("compiled denoiser")
    monkeypatch.setattr(cuda_path, "current_gpu", lambda: RTX_2080)
    assert "TF32" not in describe_fast_path(DeviceConfig("cuda", "float16"))


def _tiny_pipe(dtype: torch.dtype):
    from sdstudio.testing import build_tiny_pipeline

    return build_tiny_pipeline().to(dtype=dtype)


def test_older_attention_processors_are_replaced_by_fused_ones_with_the_same_result() -> None:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    pipe = _tiny_pipe(torch.float32)
    unet = pipe.unet
    sample, text = torch.randn(1, 4, 8, 8), torch.randn(1, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        fused = unet(sample, 10, text).sample
    unet.set_attn_processor(AttnProcessor())
    count = len(unet.attn_processors)
    assert use_fused_attention(unet) == count
    assert {type(p) for p in unet.attn_processors.values()} == {AttnProcessor2_0}
    assert use_fused_attention(unet) == 0  # nothing left to change
    with torch.no_grad():
        assert torch.allclose(unet(sample, 10, text).sample, fused, atol=1e-5)


def test_cuda_layout_goes_channels_last_in_half_precision_with_tf32(monkeypatch) -> None:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    monkeypatch.setattr(cuda_path, "current_gpu", lambda: A100)
    pipe = _tiny_pipe(torch.float16)
    pipe.unet.set_attn_processor(AttnProcessor())
    cuda_layout(pipe, DeviceConfig("cpu", "float16"))  # another device: nothing changes
    assert not pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        cuda_layout(pipe, DeviceConfig("cuda", "float16"))
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    for weight in (pipe.unet.conv_in.weight, pipe.vae.decoder.conv_in.weight):
        assert weight.is_contiguous(memory_format=torch.channels_last)
    assert {type(p) for p in pipe.unet.attn_processors.values()} == {AttnProcessor2_0}
    assert pipe.vae._sdstudio_tiling is not None  # a NaN decode falls back to float32


def test_float32_on_cuda_keeps_its_layout(monkeypatch) -> None:
    monkeypatch.setattr(cuda_path, "current_gpu", lambda: RTX_2080)
    pipe = _tiny_pipe(torch.float32)
    cuda_layout(pipe, DeviceConfig("cuda", "float32"))
    assert not pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_cuda_memory_plans_never_slice_attention() -> None:
    for mode in ("fast", "balanced", "low", "group", "sequential"):
        plan = plan_memory(mode, "cuda", 4 * GIB, 2 * GIB)
        assert not plan.attention_slicing, mode
    assert plan_memory("balanced", "cuda", 4 * GIB, 2 * GIB).vae_tiling
    assert plan_memory("auto", "mps", GIB, None).attention_slicing  # MPS keeps slicing
