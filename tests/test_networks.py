"""LoRAs and textual-inversion embeddings through the real engine and a tiny model."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.generation import Engine
from sdstudio.engine.metadata import png_info
from sdstudio.engine.metadata.a1111 import split_parameters
from sdstudio.engine.network_files import find_file, named_in
from sdstudio.engine.networks import Networks
from sdstudio.engine.request import GenerationRequest


@pytest.fixture(scope="session")
def network_dirs(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A LoRA folder (diffusers and kohya files of one LoRA) and an embeddings folder."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("networks")
    loras, embeddings = root / "Lora", root / "embeddings"
    embeddings.mkdir()
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
    # init_lora_weights=False: random A *and* B (peft's default B is zero, a no-op LoRA).
    unet_config = LoraConfig(
        r=4,
        lora_alpha=4,
        init_lora_weights=False,
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
    )
    text_config = LoraConfig(
        r=4,
        lora_alpha=4,
        init_lora_weights=False,
        target_modules=["q_proj", "k_proj", "v_proj", "out_proj"],
    )
    pipe.unet.add_adapter(unet_config)
    pipe.text_encoder.add_adapter(text_config)
    unet_layers = get_peft_model_state_dict(pipe.unet)
    text_layers = get_peft_model_state_dict(pipe.text_encoder)
    StableDiffusionPipeline.save_lora_weights(
        loras,
        unet_lora_layers=unet_layers,
        text_encoder_lora_layers=text_layers,
        weight_name="Tiny.safetensors",
        safe_serialization=True,
    )
    save_file(_kohya(unet_layers, text_layers), loras / "tiny_kohya.safetensors")
    torch.save(
        {"string_to_param": {"*": torch.randn(2, 32)}, "name": "mystyle"},
        embeddings / "mystyle.pt",
    )
    save_file({"emb_params": torch.randn(1, 32)}, embeddings / "badthing.safetensors")
    return loras, embeddings


def _kohya(unet: dict, text: dict) -> dict:
    """The kohya (A1111) layout: ``lora_unet_<module>.lora_down.weight`` and ``.alpha``."""
    out = {}
    for prefix, layers in (("lora_unet_", unet), ("lora_te_text_model_", text)):
        for key, value in layers.items():
            module, part = re.fullmatch(r"(.*)\.lora_([AB])\.weight", key).groups()  # type: ignore[union-attr]
            name = prefix + module.replace(".", "_")
            out[f"{name}.lora_{'down' if part == 'A' else 'up'}.weight"] = value.contiguous()
            if part == "A":
                out[f"{name}.alpha"] = value.new_tensor(float(value.shape[0]))
    return out


@pytest.fixture
def net_engine(network_dirs: tuple[Path, Path], tmp_path: Path) -> Engine:
    """An engine with its own pipeline manager (LoRAs must not reach the shared one)."""
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.pipelines import PipelineManager

    manager = PipelineManager(choose_device("cpu"))
    loras, embeddings = network_dirs
    networks = Networks(lambda: [loras], lambda: [embeddings], manager.hash_cache)
    return Engine(manager, tmp_path / "inputs", networks=networks)


def request_for(model: Path, prompt: str, **changes: object) -> GenerationRequest:
    values: dict = {"steps": 3, "width": 64, "height": 64, "seed": 5, **changes}
    return GenerationRequest(model=str(model), prompt=prompt, **values)


def pixels(engine: Engine, request: GenerationRequest) -> np.ndarray:
    return np.asarray(next(engine.generate(request)).image)


def sha12(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_lora_changes_the_image_and_leaves_nothing_behind(
    net_engine: Engine, tiny_model: Path, network_dirs: tuple[Path, Path]
) -> None:
    plain = request_for(tiny_model, "a red boat")
    before = pixels(net_engine, plain)
    full = pixels(net_engine, request_for(tiny_model, "a red boat <lora:tiny:1>"))
    half = pixels(net_engine, request_for(tiny_model, "a red boat <lora:TINY:0.5>"))
    after = pixels(net_engine, plain)
    assert not np.array_equal(full, before)
    assert not np.array_equal(half, full)
    assert np.array_equal(after, before)
    again = pixels(net_engine, request_for(tiny_model, "a red boat <lora:tiny:1>"))
    assert np.array_equal(again, full)  # the cached adapter, at weight 1 again
    with_clip_skip = pixels(net_engine, plain.replace(clip_skip=2))
    fresh = Engine(net_engine.pipelines.__class__(net_engine.pipelines.device), Path("unused"))
    assert np.array_equal(pixels(fresh, plain.replace(clip_skip=2)), with_clip_skip)


def test_kohya_file_gives_the_same_image(net_engine: Engine, tiny_model: Path) -> None:
    diffusers_image = pixels(net_engine, request_for(tiny_model, "a boat <lora:tiny:0.8>"))
    kohya_image = pixels(net_engine, request_for(tiny_model, "a boat <lora:tiny_kohya:0.8>"))
    assert np.abs(diffusers_image.astype(int) - kohya_image.astype(int)).max() <= 1


def test_unknown_lora_is_a_clear_error(
    net_engine: Engine, tiny_model: Path, network_dirs: tuple[Path, Path]
) -> None:
    with pytest.raises(InvalidRequest, match=r"LoRA 'nope' not found in .*Lora"):
        next(net_engine.generate(request_for(tiny_model, "a boat <lora:nope:1>")))


def test_hashes_are_recorded_and_written_as_a1111_does(
    net_engine: Engine, tiny_model: Path, network_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    loras, embeddings = network_dirs
    result = next(net_engine.generate(request_for(tiny_model, "mystyle boat <lora:tiny:0.7>")))
    lora_hash, ti_hash = sha12(loras / "Tiny.safetensors"), sha12(embeddings / "mystyle.pt")
    assert result.record.extra == {
        "loras": [{"name": "tiny", "weight": 0.7, "hash": lora_hash}],
        "embeddings": [{"name": "mystyle", "hash": ti_hash}],
    }
    path = tmp_path / "image.png"
    result.image.save(path, pnginfo=png_info(result.record))
    with Image.open(path) as image:
        settings = split_parameters(image.text["parameters"]).settings  # type: ignore[attr-defined]
    assert settings["Lora hashes"] == f"tiny: {lora_hash}"
    assert settings["TI hashes"] == f"mystyle: {ti_hash}"
    plain = next(net_engine.generate(request_for(tiny_model, "a boat")))
    assert plain.record.extra == {}


def test_embedding_named_in_the_prompt_is_used(net_engine: Engine, tiny_model: Path) -> None:
    plain = request_for(tiny_model, "a boat in mystyle")
    fresh = Engine(net_engine.pipelines.__class__(net_engine.pipelines.device), Path("unused"))
    without = pixels(fresh, plain)
    with_embedding = pixels(net_engine, plain)
    assert not np.array_equal(with_embedding, without)
    negative = pixels(net_engine, plain.replace(prompt="a boat", negative_prompt="BadThing"))
    assert not np.array_equal(
        negative, pixels(fresh, plain.replace(prompt="a boat", negative_prompt="BadThing"))
    )
    # Not named: not loaded, and the image is the bare model's.
    assert np.array_equal(
        pixels(net_engine, plain.replace(prompt="a boat")),
        pixels(fresh, plain.replace(prompt="a boat")),
    )
    assert net_engine.networks is not None and not net_engine.networks._tokens
    # The A1111 embedding path (clip skip 2) reads both vectors of the embedding.
    skipped = pixels(net_engine, plain.replace(clip_skip=2))
    assert not np.array_equal(skipped, pixels(fresh, plain.replace(clip_skip=2)))


def test_multi_vector_tokens_are_spelled_out_for_embeddings(
    net_engine: Engine, tiny_model: Path
) -> None:
    from sdstudio.engine import prompt_embeds

    pipe = net_engine.pipelines.pipeline(str(tiny_model), request_for(tiny_model, "").mode)
    assert net_engine.networks is not None
    net_engine.networks.apply(pipe, "MyStyle", "")
    ids = pipe.tokenizer.convert_tokens_to_ids(["mystyle", "mystyle_1"])
    chunk = prompt_embeds.tokenize_chunks(pipe.tokenizer, "a (MyStyle:1.2) boat")[0]
    assert chunk.tokens[2:4] == ids
    assert prompt_embeds.prompt_arguments(pipe, "MyStyle boat", "", 1)["prompt"] == "mystyle boat"


def test_names_are_found_case_insensitively(network_dirs: tuple[Path, Path]) -> None:
    loras, _ = network_dirs
    assert find_file("tiny", [loras], (".safetensors",)) == loras / "Tiny.safetensors"
    assert find_file("missing", [loras], (".safetensors",)) is None
    assert named_in("mystyle", ["a MyStyle, boat"])
    assert not named_in("mystyle", ["a mystyles boat", "no-mystyle-here"])


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_lora_works_in_img2img_and_after_the_model_was_unloaded(
    net_engine: Engine, tiny_model: Path, init_image: Path
) -> None:
    from sdstudio.engine.request import Mode

    tagged = request_for(tiny_model, "a boat <lora:tiny:1>")
    first = pixels(net_engine, tagged)
    image_request = tagged.replace(mode=Mode.IMG2IMG, init_image=str(init_image), strength=0.6)
    with_lora = pixels(net_engine, image_request)
    without = pixels(net_engine, image_request.replace(prompt="a boat"))
    assert not np.array_equal(with_lora, without)
    net_engine.pipelines.unload()
    assert np.array_equal(pixels(net_engine, tagged), first)
    assert np.array_equal(pixels(net_engine, image_request.replace(prompt="a boat")), without)


def test_network_folders_of_tools_and_plain_folders(tmp_path: Path) -> None:
    from sdstudio.engine.models.catalog import network_folders
    from sdstudio.engine.paths import AppPaths
    from sdstudio.engine.settings import Settings

    a1111, plain = tmp_path / "webui", tmp_path / "plain"
    for folder in ("models/Stable-diffusion", "models/Lora", "embeddings"):
        (a1111 / folder).mkdir(parents=True)
    plain.mkdir()
    paths = AppPaths.under(tmp_path / "home")
    settings = Settings(model_folders=(str(a1111), str(plain), str(tmp_path / "gone")))
    assert network_folders(paths, settings, "lora") == [a1111 / "models/Lora", plain]
    assert network_folders(paths, settings, "embedding") == [a1111 / "embeddings", plain]


def test_cli_finds_loras_in_the_app_models_folder(
    capsys: pytest.CaptureFixture[str],
    tiny_model: Path,
    network_dirs: tuple[Path, Path],
    sdstudio_home: Path,
    tmp_path: Path,
) -> None:
    import json
    import shutil

    from sdstudio.cli import main

    lora_folder = sdstudio_home / "data" / "models" / "Lora"
    lora_folder.mkdir(parents=True)
    shutil.copy(network_dirs[0] / "Tiny.safetensors", lora_folder / "detail.safetensors")
    base = ["generate", "--model", str(tiny_model), "--steps", "2", "--width", "64"]
    base += ["--height", "64", "--out", str(tmp_path / "out"), "--json", "--prompt"]
    assert main([*base, "a boat <lora:detail:0.5>"]) == 0
    assert main([*base, "a boat <lora:nope:1>"]) == 1
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "LoRA 'nope' not found in" in events[-1]["message"]
    [image] = (tmp_path / "out").iterdir()
    with Image.open(image) as opened:
        assert "Lora hashes" in opened.text["parameters"]  # type: ignore[attr-defined]


def test_without_networks_lora_tags_are_removed_with_a_notice(
    engine: Engine, tiny_model: Path
) -> None:
    notices: list[str] = []
    result = next(
        engine.generate(request_for(tiny_model, "a boat <lora:x:1>"), on_status=notices.append)
    )
    assert any("LoRA files are not searched" in n and "x" in n for n in notices)
    assert result.record.extra == {}


def test_sdxl_embedding_loads_into_both_text_encoders(tmp_path: Path) -> None:
    """An SDXL embedding (clip_l + clip_g) changes the image when named, and only then."""
    import torch
    from safetensors.torch import save_file
    from test_model_loading import write_tiny_sdxl_folder

    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.testing.checkpoints import random_original_checkpoint

    folder = write_tiny_sdxl_folder(tmp_path / "tiny-sdxl")
    checkpoint = tmp_path / "tiny-sdxl.safetensors"
    state = random_original_checkpoint(folder)
    save_file({k: v * 0.1 if v.is_floating_point() else v for k, v in state.items()}, checkpoint)
    embeddings = tmp_path / "embeddings"
    embeddings.mkdir()
    torch.manual_seed(3)
    sdxl_file = embeddings / "xlstyle.safetensors"
    save_file({"clip_l": torch.randn(2, 32), "clip_g": torch.randn(2, 48)}, sdxl_file)
    save_file({"emb_params": torch.randn(1, 32)}, embeddings / "sd1only.safetensors")

    def engine() -> Engine:
        manager = PipelineManager(choose_device("cpu"), single_file_config=folder)
        networks = Networks(lambda: [], lambda: [embeddings], manager.hash_cache)
        return Engine(manager, tmp_path / "inputs", networks=networks)

    with_networks, bare = (
        engine(),
        Engine(
            PipelineManager(choose_device("cpu"), single_file_config=folder), tmp_path / "inputs"
        ),
    )
    named = request_for(checkpoint, "a boat, xlstyle")
    image = next(with_networks.generate(named))
    assert image.record.extra["embeddings"] == [{"name": "xlstyle", "hash": sha12(sdxl_file)}]
    pipe = with_networks.pipelines.pipeline(str(checkpoint), named.mode)
    bare_pipe = bare.pipelines.pipeline(str(checkpoint), named.mode)
    for prompt in ("a boat, xlstyle", "a boat, (xlstyle:1.2)"):  # text and A1111 paths
        loaded = encoded(pipe, prompt)
        plain = encoded(bare_pipe, prompt)
        assert not torch.equal(loaded[..., :32], plain[..., :32])  # CLIP L
        assert not torch.equal(loaded[..., 32:], plain[..., 32:])  # OpenCLIP G
    assert torch.equal(encoded(pipe, "a boat"), encoded(bare_pipe, "a boat"))
    notices: list[str] = []
    other = named.replace(prompt="a boat, sd1only")
    result = next(with_networks.generate(other, on_status=notices.append))
    assert any("sd1only.safetensors was not used" in n for n in notices)
    assert "embeddings" not in result.record.extra
    assert "xlstyle" not in pipe.tokenizer.get_vocab()
    assert "xlstyle" not in pipe.tokenizer_2.get_vocab()
    assert torch.equal(encoded(pipe, "a boat, xlstyle"), encoded(bare_pipe, "a boat, xlstyle"))


def encoded(pipe: object, prompt: str) -> Any:
    """The prompt embeddings the engine gives the pipeline (text or A1111 path)."""
    from sdstudio.engine import prompt_embeds

    arguments = prompt_embeds.prompt_arguments(pipe, prompt, "", 1)
    if "prompt_embeds" in arguments:
        return arguments["prompt_embeds"]
    return pipe.encode_prompt(arguments["prompt"], device="cpu")[0]  # type: ignore[attr-defined]


def test_a_lora_for_another_family_is_refused_before_loading(tmp_path: Path) -> None:
    from types import SimpleNamespace

    import torch
    from safetensors.torch import save_file

    from sdstudio.engine.networks import _check_family

    key = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight"
    xl_lora = tmp_path / "xl_detail.safetensors"
    save_file({key: torch.zeros(4, 2048)}, xl_lora)

    def pipe(width: int) -> object:
        return SimpleNamespace(
            unet=SimpleNamespace(config=SimpleNamespace(cross_attention_dim=width))
        )

    with pytest.raises(
        InvalidRequest, match=r"xl_detail is made for SDXL models; the chosen model is SD 1\.x"
    ):
        _check_family(pipe(768), xl_lora)
    _check_family(pipe(2048), xl_lora)  # fits
    _check_family(pipe(32), xl_lora)  # a model of unknown family: loading decides


def test_an_incomplete_lora_gets_a_readable_error(
    net_engine: Engine, tiny_model: Path, network_dirs: tuple[Path, Path]
) -> None:
    import torch
    from safetensors.torch import save_file

    from sdstudio.engine.errors import ModelError

    loras, _ = network_dirs
    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"
    save_file({key: torch.zeros(4, 32)}, loras / "half.safetensors")
    try:
        with pytest.raises(ModelError, match=r"half.safetensors: it lacks the tensor .*lora_up"):
            next(net_engine.generate(request_for(tiny_model, "a boat <lora:half:1>")))
        before = pixels(net_engine, request_for(tiny_model, "a boat"))
        assert before.shape == (64, 64, 3)  # the engine keeps working
    finally:
        (loras / "half.safetensors").unlink()
