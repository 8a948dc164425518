"""AUTOMATIC1111 hypernetworks through the real engine, a tiny model and tiny files."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.generation import Engine
from sdstudio.engine.metadata import png_info, read_image_settings
from sdstudio.engine.metadata.a1111 import read_parameters, split_parameters
from sdstudio.engine.networks import Networks
from sdstudio.engine.prompting.hypernetwork_files import read_hypernetwork, run_network
from sdstudio.engine.prompting.hypernetworks import Hypernetworks
from sdstudio.engine.request import GenerationRequest
from sdstudio.testing.tiny_hypernetwork import (
    TINY_SELF_ATTENTION_WIDTH,
    reference_output,
    save_tiny_hypernetwork,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder: an (empty) ``Lora`` folder with ``hypernetworks`` beside it."""
    models = tmp_path_factory.mktemp("models")
    (models / "Lora").mkdir()
    folder = models / "hypernetworks"
    save_tiny_hypernetwork(folder / "Tiny.pt")
    save_tiny_hypernetwork(folder / "styles" / "second.pt", activation="tanh", seed=1)
    widths = (32, TINY_SELF_ATTENTION_WIDTH)
    save_tiny_hypernetwork(folder / "wide.pt", widths=widths, structure=(1, 1.5, 1), seed=2)
    save_tiny_hypernetwork(folder / "sd1.pt", widths=(768,), seed=3)
    return models


@pytest.fixture
def hyper_engine(root: Path, tmp_path: Path) -> Engine:
    """An engine with its own pipeline manager, finding hypernetworks beside the LoRAs."""
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.pipelines import PipelineManager

    manager = PipelineManager(choose_device("cpu"))
    networks = Networks(lambda: [root / "Lora"], lambda: [], manager.hash_cache)
    return Engine(manager, tmp_path / "inputs", networks=networks)


@pytest.fixture(scope="module")
def pipe(tiny_model: Path) -> Any:
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)


def request_for(model: Path, prompt: str, **changes: object) -> GenerationRequest:
    values: dict = {"steps": 3, "width": 64, "height": 64, "seed": 5, **changes}
    return GenerationRequest(model=str(model), prompt=prompt, **values)


def pixels(engine: Engine, request: GenerationRequest) -> np.ndarray:
    return np.asarray(next(engine.generate(request)).image)


def hooks_on(unet: Any) -> int:
    return sum(len(module._forward_pre_hooks) for module in unet.modules())


def test_strength_zero_is_the_plain_image_and_nothing_stays_behind(
    hyper_engine: Engine, tiny_model: Path
) -> None:
    plain = request_for(tiny_model, "a red boat")
    before = pixels(hyper_engine, plain)
    zero = pixels(hyper_engine, request_for(tiny_model, "a red boat<hypernet:tiny:0>"))
    full = pixels(hyper_engine, request_for(tiny_model, "a red boat<hypernet:tiny>"))
    half = pixels(hyper_engine, request_for(tiny_model, "a red boat<hypernet:TINY:0.5>"))
    after = pixels(hyper_engine, plain)
    assert np.array_equal(zero, before)
    assert not np.array_equal(full, before)
    assert not np.array_equal(half, full)
    assert np.array_equal(after, before)
    pipe = hyper_engine.pipelines.pipeline(str(tiny_model), plain.mode)
    assert hooks_on(pipe.unet) == 0


def test_a_batch_keeps_the_hypernetwork_for_every_image(
    hyper_engine: Engine, tiny_model: Path
) -> None:
    tagged = request_for(tiny_model, "a boat <hypernet:tiny:1>", batch_size=2)
    first, second = (np.asarray(r.image) for r in hyper_engine.generate(tagged))
    alone = pixels(hyper_engine, request_for(tiny_model, "a boat <hypernet:tiny:1>", seed=6))
    assert np.array_equal(second, alone)
    assert not np.array_equal(first, second)


def test_keys_and_values_follow_a1111_in_sequence(pipe: Any, root: Path) -> None:
    """``context_k = net_k(context)`` per file in tag order; a name given twice runs twice
    with its last strength; self-attention widths are changed too."""
    folder = root / "hypernetworks"
    tiny = save_tiny_hypernetwork(root / "ref" / "tiny.pt")
    second = save_tiny_hypernetwork(root / "ref" / "second.pt", activation="tanh", seed=1)
    wide = save_tiny_hypernetwork(
        root / "ref" / "wide.pt", widths=(32, 64), structure=(1, 1.5, 1), seed=2
    )
    hypernets = Hypernetworks(lambda: [folder])
    prompt = "x <hypernet:tiny:0.3> <hypernet:second:0.6> <hypernet:tiny:0.8> <hypernet:wide>"
    used = hypernets.apply(pipe, prompt)
    assert [(name, strength) for name, _p, _h, strength in used] == [
        ("tiny", 0.8),
        ("second", 0.6),
        ("tiny", 0.8),
        ("wide", 1.0),
    ]
    blocks = [m for m in pipe.unet.modules() if hasattr(m, "attn2")]
    context, image = torch.randn(1, 7, 32), torch.randn(1, 5, 64)
    try:
        got_k, got_v = blocks[0].attn2.to_k(context), blocks[0].attn2.to_v(context)
        got_self = blocks[0].attn1.to_k(image)
    finally:
        hypernets.remove()
    k, v = context, context
    for networks, strength in ((tiny, 0.8), (second, 0.6), (tiny, 0.8), (wide, 1.0)):
        k = reference_output(networks[32][0], k, strength)
        v = reference_output(networks[32][1], v, strength)
    torch.testing.assert_close(got_k, blocks[0].attn2.to_k(k))
    torch.testing.assert_close(got_v, blocks[0].attn2.to_v(v))
    changed = reference_output(wide[64][0], image, 1.0)
    torch.testing.assert_close(got_self, blocks[0].attn1.to_k(changed))
    assert hooks_on(pipe.unet) == 0


@pytest.mark.parametrize(
    "options",
    [
        {"structure": (1, 2, 1), "activation": "relu"},
        {"structure": (1, 1.5, 1), "activation": "linear"},
        {"structure": (1, 2, 1), "activation": "relu", "layer_norm": True},
        {"structure": (1, 1.5, 1), "activation": "linear", "layer_norm": True},
        {
            "structure": (1, 2, 2, 1),
            "activation": "swish",
            "dropout": True,
            "activate_output": True,
        },
    ],
)
def test_layer_structures_are_rebuilt_as_a1111_builds_them(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    reference = save_tiny_hypernetwork(tmp_path / "h.pt", **options)
    file = read_hypernetwork(tmp_path / "h.pt")
    x = torch.randn(2, 3, 32)
    for built, expected in zip(file.layers[32], reference[32], strict=True):
        with torch.no_grad():
            torch.testing.assert_close(
                run_network(built, x, 0.7), reference_output(expected, x, 0.7)
            )


def test_the_oldest_layer_names_are_read(tmp_path: Path) -> None:
    reference = save_tiny_hypernetwork(tmp_path / "new.pt", activation="linear")
    old = {
        32: tuple(
            {
                k.replace("linear.0", "linear1").replace("linear.1", "linear2"): v
                for k, v in sd.items()
            }
            for sd in (reference[32][0].state_dict(), reference[32][1].state_dict())
        )
    }
    torch.save(old, tmp_path / "old.pt")  # no settings at all: A1111's defaults
    file = read_hypernetwork(tmp_path / "old.pt")
    x = torch.randn(1, 4, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            run_network(file.layers[32][0], x, 1.0), reference_output(reference[32][0], x, 1.0)
        )


def test_a_file_holding_code_is_refused(tmp_path: Path, pipe: Any) -> None:
    from test_pickles_refused import REFUSAL, evil_file, marker_of

    reference = save_tiny_hypernetwork(tmp_path / "clean.pt")
    content = {32: tuple(n.state_dict() for n in reference[32]), "layer_structure": [1, 2, 1]}
    path = evil_file(tmp_path / "hypernetworks" / "evil.pt", content)
    with pytest.raises(ModelError, match=REFUSAL):
        Hypernetworks(lambda: [path.parent]).apply(pipe, "a <hypernet:evil:1>")
    assert not marker_of(path).exists()
    assert hooks_on(pipe.unet) == 0


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a <hypernet:missing:1>", "Hypernetwork 'missing' not found"),
        ("a <hypernet:sd1:1>", r"sd1 \(made for SD 1.x models\) has networks for widths 768"),
    ],
)
def test_unusable_hypernetworks_are_clear_errors(
    pipe: Any, root: Path, prompt: str, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        Hypernetworks(lambda: [root / "hypernetworks"]).apply(pipe, prompt)


def test_unusable_files_are_clear_errors(tmp_path: Path) -> None:
    torch.save({"layer_structure": [1, 2, 1], "name": "x"}, tmp_path / "empty.pt")
    with pytest.raises(ModelError, match="no layers keyed by context width"):
        read_hypernetwork(tmp_path / "empty.pt")
    save_tiny_hypernetwork(tmp_path / "bad.pt", extra={"layer_structure": [2, 1]})
    with pytest.raises(ModelError, match="starts and ends with 1"):
        read_hypernetwork(tmp_path / "bad.pt")
    save_tiny_hypernetwork(tmp_path / "norm.pt", extra={"is_layer_norm": True})
    with pytest.raises(ModelError, match="do not fit its layer structure"):
        read_hypernetwork(tmp_path / "norm.pt")
    save_tiny_hypernetwork(tmp_path / "act.pt", extra={"activation_func": "wobble"})
    with pytest.raises(ModelError, match="activation function sdstudio does not know: 'wobble'"):
        read_hypernetwork(tmp_path / "act.pt")


def test_sdxl_and_flow_models_are_refused(root: Path, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from diffusers import UNet2DConditionModel

    from sdstudio.testing.tiny_refiner import write_tiny_sdxl_configs

    configs = write_tiny_sdxl_configs(tmp_path / "sdxl")
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet"))
    hypernets = Hypernetworks(lambda: [root / "hypernetworks"])
    with pytest.raises(InvalidRequest, match="SDXL models have no hypernetworks"):
        hypernets.apply(SimpleNamespace(unet=unet), "a <hypernet:tiny:1>")
    with pytest.raises(InvalidRequest, match=r"work with SD 1\.x and SD 2\.x models"):
        hypernets.apply(SimpleNamespace(transformer=object()), "a <hypernet:tiny:1>")
    assert hypernets.apply(SimpleNamespace(unet=unet), "a plain prompt") == []


def test_recorded_written_read_back_and_rerun_exactly(
    hyper_engine: Engine, tiny_model: Path, root: Path, tmp_path: Path
) -> None:
    tagged = request_for(tiny_model, "a boat <hypernet:tiny:0.8> <hypernet:second:0.5>")
    result = next(hyper_engine.generate(tagged))
    folder = root / "hypernetworks"
    hashes = [
        hashlib.sha256(p.read_bytes()).hexdigest()[:10]
        for p in (folder / "Tiny.pt", folder / "styles" / "second.pt")
    ]
    assert result.record.extra == {
        "hypernets": [
            {"name": "tiny", "weight": 0.8, "hash": hashes[0]},
            {"name": "second", "weight": 0.5, "hash": hashes[1]},
        ]
    }
    path = tmp_path / "image.png"
    result.image.save(path, pnginfo=png_info(result.record))
    with Image.open(path) as image:
        text = image.text["parameters"]  # type: ignore[attr-defined]
    parts = split_parameters(text)
    assert parts.prompt == tagged.prompt
    assert parts.settings["Hypernet hashes"] == f"tiny: {hashes[0]}, second: {hashes[1]}"
    assert "Hypernet" not in parts.settings  # A1111 would add a second tag for it
    assert read_parameters(text).request.prompt == tagged.prompt
    rerun = read_image_settings(path).request
    assert np.array_equal(pixels(hyper_engine, rerun), np.asarray(result.image))


def test_an_old_a1111_hypernet_setting_becomes_a_tag_and_reruns(
    hyper_engine: Engine, tiny_model: Path
) -> None:
    """A1111 before extra networks wrote ``Hypernet``, ``Hypernet hash`` and ``Hypernet
    strength``; its reader appends ``<hypernet:name:strength>`` to the prompt."""
    text = (
        "a boat\nSteps: 3, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 64x64, "
        "Hypernet: tiny, Hypernet hash: 1b0c3a2d, Hypernet strength: 0.8"
    )
    parsed = read_parameters(text, model=str(tiny_model))
    assert parsed.request.prompt == "a boat<hypernet:tiny:0.8>"
    assert parsed.extras == {"Hypernet hash": "1b0c3a2d"}
    full = read_parameters(text.replace(", Hypernet strength: 0.8", ""), model=str(tiny_model))
    assert full.request.prompt == "a boat<hypernet:tiny:1.0>"
    tag_text = text.replace("a boat\n", "a boat<hypernet:tiny:0.8>\n").split(", Hypernet:")[0]
    old = pixels(hyper_engine, parsed.request)
    assert np.array_equal(
        old, pixels(hyper_engine, read_parameters(tag_text, model=str(tiny_model)).request)
    )
    plain = read_parameters(text.split(", Hypernet:")[0], model=str(tiny_model)).request
    assert not np.array_equal(old, pixels(hyper_engine, plain))


def test_without_networks_hypernet_tags_are_removed_with_a_notice(
    engine: Engine, tiny_model: Path
) -> None:
    notices: list[str] = []
    request = request_for(tiny_model, "a boat <hypernet:x:1>")
    result = next(engine.generate(request, on_status=notices.append))
    assert any("hypernetwork files are not searched" in n and "x" in n for n in notices)
    assert result.record.extra == {}


def test_hypernetwork_folders_are_listed_as_their_kind(tmp_path: Path) -> None:
    from sdstudio.engine.models.catalog import scan_folder

    a1111 = tmp_path / "webui"
    (a1111 / "models" / "Stable-diffusion").mkdir(parents=True)
    save_tiny_hypernetwork(a1111 / "models" / "hypernetworks" / "anime.pt")
    plain = tmp_path / "plain"
    save_tiny_hypernetwork(plain / "hypernetworks" / "ink.pt")
    found = [(e.name, e.kind) for e in scan_folder(a1111).entries + scan_folder(plain).entries]
    assert found == [("anime", "hypernetwork"), ("ink", "hypernetwork")]


def test_a_hypernet_tag_is_toggled_like_a_lora_tag() -> None:
    from sdstudio.engine.prompts import toggle_lora_tag

    added = toggle_lora_tag("a boat, <lora:anime:1>", "Ink", 0.8, kind="hypernet")
    assert added == "a boat, <lora:anime:1> <hypernet:Ink:0.8>"
    assert toggle_lora_tag(added, "ink", kind="hypernet") == "a boat, <lora:anime:1>"
    assert toggle_lora_tag("a <hypernet:ink:1>", "ink") == "a <hypernet:ink:1> <lora:ink:1>"
