"""Standalone VAE files of the flow families: recognised from their shapes, loaded from
the original (ComfyUI) and diffusers layouts with the family's shipped config, offline,
and refused with a message that says what the file is and what the model needs."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from sdstudio.engine.errors import ModelError
from sdstudio.engine.models.families import read_safetensors_shapes
from sdstudio.engine.parts.vae_files import (
    VAE_KINDS_BY_FAMILY,
    VaeFile,
    identify_vae_file,
    load_vae_file,
)
from sdstudio.resource_files import resource_path
from sdstudio.testing import tiny_vae_files as tiny
from sdstudio.testing.tiny_parts import SD3_VAE_SCALING

SEED = 7
BUILDERS: dict[str, Callable[[int], Any]] = {
    "kl16": tiny.build_tiny_kl16_vae,
    "flux2": tiny.build_tiny_flux2_vae,
    "qwen-image": tiny.build_tiny_qwen_image_vae,
    "kl4": tiny.build_tiny_sd_vae,
}
FAMILY_OF = {"kl16": "flux1", "flux2": "flux2-klein", "qwen-image": "qwen-image"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """One tiny file of each kind in each layout."""
    folder = tmp_path_factory.mktemp("vae")
    return {
        (kind, layout): tiny.write_tiny_vae(
            kind, folder / f"{kind}-{layout}.safetensors", SEED, layout=layout
        )
        for kind in BUILDERS
        for layout in tiny.LAYOUTS
    }


def _config(folder: str) -> dict[str, Any]:
    path = resource_path("model_configs") / folder / "vae" / "config.json"
    config: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return config


def _latent(kind: str) -> torch.Tensor:
    channels = 32 if kind == "flux2" else 16
    size = (1, 8, 8) if kind == "qwen-image" else (8, 8)
    return torch.randn(1, channels, *size, generator=torch.Generator().manual_seed(1))


def _image(kind: str) -> torch.Tensor:
    size = (1, 32, 32) if kind == "qwen-image" else (32, 32)
    return torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(2)) * 2 - 1


def _load(path: Path, family: str, **kwargs: Any) -> Any:
    return load_vae_file(path, family, dtype=torch.float32, **kwargs)


# --- recognising ------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["original", "diffusers"])
@pytest.mark.parametrize(
    ("kind", "label"),
    [
        ("kl16", "16-channel VAE (Flux.1, SD3, Z-Image)"),
        ("flux2", "Flux.2 VAE"),
        ("qwen-image", "Qwen-Image VAE"),
        ("kl4", "SD VAE (4 channels)"),
    ],
)
def test_each_kind_is_recognised_in_each_layout(
    files: dict[tuple[str, str], Path], kind: str, label: str, layout: str
) -> None:
    shapes = read_safetensors_shapes(files[kind, layout])
    assert identify_vae_file(shapes) == VaeFile(kind, label, layout)
    for prefix in ("first_stage_model.", "vae."):
        prefixed = {prefix + key: shape for key, shape in shapes.items()}
        prefixed["model.diffusion_model.x_embedder.proj.weight"] = (8, 16, 2, 2)
        assert identify_vae_file(prefixed) == VaeFile(kind, label, layout)


def test_other_files_are_no_vae(files: dict[tuple[str, str], Path]) -> None:
    assert identify_vae_file({}) is None
    assert identify_vae_file({"lora_unet_a.lora_down.weight": (4, 8)}) is None
    assert identify_vae_file({"double_blocks.0.img_attn.qkv.weight": (96, 32)}) is None
    # A Wan 2.2 VAE (48 latent channels) and an 8-channel KL VAE are of no kind here.
    assert identify_vae_file({"decoder.conv1.weight": (384, 48, 3, 3, 3)}) is None
    shapes = dict(read_safetensors_shapes(files["kl16", "diffusers"]))
    shapes["decoder.conv_in.weight"] = (16, 8, 3, 3)
    assert identify_vae_file(shapes) is None


def test_original_files_are_in_the_layout_diffusers_converts() -> None:
    """The test files' original names are the real ones: diffusers' own converters
    (written for the released files) turn them back into the source state."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_vae_checkpoint,
        convert_wan_vae_to_diffusers,
    )

    for vae in (tiny.build_tiny_kl16_vae(SEED), tiny.build_tiny_sd_vae(SEED)):
        state = vae.state_dict()
        converted = convert_ldm_vae_checkpoint(tiny.kl_to_original(dict(state)), vae.config)
        assert converted.keys() == state.keys()
        assert all(torch.equal(converted[key], state[key]) for key in state)
    # diffusers' Wan converter knows the real depth only (2 residual blocks a level).
    vae = tiny.build_tiny_qwen_image_vae(SEED, num_res_blocks=2)
    state = vae.state_dict()
    original = tiny.wan_to_original(dict(state), num_res_blocks=2)
    assert {"conv1.weight", "encoder.head.2.weight", "decoder.upsamples.14.residual.6.weight"} <= (
        original.keys()
    )
    converted = convert_wan_vae_to_diffusers(original)
    assert converted.keys() == state.keys()
    assert all(torch.equal(converted[key], state[key]) for key in state)
    # Flux.2 (Black Forest Labs' ae): LDM names, quant convolutions inside the encoder
    # and decoder, the batch norm's statistics at the top.
    flux2 = tiny.kl_to_original(
        dict(tiny.build_tiny_flux2_vae(SEED).state_dict()), nested_quant=True
    )
    assert {"encoder.quant_conv.weight", "decoder.post_quant_conv.weight", "bn.running_var"} <= (
        flux2.keys()
    )
    assert flux2["encoder.conv_out.weight"].shape[0] == 64
    assert flux2["encoder.mid.attn_1.q.weight"].dim() == 4


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_tiny_vaes_are_the_tiny_pipelines_vaes() -> None:
    """The split-layout tests pair these files with the tiny transformers: same configs,
    same weights for the same seed."""
    from sdstudio.testing import tiny_flow

    pairs = [
        (tiny_flow.build_tiny_flux(seed=SEED), tiny.build_tiny_kl16_vae(SEED)),
        (
            tiny_flow.build_tiny_sd3(seed=SEED),
            tiny.build_tiny_kl16_vae(SEED, scaling=SD3_VAE_SCALING),
        ),
        (tiny_flow.build_tiny_zimage(seed=SEED), tiny.build_tiny_kl16_vae(SEED)),
        (tiny_flow.build_tiny_qwen_image(seed=SEED), tiny.build_tiny_qwen_image_vae(SEED)),
        (tiny_flow.build_tiny_flux2_klein(seed=SEED), tiny.build_tiny_flux2_vae(SEED)),
    ]
    for pipe, vae in pairs:
        assert dict(pipe.vae.config) == dict(vae.config)
        theirs, ours = pipe.vae.state_dict(), vae.state_dict()
        assert theirs.keys() == ours.keys()
        assert all(torch.equal(theirs[key], ours[key]) for key in ours)


# --- loading ----------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["original", "diffusers"])
@pytest.mark.parametrize("kind", ["kl16", "flux2", "qwen-image"])
def test_loaded_vae_decodes_and_encodes_as_its_source(
    files: dict[tuple[str, str], Path], kind: str, layout: str
) -> None:
    vae = _load(files[kind, layout], FAMILY_OF[kind])
    source = BUILDERS[kind](SEED)
    assert type(vae) is type(source)
    assert not any(t.is_meta for t in [*vae.parameters(), *vae.buffers()])
    with torch.no_grad():
        assert torch.equal(vae.decode(_latent(kind)).sample, source.decode(_latent(kind)).sample)
        ours = vae.encode(_image(kind)).latent_dist.mean
        theirs = source.encode(_image(kind)).latent_dist.mean
    assert torch.equal(ours, theirs)
    sizes = ("block_out_channels", "layers_per_block", "norm_num_groups", "latent_channels")
    if kind == "qwen-image":
        sizes = ("base_dim", "z_dim", "dim_mult", "num_res_blocks", "temperal_downsample")
    for key in sizes:
        assert list(_as_list(vae.config[key])) == list(_as_list(source.config[key])), key


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list | tuple) else [value]


def test_the_real_qwen_image_depth_loads(tmp_path: Path) -> None:
    path = tiny.write_tiny_qwen_image_vae(tmp_path / "qwen_image_vae.safetensors", num_res_blocks=2)
    vae = _load(path, "qwen-image")
    source = tiny.build_tiny_qwen_image_vae(0, num_res_blocks=2)
    assert vae.config.num_res_blocks == 2
    with torch.no_grad():
        assert torch.equal(
            vae.decode(_latent("qwen-image")).sample, source.decode(_latent("qwen-image")).sample
        )


def test_scaling_comes_from_the_familys_shipped_config(files: dict[tuple[str, str], Path]) -> None:
    path = files["kl16", "original"]
    for family, folder, expected in [
        ("flux1", None, (0.3611, 0.1159)),
        ("flux1", "flux1-schnell", (0.3611, 0.1159)),
        ("zimage", None, (0.3611, 0.1159)),
        ("sd3", None, (1.5305, 0.0609)),
    ]:
        vae = _load(path, family, config_folder=folder)
        assert (vae.config.scaling_factor, vae.config.shift_factor) == expected
        assert vae.config.force_upcast is True
    assert _config("zimage") == {
        key: value for key, value in _config("flux1-dev").items() if key != "_name_or_path"
    }
    qwen = _load(files["qwen-image", "original"], "qwen-image")
    shipped = _config("qwen-image")
    assert qwen.config.latents_mean == shipped["latents_mean"]
    assert qwen.config.latents_std == shipped["latents_std"]
    assert qwen.config.latents_mean[:2] == [-0.7571, -0.7089]
    assert qwen.config.latents_std[-1] == 1.916


def test_shipped_configs_build_the_real_architectures() -> None:
    """The shipped Qwen-Image and Flux.2 configs are the released models' (the class
    defaults, which diffusers took from them)."""
    from diffusers import AutoencoderKLFlux2, AutoencoderKLQwenImage

    for folder, model_class in (
        ("qwen-image", AutoencoderKLQwenImage),
        ("flux2-klein", AutoencoderKLFlux2),
    ):
        shipped = _config(folder)
        assert shipped["_class_name"] == model_class.__name__
        defaults = model_class.extract_init_dict({})[0]
        for key, value in defaults.items():
            if key in shipped:
                assert _as_list(shipped[key]) == list(_as_list(value)), (folder, key)
    assert _config("flux2-klein")["latent_channels"] == 32
    assert _config("flux2-klein")["batch_norm_eps"] == 0.0001


def test_flux2_batch_norm_statistics_come_from_the_file(tmp_path: Path) -> None:
    vae = tiny.build_tiny_flux2_vae(SEED)
    with torch.no_grad():
        vae.bn.running_mean.copy_(torch.linspace(-1, 1, 128))
        vae.bn.running_var.copy_(torch.linspace(0.5, 2, 128))
    path = tmp_path / "flux2-vae.safetensors"
    save_file(tiny.kl_to_original(dict(vae.state_dict()), nested_quant=True), str(path))
    loaded = _load(path, "flux2-klein")
    assert torch.equal(loaded.bn.running_mean, vae.bn.running_mean)
    assert torch.equal(loaded.bn.running_var, vae.bn.running_var)
    assert loaded.bn.eps == 1e-4
    assert list(loaded.config.patch_size) == [2, 2]


def test_a_checkpoint_that_carries_the_vae(tmp_path: Path) -> None:
    """SD 3.5 single files keep the VAE under ``first_stage_model.``."""
    path = tiny.write_tiny_kl16_vae(
        tmp_path / "sd3.5_medium.safetensors",
        SEED,
        prefix="first_stage_model.",
        scaling=SD3_VAE_SCALING,
    )
    state = load_file(str(path))
    state["model.diffusion_model.pos_embed"] = torch.zeros(1, 4, 8)
    save_file(state, str(path))
    vae = _load(path, "sd3")
    source = tiny.build_tiny_kl16_vae(SEED, scaling=SD3_VAE_SCALING)
    with torch.no_grad():
        assert torch.equal(
            vae.decode(_latent("kl16")).sample, source.decode(_latent("kl16")).sample
        )


def test_a_diffusers_folder_and_a_pickle_load(tmp_path: Path) -> None:
    source = tiny.build_tiny_kl16_vae(SEED)
    source.save_pretrained(tmp_path / "vae")
    pickle = tmp_path / "ae.pt"
    torch.save(tiny.kl_to_original(dict(source.state_dict())), pickle)
    for path in (tmp_path / "vae", tmp_path, pickle):
        vae = _load(path, "zimage")
        with torch.no_grad():
            decoded = vae.decode(_latent("kl16")).sample
        assert torch.equal(decoded, source.decode(_latent("kl16")).sample)


def test_loading_asks_nothing_of_the_network(
    files: dict[tuple[str, str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for kind, family in FAMILY_OF.items():
        _load(files[kind, "original"], family)


def test_half_precision(files: dict[tuple[str, str], Path]) -> None:
    vae = load_vae_file(files["flux2", "original"], "flux2-klein", dtype=torch.bfloat16)
    assert {p.dtype for p in vae.parameters()} == {torch.bfloat16}
    assert vae.bn.num_batches_tracked.dtype == torch.long


def test_tiny_files_load_quickly(files: dict[tuple[str, str], Path]) -> None:
    times = {}
    for (kind, layout), path in files.items():
        if kind in FAMILY_OF:
            start = time.perf_counter()
            load_vae_file(path, FAMILY_OF[kind], dtype=torch.float32)
            times[f"{kind} {layout}"] = time.perf_counter() - start
    print("VAE load times:", {name: f"{s * 1000:.0f} ms" for name, s in times.items()})
    assert max(times.values()) < 2.0


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["flux1-dev", "sd3", "flux2-klein", "qwen-image"])
def test_real_size_vaes_load_with_the_shipped_configs(tmp_path: Path, folder: str) -> None:
    """A full-size random VAE of each shipped config, written in the original layout,
    loads as the same architecture with the same weights."""
    import diffusers

    config = _config(folder)
    torch.manual_seed(0)
    source = getattr(diffusers, config["_class_name"]).from_config(config).eval()
    state = dict(source.state_dict())
    if folder == "qwen-image":
        original = tiny.wan_to_original(state, num_res_blocks=2)
    else:
        original = tiny.kl_to_original(state, nested_quant=folder == "flux2-klein")
    path = tmp_path / "vae.safetensors"
    save_file({key: value.contiguous() for key, value in original.items()}, str(path))
    family = {"flux1-dev": "flux1"}.get(folder, folder)
    vae = load_vae_file(path, family, dtype=torch.float32)
    theirs = {k: v for k, v in source.config.items() if not k.startswith("_") and k in vae.config}
    assert {k: vae.config.get(k) for k in theirs} == theirs
    loaded = vae.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[key], state[key]) for key in state)


# --- refusing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "family", "is_", "needs"),
    [
        ("flux2", "flux1", "is a Flux.2 VAE, made for Flux.2", "Flux.1 needs a 16-channel VAE"),
        ("kl4", "sd3", "is an SD VAE (4 channels)", "SD 3.x needs a 16-channel VAE"),
        ("qwen-image", "flux2-klein", "is a Qwen-Image VAE", "Flux.2 Klein needs a Flux.2 VAE"),
        ("kl16", "qwen-image", "is a 16-channel VAE", "Qwen-Image needs a Qwen-Image VAE"),
    ],
)
def test_a_vae_of_another_family_is_refused(
    files: dict[tuple[str, str], Path], kind: str, family: str, is_: str, needs: str
) -> None:
    with pytest.raises(ModelError) as caught:
        load_vae_file(files[kind, "original"], family, dtype=torch.float32)
    message = str(caught.value)
    assert is_ in message and needs in message
    assert files[kind, "original"].name in message


def test_a_truncated_file_is_refused(files: dict[tuple[str, str], Path], tmp_path: Path) -> None:
    data = files["kl16", "original"].read_bytes()
    path = tmp_path / "ae.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated"):
        load_vae_file(path, "flux1", dtype=torch.float32)


@pytest.mark.parametrize(
    ("tensors", "is_"),
    [
        (
            {
                "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": (4, 32),
                "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": (32, 4),
            },
            "is a LoRA, not a VAE",
        ),
        ({"double_blocks.0.img_attn.qkv.weight": (96, 32)}, "is a diffusion model without a VAE"),
        ({"encoder.block.0.layer.0.SelfAttention.q.weight": (8, 8)}, "is a text encoder"),
        (
            {"decoder.conv1.weight": (8, 48, 3, 3, 3)},
            "is a VAE of a kind sdstudio does not load (48 latent channels)",
        ),
        ({"emb_params": (2, 768)}, "is a textual-inversion embedding"),
    ],
)
def test_files_that_hold_no_fitting_vae_are_refused(
    tmp_path: Path, tensors: dict[str, tuple[int, ...]], is_: str
) -> None:
    path = tmp_path / "file.safetensors"
    save_file({key: torch.zeros(shape) for key, shape in tensors.items()}, str(path))
    with pytest.raises(ModelError) as caught:
        load_vae_file(path, "flux1", dtype=torch.float32)
    message = str(caught.value)
    assert f"file.safetensors {is_}" in message
    assert "Flux.1 needs a 16-channel VAE (Flux.1, SD3, Z-Image), such as ae.safetensors" in message


def test_missing_and_misshapen_weights_are_refused(
    files: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    state = load_file(str(files["qwen-image", "original"]))
    del state["decoder.head.2.bias"]
    path = tmp_path / "qwen_image_vae.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelError, match=r"lacks 1 of the Qwen-Image VAE's weights"):
        load_vae_file(path, "qwen-image", dtype=torch.float32)
    state = load_file(str(files["kl16", "original"]))
    state["decoder.mid.attn_1.q.bias"] = torch.zeros(8)
    save_file(state, str(path.with_name("ae.safetensors")))
    with pytest.raises(ModelError, match=r"does not fit the 16-channel VAE"):
        load_vae_file(path.with_name("ae.safetensors"), "flux1", dtype=torch.float32)
    encoder_only = {k: v for k, v in state.items() if not k.startswith("encoder.")}
    save_file(encoder_only, str(path.with_name("decoder.safetensors")))
    with pytest.raises(
        ModelError, match=r"lacks weights of the 16-channel VAE .*such as encoder\."
    ):
        load_vae_file(path.with_name("decoder.safetensors"), "flux1", dtype=torch.float32)


def test_other_inputs_are_refused(files: dict[tuple[str, str], Path], tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    cases: list[tuple[Path, str, str]] = [
        (files["kl16", "original"], "sd1", "not sd1"),
        (tmp_path / "absent.safetensors", "flux1", "does not exist"),
        (text, "flux1", "not a VAE file"),
        (tmp_path, "flux1", "holds no VAE weights"),
    ]
    for path, family, words in cases:
        with pytest.raises(ModelError, match=words):
            load_vae_file(path, family, dtype=torch.float32)
    assert set(VAE_KINDS_BY_FAMILY) == {
        "flux1",
        "chroma",
        "sd3",
        "zimage",
        "flux2-klein",
        "qwen-image",
    }
