"""fp8 transformer and text encoder files stay fp8 in memory: their linear weights are the
file's values, computed in the compute dtype layer by layer, and the outputs are those
of the upcast load bit for bit, plain or scaled (per tensor or per row), in either
layout; memory shrinks as expected, LoRAs apply, and a ComfyUI tree of fp8 parts
generates the same pixels as its upcast parts and re-runs them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sdstudio.engine.memory import weights_bytes
from sdstudio.engine.parts.denoisers import load_denoiser
from sdstudio.engine.parts.fp8_storage import (
    FP8_DTYPES,
    SCALE,
    follow_rows,
    fp8_storage_default,
)
from sdstudio.engine.parts.text_encoders import load_text_encoder
from sdstudio.testing import tiny_text_encoder_files as tiny
from sdstudio.testing.original_layouts import to_original_layout
from sdstudio.testing.tiny_denoiser_files import (
    FAMILIES,
    build_tiny_denoiser,
    tiny_denoiser_output,
    write_denoiser_file,
)

UNET = "model.diffusion_model."
T5_IDS = torch.tensor([[3, 9, 1202, 13, 3, 9, 1712, 1]])
QWEN_IDS = torch.tensor([[151644, 872, 198, 64, 6548, 315, 264, 8251, 151645, 198]])
CLIP_IDS = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407, 49407]])


class ComputeDtype:
    """A transformer seen by :func:`tiny_denoiser_output`, which makes its inputs in the
    dtype of the first floating parameter: here one of the compute dtype comes first."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.config = model.config

    def parameters(self) -> Iterator[torch.Tensor]:
        yield torch.empty(0, dtype=self.model.dtype)
        yield from self.model.parameters()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)


def output(model: Any, family: str) -> torch.Tensor:
    return tiny_denoiser_output(ComputeDtype(model), family)


def linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def check_storage(kept: torch.nn.Module, upcast: torch.nn.Module, dtype: torch.dtype) -> int:
    """Every linear weight of ``kept`` is fp8 holding the values ``upcast`` holds (before
    any scale), everything else is as in ``upcast``; returns the fp8 values' count."""
    fp8 = 0
    theirs = dict(upcast.named_parameters())
    for name, parameter in kept.named_parameters():
        if parameter.dtype in FP8_DTYPES:
            owner = kept.get_submodule(name.rpartition(".")[0])
            assert isinstance(owner, torch.nn.Linear) and name.endswith(".weight")
            scale = getattr(owner, SCALE, None)
            value = parameter.float() * (scale if scale is not None else 1.0)
            assert torch.equal(value.to(dtype), theirs[name])
            fp8 += parameter.numel()
        else:
            assert parameter.dtype == dtype and torch.equal(parameter, theirs[name]), name
    return fp8


def check_memory(kept: Any, upcast: Any, fp8: int, itemsize: int) -> None:
    ours = weights_bytes(SimpleNamespace(components={"model": kept}))
    full = weights_bytes(SimpleNamespace(components={"model": upcast}))
    assert ours == full - fp8 * (itemsize - 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_plain_fp8_transformers_keep_their_weights(family: str, tmp_path: Path) -> None:
    model = build_tiny_denoiser(family)
    path = write_denoiser_file(
        tmp_path / "fp8.safetensors", family, model, fp8="plain", prefix=UNET
    )
    for dtype in (torch.bfloat16, torch.float32) if family == "flux1" else (torch.bfloat16,):
        kept = load_denoiser(path, dtype=dtype)
        upcast = load_denoiser(path, dtype=dtype, fp8_storage=False)
        assert kept.dtype == dtype and type(kept) is type(upcast)
        assert {p.dtype for p in upcast.parameters()} == {dtype}
        fp8 = check_storage(kept, upcast, dtype)
        # Every linear layer of these files is fp8, those diffusers' layerwise casting
        # leaves out by name (norm1.linear, proj_out ...) too.
        assert fp8 == sum(m.weight.numel() for m in linears(kept).values())
        check_memory(kept, upcast, fp8, dtype.itemsize)
        assert torch.equal(output(kept, family), output(upcast, family))


def write_per_row(path: Path, family: str, model: Any, layout: str) -> Path:
    """A scaled fp8 file with one scale per output row (``weight_scale``, as newer
    ComfyUI files): each matrix divided by its rows' largest magnitudes over 448."""
    state = {k: v.detach() for k, v in model.state_dict().items()}
    if layout == "original":
        state = to_original_layout(family, state)
    stored: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if value.dim() == 2 and key.endswith(".weight"):
            scale = value.float().abs().amax(dim=1).clamp(min=1e-12) / 448.0
            stored[key] = (value.float() / scale[:, None]).to(torch.float8_e4m3fn)
            stored[key.removesuffix(".weight") + ".weight_scale"] = scale
        else:
            stored[key] = value.contiguous()
    save_file({UNET + k: v.contiguous() for k, v in stored.items()}, str(path))
    return path


@pytest.mark.parametrize("family", ["flux1", "sd3", "flux2-klein"])
def test_scaled_fp8_transformers_apply_their_scales_at_compute_time(
    family: str, tmp_path: Path
) -> None:
    model = build_tiny_denoiser(family)
    files = {
        f"{layout}-tensor": write_denoiser_file(
            tmp_path / f"{layout}.safetensors", family, model, fp8="scaled", layout=layout
        )
        for layout in (("original", "diffusers") if family == "flux1" else ("original",))
    }
    files["original-row"] = write_per_row(tmp_path / "row.safetensors", family, model, "original")
    for name, path in files.items():
        kept = load_denoiser(path, dtype=torch.bfloat16)
        upcast = load_denoiser(path, dtype=torch.bfloat16, fp8_storage=False)
        fp8 = check_storage(kept, upcast, torch.bfloat16)
        check_memory(kept, upcast, fp8, 2)
        shapes = [(m.out_features, getattr(m, SCALE).shape) for m in linears(kept).values()]
        if name.endswith("tensor"):
            assert {shape for _, shape in shapes} == {torch.Size([])}
        else:
            assert all(shape == (rows, 1) for rows, shape in shapes)
        assert torch.equal(output(kept, family), output(upcast, family)), name


def test_scales_follow_the_rows_of_a_conversion() -> None:
    tensors = {"qkv": torch.zeros(6, 4), "mod": torch.zeros(4, 4), "bias": torch.zeros(6)}
    scales = {"qkv": torch.tensor(0.5), "mod": torch.tensor([1.0, 1.0, 2.0, 2.0])}

    def split_and_swap(t: dict[str, Any]) -> dict[str, Any]:
        q, k, v = t["qkv"].chunk(3)
        shift, scale = t["mod"].chunk(2)
        return {"q": q, "k": k, "v": v, "mod": torch.cat([scale, shift]), "b": t["bias"]}

    followed = follow_rows(split_and_swap, tensors, scales)
    assert followed is not None and set(followed) == {"q", "k", "v", "mod"}
    assert followed["q"].shape == () and float(followed["q"]) == 0.5
    assert followed["mod"].tolist() == [2.0, 2.0, 1.0, 1.0]

    def mixed(t: dict[str, Any]) -> dict[str, Any]:
        return {"joined": torch.cat([t["qkv"], t["mod"]])}

    two = {"qkv": tensors["qkv"], "mod": tensors["mod"]}
    assert follow_rows(mixed, two, {"qkv": scales["qkv"]}) is None
    assert follow_rows(lambda t: {"t": t["mod"].T}, {"mod": tensors["mod"]}, scales) is None


ENCODERS = {
    "t5": ("T5EncoderModel", T5_IDS, lambda p: tiny.write_tiny_t5(p)),
    "clip": ("CLIPTextModelWithProjection", CLIP_IDS, lambda p: tiny.write_tiny_clip(p, width=32)),
    "qwen3": ("Qwen3Model", QWEN_IDS, lambda p: tiny.write_tiny_qwen3(p)),
    "vl": ("Qwen2_5_VLForConditionalGeneration", QWEN_IDS, lambda p: tiny.write_tiny_qwen25_vl(p)),
}


@pytest.mark.parametrize("kind", list(ENCODERS))
def test_fp8_text_encoders_keep_their_weights(kind: str, tmp_path: Path) -> None:
    """Plain fp8 computed in bfloat16, scaled fp8 (per tensor) in float32."""
    model_class, ids, write = ENCODERS[kind]
    source = write(tmp_path / "bf16.safetensors")
    for scaled, dtype in ((False, torch.bfloat16), (True, torch.float32)):
        path = tiny.write_fp8(source, tmp_path / f"fp8-{scaled}.safetensors", scaled=scaled)
        kept = load_text_encoder(path, model_class, dtype=dtype)
        upcast = load_text_encoder(path, model_class, dtype=dtype, fp8_storage=False)
        assert kept.dtype == dtype
        fp8 = check_storage(kept, upcast, dtype)
        assert fp8 and all(m.weight.dtype in FP8_DTYPES for m in linears(kept).values())
        check_memory(kept, upcast, fp8, dtype.itemsize)
        with torch.no_grad():
            ours = kept(input_ids=ids, output_hidden_states=True).hidden_states
            theirs = upcast(input_ids=ids, output_hidden_states=True).hidden_states
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def per_row_fp8(source: Path, target: Path) -> Path:
    """A copy of a text encoder file with its linear weights in fp8 scaled per row."""
    from safetensors import safe_open

    stored: dict[str, torch.Tensor] = {}
    with safe_open(str(source), framework="pt") as file:
        for name in file.keys():  # noqa: SIM118 - safe_open is not a mapping
            tensor = file.get_tensor(name)
            if tensor.dim() == 2 and not any(skip in name for skip in tiny.FP8_SKIP):
                scale = tensor.float().abs().amax(dim=1) / 448.0
                stored[name.removesuffix(".weight") + ".weight_scale"] = scale
                tensor = (tensor.float() / scale[:, None]).to(torch.float8_e4m3fn)
            stored[name] = tensor.contiguous()
    save_file(stored, str(target))
    return target


def test_t5_feed_forward_sees_the_compute_dtype(tmp_path: Path) -> None:
    """T5 casts its feed-forward input to ``wo.weight.dtype``: ``wo`` stays fp8, and the
    input reaches it in the compute dtype, not rounded to fp8. Per-row scales apply."""
    source = tiny.write_tiny_t5(tmp_path / "t5.safetensors")
    path = per_row_fp8(source, tmp_path / "t5xxl_fp8_scaled.safetensors")
    t5 = load_text_encoder(path, "T5EncoderModel", dtype=torch.bfloat16)
    dense = t5.encoder.block[0].layer[1].DenseReluDense
    assert dense.wo.weight.dtype == torch.float8_e4m3fn
    assert getattr(dense.wo, SCALE).shape == (dense.wo.out_features, 1)
    seen: list[torch.dtype] = []
    dense.wo.register_forward_pre_hook(lambda _, args: seen.append(args[0].dtype))
    upcast = load_text_encoder(path, "T5EncoderModel", dtype=torch.bfloat16, fp8_storage=False)
    with torch.no_grad():
        assert torch.equal(t5(input_ids=T5_IDS)[0], upcast(input_ids=T5_IDS)[0])
    assert seen == [torch.bfloat16]
    assert fp8_storage_default()  # no Apple GPU here


@pytest.fixture(scope="module")
def comfy_fp8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ComfyUI tree with a tiny Flux.1 as fp8 parts: a scaled fp8 transformer (original
    layout) and a plain fp8 T5, as ``t5xxl_fp8_e4m3fn.safetensors``."""
    from sdstudio.testing.tiny_split import save_tiny_comfyui_model

    root = tmp_path_factory.mktemp("ComfyUI")
    target = save_tiny_comfyui_model(root, "flux1", name="tiny-flux1-fp8")
    write_denoiser_file(target, "flux1", build_tiny_denoiser("flux1"), prefix=UNET, fp8="scaled")
    encoders = root / "models" / "text_encoders"
    tiny.write_fp8(encoders / "t5xxl_fp16.safetensors", encoders / "t5xxl_fp8_e4m3fn.safetensors")
    (encoders / "t5xxl_fp16.safetensors").unlink()
    return target


@pytest.mark.slow
def test_a_comfyui_tree_of_fp8_parts_generates_as_its_upcast_parts(
    comfy_fp8: Path, engine: Any, tmp_path: Path
) -> None:
    from sdstudio.engine.flow_loras import load_lora
    from sdstudio.engine.models.split_layout import assemble, complete, transformer_part
    from sdstudio.engine.request import GenerationRequest, Mode
    from sdstudio.testing import tiny_loras as tl

    split = complete(comfy_fp8, transformer_part(comfy_fp8), (), "")  # type: ignore[arg-type]
    pipe = assemble(split, dtype=torch.bfloat16)
    t5_path = split.text_encoders[1]
    assert t5_path is not None and t5_path.name == "t5xxl_fp8_e4m3fn.safetensors"
    assert pipe.transformer.transformer_blocks[0].attn.to_q.weight.dtype == torch.float8_e4m3fn
    assert pipe.text_encoder_2.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == (
        torch.float8_e4m3fn
    )
    upcast = type(pipe)(
        **{
            **pipe.components,
            "transformer": load_denoiser(comfy_fp8, dtype=torch.bfloat16, fp8_storage=False),
            "text_encoder_2": load_text_encoder(
                t5_path, "T5EncoderModel", dtype=torch.bfloat16, fp8_storage=False
            ),
        }
    )
    lora = tl.write_flux_lora(
        tmp_path / "lora.safetensors", tl.flux_lora(upcast.transformer, alpha=2.0), "bfl"
    )

    def image(p: Any) -> np.ndarray:
        result = p(
            prompt="a red boat",
            num_inference_steps=2,
            height=64,
            width=64,
            guidance_scale=1.0,
            generator=torch.Generator().manual_seed(3),
            output_type="np",
        )
        return np.asarray(result.images[0])

    assert np.array_equal(image(pipe), image(upcast))
    for p in (pipe, upcast):
        assert load_lora(p, lora, "style") == []
    lora_a = pipe.transformer.transformer_blocks[0].attn.to_q.lora_A["style"].weight
    assert lora_a.dtype == torch.bfloat16
    assert np.array_equal(image(pipe), image(upcast))

    request = GenerationRequest(
        model=str(comfy_fp8), prompt="a red boat", steps=2, width=64, height=64, seed=11,
        sampler="Euler", schedule="Simple", guidance_scale=1.0,
    )  # fmt: skip
    first = next(engine.generate(request))
    model = engine.pipelines.model
    assert model is not None and model.split is not None
    loaded = engine.pipelines.pipeline(str(comfy_fp8), Mode.TXT2IMG, split=model.split).transformer
    assert loaded.transformer_blocks[0].attn.to_q.weight.dtype == torch.float8_e4m3fn
    again = next(engine.generate(first.record.request))
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
