"""LyCORIS files (LoHa, LoKr, full differences) through the real engine and a tiny model."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.generation import Engine
from sdstudio.engine.networks import Networks
from sdstudio.engine.prompting import lycoris
from sdstudio.engine.prompting.lycoris_patch import LycorisPatcher, ldm_name
from sdstudio.engine.request import GenerationRequest
from sdstudio.testing import tiny_lycoris


@pytest.fixture(scope="session")
def tiny_pipe(tiny_model: Path) -> Any:
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)


@pytest.fixture(scope="session")
def lyco_dir(tiny_pipe: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA folder of LyCORIS files of every kind, and one plain kohya LoRA."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("lycoris") / "Lora"
    pipe, conv = tiny_pipe, tiny_lycoris.CONVOLUTIONS
    loha = tiny_lycoris.loha(pipe)
    files = {
        "loha": loha,
        "loha_ldm": tiny_lycoris.ldm_names(loha, pipe.unet),
        "loha_te": {k: v for k, v in loha.items() if k.startswith("lora_te_")},
        "loha_conv": tiny_lycoris.loha(pipe, conv, seed=1),
        "loha_tucker": tiny_lycoris.loha(pipe, conv, tucker=True, seed=2),
        "lokr_full": tiny_lycoris.lokr(pipe, w1="full", w2="full", seed=3),
        "lokr_factored": tiny_lycoris.lokr(pipe, w1="factored", w2="factored", seed=4),
        "lokr_tucker": tiny_lycoris.lokr(pipe, conv, w2="tucker", seed=5),
        "full_diff": tiny_lycoris.full(pipe, seed=6),
        "ia3_style": tiny_lycoris.refused(pipe, "ia3"),
        "dora_style": tiny_lycoris.refused(pipe, "dora"),
    }
    for name, modules in files.items():
        tiny_lycoris.write(folder / f"{name}.safetensors", modules)
    generator = torch.Generator().manual_seed(9)
    plain = {}
    for name, weight in tiny_lycoris.layers(pipe, tiny_lycoris.ATTENTION).items():
        plain[f"{name}.lora_down.weight"] = torch.randn(4, weight.shape[1], generator=generator)
        plain[f"{name}.lora_up.weight"] = torch.randn(weight.shape[0], 4, generator=generator)
        plain[f"{name}.alpha"] = torch.tensor(4.0)
    save_file({k: v * 0.3 for k, v in plain.items()}, folder / "plain.safetensors")
    return folder


@pytest.fixture(scope="module")
def lyco_networks(lyco_dir: Path) -> tuple[Any, Networks]:
    """A pipeline manager of its own (patched weights must not reach the shared one)."""
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.pipelines import PipelineManager

    manager = PipelineManager(choose_device("cpu"))
    return manager, Networks(lambda: [lyco_dir], lambda: [], manager.hash_cache)


@pytest.fixture
def lyco_engine(lyco_networks: tuple[Any, Networks], tmp_path: Path) -> Engine:
    manager, networks = lyco_networks
    return Engine(manager, tmp_path / "inputs", networks=networks)


def request_for(model: Path, prompt: str) -> GenerationRequest:
    return GenerationRequest(model=str(model), prompt=prompt, steps=2, width=64, height=64, seed=5)


def pixels(engine: Engine, model: Path, prompt: str) -> np.ndarray:
    return np.asarray(next(engine.generate(request_for(model, prompt))).image)


def test_delta_formulas_match_a_hand_computation() -> None:
    g = torch.Generator().manual_seed(0)
    r, out, inner = 2, 4, 6
    w1a, w1b, w2a, w2b = (torch.randn(s, generator=g) for s in [(out, r), (r, inner)] * 2)
    hand = torch.zeros(out, inner)
    for i, j in itertools.product(range(out), range(inner)):
        first = sum(w1a[i, k] * w1b[k, j] for k in range(r))
        second = sum(w2a[i, k] * w2b[k, j] for k in range(r))
        hand[i, j] = first * second * 3.0 / r
    parts = {"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b}
    got = lycoris.module_delta({**parts, "alpha": torch.tensor(3.0)}, torch.Size([out, inner]))
    assert torch.allclose(got, hand, atol=1e-5)
    # A convolution's LoHa: the same product over in x kh x kw columns, shaped (out, in, kh, kw).
    got = lycoris.module_delta({**parts, "alpha": torch.tensor(3.0)}, torch.Size([out, 2, 1, 3]))
    assert torch.allclose(got[1, 1, 0, 2], hand[1, 1 * 3 + 2], atol=1e-5)
    assert torch.allclose(got.flatten(1), hand, atol=1e-5)

    # Tucker: each factor is sum_ij t[i, j, k, l] a[i, p] b[j, q].
    t, a, b = (
        torch.randn(r, r, 3, 3, generator=g),
        torch.randn(r, 4, generator=g),
        torch.randn(r, 5, generator=g),
    )
    hand_t = torch.zeros(4, 5, 3, 3)
    for p, q, k, m in itertools.product(range(4), range(5), range(3), range(3)):
        hand_t[p, q, k, m] = sum(
            t[i, j, k, m] * a[i, p] * b[j, q] for i in range(r) for j in range(r)
        )
    assert torch.allclose(lycoris.tucker(t, a, b), hand_t, atol=1e-5)
    tucker_parts = {"hada_t1": t, "hada_w1_a": a, "hada_w1_b": b, "hada_t2": t}
    tucker_parts |= {"hada_w2_a": a, "hada_w2_b": b}
    got = lycoris.module_delta(tucker_parts, torch.Size([4, 5, 3, 3]))  # no alpha: scale 1
    assert torch.allclose(got, hand_t * hand_t, atol=1e-4)

    # LoKr: delta[i*c + p, j*d + q] = w1[i, j] * w2[p, q]; alpha / rank only when factored.
    w1, w2 = torch.randn(2, 3, generator=g), torch.randn(4, 5, generator=g)
    hand_k = torch.zeros(8, 15)
    for i, j, p, q in itertools.product(range(2), range(3), range(4), range(5)):
        hand_k[i * 4 + p, j * 5 + q] = w1[i, j] * w2[p, q]
    shape = torch.Size([8, 15])
    alpha = torch.tensor(8.0)
    got = lycoris.module_delta({"lokr_w1": w1, "lokr_w2": w2, "alpha": alpha}, shape)
    assert torch.allclose(got, hand_k, atol=1e-5)  # two full factors: no scale
    w2a, w2b = torch.randn(4, r, generator=g), torch.randn(r, 5, generator=g)
    parts = {"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b, "alpha": alpha}
    hand_f = torch.kron(w1, w2a @ w2b) * 8.0 / r
    assert torch.allclose(lycoris.module_delta(parts, shape), hand_f, atol=1e-5)
    # A LoKr convolution: w1 (a, b) with w2 (c, d, kh, kw) gives (a*c, b*d, kh, kw).
    w2c = torch.randn(4, 5, 3, 3, generator=g)
    got = lycoris.module_delta({"lokr_w1": w1, "lokr_w2": w2c}, torch.Size([8, 15, 3, 3]))
    assert torch.allclose(got[4 + 2, 5 * 2 + 3], w1[1, 2] * w2c[2, 3], atol=1e-6)
    with pytest.raises(ModelError, match=r"shape \(8, 15\).*another model family"):
        lycoris.module_delta({"lokr_w1": w1, "lokr_w2": w2}, torch.Size([8, 16]))


def test_each_kind_patches_exactly_its_modules_and_restores_them(
    tiny_pipe: Any, lyco_dir: Path
) -> None:
    from safetensors.torch import load_file

    models = {"lora_unet_": tiny_pipe.unet, "lora_te_": tiny_pipe.text_encoder}
    layers = {
        prefix + name.replace(".", "_"): module
        for prefix, model in models.items()
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d)
    }
    original = {name: layer.weight.detach().clone() for name, layer in layers.items()}
    patcher = LycorisPatcher()
    for stem in ("loha", "loha_conv", "loha_tucker", "lokr_full", "lokr_factored", "lokr_tucker"):
        path = lyco_dir / f"{stem}.safetensors"
        use = SimpleNamespace(path=path, hash=stem, weight=0.5)
        assert patcher.apply(tiny_pipe, [use]) == []  # nothing left for diffusers
        modules = lycoris.group_modules(load_file(str(path)))
        for name, layer in layers.items():
            delta = (
                lycoris.module_delta(modules[name], layer.weight.shape) if name in modules else 0
            )
            assert torch.allclose(layer.weight, original[name] + 0.5 * delta, atol=1e-6), name
    patcher.apply(tiny_pipe, [])
    for name, weight in original.items():
        assert torch.equal(layers[name].weight, weight), name


def test_original_unet_names_patch_the_same_layers(tiny_pipe: Any, lyco_dir: Path) -> None:
    assert ldm_name("input_blocks_4_1_transformer_blocks_0_attn2_to_k", 2) == (
        "down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    )
    assert ldm_name("output_blocks_2_1_conv", 1) == "up_blocks_1_upsamplers_0_conv"
    assert ldm_name("output_blocks_5_2_conv", 2) == "up_blocks_1_upsamplers_0_conv"
    assert ldm_name("middle_block_2_in_layers_2", 2) == "mid_block_resnets_1_conv1"
    assert ldm_name("input_blocks_3_0_op", 2) == "down_blocks_0_downsamplers_0_conv"
    from safetensors import safe_open

    with safe_open(str(lyco_dir / "loha_ldm.safetensors"), "pt") as file:
        assert any("_output_blocks_" in key for key in file.keys())  # noqa: SIM118
    original = {k: v.clone() for k, v in tiny_pipe.unet.state_dict().items()}
    patcher = LycorisPatcher()
    weights = []
    for stem in ("loha", "loha_ldm"):
        use = SimpleNamespace(path=lyco_dir / f"{stem}.safetensors", hash=stem, weight=1.0)
        patcher.apply(tiny_pipe, [use])
        weights.append({k: v.clone() for k, v in tiny_pipe.unet.state_dict().items()})
    patcher.apply(tiny_pipe, [])
    changed = [k for k in original if not torch.equal(weights[0][k], original[k])]
    assert len(changed) == 32  # q, k, v, out of attn1 and attn2 in 4 transformer blocks
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in original)


def test_loha_changes_the_image_weight_zero_is_plain_and_weights_come_back(
    lyco_engine: Engine, tiny_model: Path
) -> None:
    plain = pixels(lyco_engine, tiny_model, "a red boat")
    full = pixels(lyco_engine, tiny_model, "a red boat <lora:loha:1>")
    half = pixels(lyco_engine, tiny_model, "a red boat <lyco:LOHA:0.5>")
    zero = pixels(lyco_engine, tiny_model, "a red boat <lora:loha:0>")
    after = pixels(lyco_engine, tiny_model, "a red boat")
    assert not np.array_equal(full, plain)
    assert not np.array_equal(half, full)
    assert np.array_equal(zero, plain)
    assert np.array_equal(after, plain)
    assert np.array_equal(pixels(lyco_engine, tiny_model, "a red boat <lora:loha:1>"), full)


def test_every_kind_changes_the_image_and_is_undone(lyco_engine: Engine, tiny_model: Path) -> None:
    plain = pixels(lyco_engine, tiny_model, "a boat")
    seen = [plain]
    for stem in (
        "loha_conv",
        "loha_tucker",
        "lokr_full",
        "lokr_factored",
        "lokr_tucker",
        "full_diff",
    ):
        image = pixels(lyco_engine, tiny_model, f"a boat <lora:{stem}:0.8>")
        assert not any(np.array_equal(image, other) for other in seen), stem
        seen.append(image)
    assert np.array_equal(pixels(lyco_engine, tiny_model, "a boat"), plain)


def test_loha_and_a_plain_lora_in_one_prompt(lyco_engine: Engine, tiny_model: Path) -> None:
    lora = pixels(lyco_engine, tiny_model, "a boat <lora:plain:0.7>")
    loha = pixels(lyco_engine, tiny_model, "a boat <lora:loha:0.7>")
    both = pixels(lyco_engine, tiny_model, "a boat <lora:plain:0.7> <lora:loha:0.7>")
    assert not np.array_equal(both, lora) and not np.array_equal(both, loha)
    assert np.array_equal(pixels(lyco_engine, tiny_model, "a boat <lora:plain:0.7>"), lora)
    assert np.array_equal(pixels(lyco_engine, tiny_model, "a boat <lora:loha:0.7>"), loha)


def test_a_text_encoder_loha_reaches_cached_prompt_embeddings(
    lyco_engine: Engine, tiny_model: Path
) -> None:
    prompt = "a (red:1.3) boat"  # emphasis: the engine's own (cached) embeddings
    plain = pixels(lyco_engine, tiny_model, prompt)
    patched = pixels(lyco_engine, tiny_model, prompt + " <lora:loha_te:1>")
    assert not np.array_equal(plain, patched)
    assert np.array_equal(pixels(lyco_engine, tiny_model, prompt), plain)


def test_lycoris_files_are_recorded_and_rerun_exactly(
    lyco_engine: Engine, tiny_model: Path, lyco_dir: Path, tmp_path: Path
) -> None:
    from PIL import Image

    from sdstudio.engine.metadata import png_info
    from sdstudio.engine.metadata.a1111 import split_parameters

    request = request_for(tiny_model, "a boat <lora:loha:0.6> <lora:lokr_factored:0.4>")
    first = next(lyco_engine.generate(request))
    sha = {
        s: hashlib.sha256((lyco_dir / f"{s}.safetensors").read_bytes()).hexdigest()[:12]
        for s in ("loha", "lokr_factored")
    }
    assert first.record.extra["loras"] == [
        {"name": "loha", "weight": 0.6, "hash": sha["loha"]},
        {"name": "lokr_factored", "weight": 0.4, "hash": sha["lokr_factored"]},
    ]
    saved = tmp_path / "first.png"
    first.image.save(saved, pnginfo=png_info(first.record))
    with Image.open(saved) as image:
        text = image.text["parameters"]  # type: ignore[attr-defined]
    settings = split_parameters(text).settings
    assert settings["Lora hashes"] == f"loha: {sha['loha']}, lokr_factored: {sha['lokr_factored']}"
    pixels(lyco_engine, tiny_model, "a boat <lora:loha_conv:1>")
    again = next(lyco_engine.generate(request))
    assert np.array_equal(np.asarray(again.image), np.asarray(first.image))


def test_ia3_and_dora_are_refused_by_name(lyco_engine: Engine, tiny_model: Path) -> None:
    with pytest.raises(ModelError, match=r"ia3_style.safetensors: it is a \(IA\)\^3 network"):
        pixels(lyco_engine, tiny_model, "a boat <lora:ia3_style:1>")
    with pytest.raises(ModelError, match=r"dora_style.safetensors: it is a DoRA network"):
        pixels(lyco_engine, tiny_model, "a boat <lora:loha:1> <lora:dora_style:1>")
    assert pixels(lyco_engine, tiny_model, "a boat").shape == (64, 64, 3)


def test_a_loha_for_another_family_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from sdstudio.engine.prompting.families import check_family

    base = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
    tensors = {f"{base}.hada_w1_b": torch.zeros(4, 2048), f"{base}.hada_w1_a": torch.zeros(640, 4)}
    path = tmp_path / "xl_loha.safetensors"
    save_file(tensors, path)

    def pipe(width: int) -> object:
        return SimpleNamespace(
            unet=SimpleNamespace(config=SimpleNamespace(cross_attention_dim=width))
        )

    with pytest.raises(
        InvalidRequest, match=r"The LoHa xl_loha is made for SDXL models; .* SD 1\.x"
    ):
        check_family(pipe(768), path)
    check_family(pipe(2048), path)


def test_the_model_list_names_the_kind_of_network(lyco_dir: Path, tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import save_file

    from sdstudio.engine.models.catalog import scan_folder

    root = tmp_path / "stable-diffusion-webui"
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    loras = root / "models" / "Lora"
    loras.mkdir()
    for stem in ("loha", "lokr_factored", "full_diff", "plain", "dora_style"):
        shutil.copy(lyco_dir / f"{stem}.safetensors", loras)
    base = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    save_file(
        {f"{base}.lokr_w1": torch.zeros(8, 8), f"{base}.lokr_w2": torch.zeros(40, 96)},
        loras / "sd1_lokr.safetensors",
    )
    entries = {e.name: e for e in scan_folder(root).entries}
    labels = {name: (e.kind, e.family_label) for name, e in entries.items()}
    assert labels["loha"] == ("lora", "Unknown LoHa")  # the tiny model's width is no family
    assert labels["lokr_factored"] == ("lora", "Unknown LoKr")
    assert labels["full_diff"] == ("lora", "Unknown full")
    assert labels["dora_style"] == ("lora", "Unknown DoRA")
    assert labels["plain"] == ("lora", "Unknown")
    assert (entries["sd1_lokr"].family, entries["sd1_lokr"].family_label) == ("sd1", "SD 1.x LoKr")


def test_plain_layers_inside_a_lycoris_file() -> None:
    g = torch.Generator().manual_seed(1)
    up, down = torch.randn(4, 2, 1, 1, generator=g), torch.randn(2, 3, 3, 3, generator=g)
    shape = torch.Size([4, 3, 3, 3])
    parts = {"lora_up.weight": up, "lora_down.weight": down, "alpha": torch.tensor(1.0)}
    hand = torch.einsum("or,rikl->oikl", up.flatten(1), down) / 2
    assert torch.allclose(lycoris.module_delta(parts, shape), hand, atol=1e-6)
    mid, down1 = torch.randn(2, 2, 3, 3, generator=g), torch.randn(2, 3, 1, 1, generator=g)
    parts = {"lora_up.weight": up, "lora_down.weight": down1, "lora_mid.weight": mid}
    hand = torch.einsum("nmkl,on,mi->oikl", mid, up.flatten(1), down1.flatten(1))
    assert torch.allclose(lycoris.module_delta(parts, shape), hand, atol=1e-6)


def test_modules_the_model_lacks_are_said_and_none_is_an_error(
    tiny_pipe: Any, tmp_path: Path
) -> None:
    loha = tiny_lycoris.loha(tiny_pipe, text_encoder=False)
    first = {part: t.clone() for part, t in next(iter(loha.values())).items()}
    extra = tiny_lycoris.write(tmp_path / "extra.safetensors", {**loha, "lora_unet_gone": first})
    notices: list[str] = []
    patcher = LycorisPatcher()
    patcher.apply(tiny_pipe, [SimpleNamespace(path=extra, hash="x", weight=1.0)], notices.append)
    assert notices == [
        "The LoHa extra: 1 of its 33 modules are not in this model and were left out "
        "(lora_unet_gone)."
    ]
    patcher.restore()
    other = tiny_lycoris.write(tmp_path / "other.safetensors", {"lora_unet_gone": first})
    with pytest.raises(ModelError, match=r"other.safetensors: none of its 1 modules is in"):
        patcher.apply(tiny_pipe, [SimpleNamespace(path=other, hash="y", weight=1.0)])


def test_layers_streamed_to_the_gpu_are_refused(tiny_pipe: Any, lyco_dir: Path) -> None:
    with torch.device("meta"):
        unet = torch.nn.Module()
        unet.add_module("conv_in", torch.nn.Conv2d(4, 32, 3))
    unet.config = SimpleNamespace(layers_per_block=1)  # type: ignore[assignment]
    pipe = SimpleNamespace(unet=unet, text_encoder=None)
    module = {"lora_unet_conv_in": tiny_lycoris.loha(tiny_pipe, r"conv_in")["lora_unet_conv_in"]}
    path = tiny_lycoris.write(lyco_dir.parent / "conv_in.safetensors", module)
    with pytest.raises(InvalidRequest, match="layers stream to the GPU one by one"):
        LycorisPatcher().apply(pipe, [SimpleNamespace(path=path, hash="z", weight=1.0)])
