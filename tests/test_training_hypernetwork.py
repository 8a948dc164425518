"""Hypernetwork training on the tiny models: what learns, the A1111 file read back by
generation's loader, generation by tag, resume, and refused settings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.models.loading import load_pickle_data
from sdstudio.engine.prompting.hypernetwork_files import read_hypernetwork
from sdstudio.engine.training.datasets import BucketOptions
from sdstudio.engine.training.events import CancelFlag, TrainingEvent
from sdstudio.engine.training.hypernetwork_options import HypernetworkOptions
from sdstudio.engine.training.hypernetwork_trainer import HypernetworkTrainer, train_hypernetwork
from sdstudio.engine.training.loop import run_training
from sdstudio.engine.training.options import TrainingOptions


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three noise images with tag captions, in a ``2_shapes`` folder."""
    root = tmp_path_factory.mktemp("dataset")
    folder = root / "2_shapes"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"shape, colour {i}", "utf-8")
    return root


def options(model: Path, data: Path, out: Path, **changes: Any) -> HypernetworkOptions:
    own = {f.name for f in dataclasses.fields(HypernetworkOptions)} - {"base"}
    hyper = {k: changes.pop(k) for k in list(changes) if k in own}
    base = TrainingOptions(
        model=model,
        data=data,
        name="shapes",
        output_dir=out / "hypernetworks",
        state_dir=out / "state",
        learning_rate=1e-3,
        max_train_steps=3,
        device="cpu",
        buckets=BucketOptions((64, 64), 64, 128, 64),
    )
    return HypernetworkOptions(dataclasses.replace(base, **changes), **hyper)


def test_only_the_networks_learn_and_the_file_is_a1111s(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    opts = options(
        tiny_model,
        dataset,
        tmp_path,
        activation="relu",
        layer_norm=True,
        dropout=(0.0, 0.1, 0.0),
        gradient_checkpointing=True,
    )
    events: list[TrainingEvent] = []
    trainer = HypernetworkTrainer(opts, on_event=events.append)
    pipe = trainer.model.pipe
    frozen = {
        f"{part}.{name}": p.detach().clone()
        for part in ("unet", "text_encoder", "vae")
        for name, p in getattr(pipe, part).named_parameters()
    }
    start = trainer.weights()
    assert trainer.sizes == (32, 64)  # the tiny UNet's text width and its self-attention's
    hooked = len(trainer._handles)
    assert hooked > 0

    path = run_training(trainer, on_event=events.append)

    steps = [e.fields() for e in events if e.kind == "step"]
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert all(np.isfinite(s["loss"]) for s in steps)
    for part in ("unet", "text_encoder", "vae"):
        module = getattr(pipe, part)
        assert not any(p.requires_grad for p in module.parameters())
        for name, p in module.named_parameters():
            assert torch.equal(p, frozen[f"{part}.{name}"]), name
    trained = trainer.weights()
    assert set(trained) == set(start)
    assert all(not torch.equal(trained[k], start[k]) for k in trained if k.endswith("0.weight"))
    assert not trainer._handles  # unhooked once written

    assert path == tmp_path / "hypernetworks" / "shapes.pt"
    data = load_pickle_data(path)  # the restricted loader generation reads with
    assert {k for k in data if isinstance(k, int)} == {32, 64}
    keys, values = data[32]
    assert list(keys) == [
        "linear.0.weight",
        "linear.0.bias",
        "linear.2.weight",
        "linear.2.bias",
        "linear.4.weight",
        "linear.4.bias",
        "linear.5.weight",
        "linear.5.bias",
    ]  # linear, relu, norm, dropout; linear, norm (no activation after the last layer)
    assert keys["linear.0.weight"].shape == (64, 32) and values["linear.4.weight"].shape == (32, 64)
    assert {k: data[k] for k in data if not isinstance(k, int)} == {
        "step": 3,
        "name": "shapes",
        "layer_structure": [1.0, 2.0, 1.0],
        "activation_func": "relu",
        "is_layer_norm": True,
        "weight_initialization": "Normal",
        "sd_checkpoint": None,
        "sd_checkpoint_name": "tiny-sd",
        "activate_output": False,
        "use_dropout": True,
        "dropout_structure": [0.0, 0.1, 0.0],
        "last_layer_dropout": True,
        "optional_info": None,
    }
    read = read_hypernetwork(path)
    assert read.widths == (32, 64) and read.settings.dropout == (0.0, 0.1, 0.0)
    rebuilt = dict(read.layers[64][1].named_parameters())
    for name, weight in rebuilt.items():
        assert torch.equal(weight, trained[f"64.v.{name}"]), name


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_weights_start_as_a1111_initializes_them(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    normal = HypernetworkTrainer(options(tiny_model, dataset, tmp_path), on_event=lambda e: None)
    weights = normal.weights()
    assert all(not w.any() for k, w in weights.items() if k.endswith("bias"))
    first = weights["64.k.0.weight"]
    assert 0.007 < float(first.std()) < 0.013  # N(0, 0.01)
    assert not torch.equal(first, weights["64.v.0.weight"])
    again = HypernetworkTrainer(options(tiny_model, dataset, tmp_path), on_event=lambda e: None)
    assert torch.equal(again.weights()["64.k.0.weight"], first)  # from the run's seed
    xavier = HypernetworkTrainer(
        options(tiny_model, dataset, tmp_path, weight_init="XavierUniform", sizes=(64,)),
        on_event=lambda e: None,
    )
    weight = xavier.weights()["64.k.0.weight"]
    bound = (6 / (64 + 128)) ** 0.5
    assert float(weight.abs().max()) <= bound and float(weight.abs().max()) > bound * 0.9
    assert xavier.sizes == (64,)


def run_cli(args: list[str], capsys: Any) -> tuple[int, list[dict[str, Any]]]:
    from sdstudio.cli import main

    code = main(args)
    lines = capsys.readouterr().out.splitlines()
    return code, [json.loads(line) for line in lines if line.startswith("{")]


def generate(model: Path, out: Path, prompt: str, capsys: Any) -> np.ndarray:
    args = ["generate", "--model", str(model), "--steps", "2", "--width", "64", "--height", "64"]
    args += ["--seed", "3", "--out", str(out), "--json", "--prompt", prompt]
    code, events = run_cli(args, capsys)
    assert code == 0, events
    [image] = out.iterdir()
    with Image.open(image) as opened:
        return np.asarray(opened.convert("RGB"), dtype=np.int16)


def train_args(model: Path, data: Path, name: str, *extra: str) -> list[str]:
    args = ["train", "hypernetwork", "--model", str(model), "--data", str(data), "--name", name]
    args += ["--resolution", "64", "--min-bucket-reso", "64", "--max-bucket-reso", "128"]
    return [*args, "--max-train-steps", "2", "--learning-rate", "0.01", "--device", "cpu", *extra]


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_cli_trains_a_hypernetwork_that_generate_applies_by_tag(
    tiny_model: Path, dataset: Path, sdstudio_home: Path, tmp_path: Path, capsys: Any
) -> None:
    extra = ("--layer-structure", "1,1.5,1", "--activation", "Swish", "--weight-init")
    extra += ("XavierNormal", "--save-every-n-steps", "1", "--json")
    code, events = run_cli(train_args(tiny_model, dataset, "hyper", *extra), capsys)
    assert code == 0 and events[-1]["event"] == "done", events[-1]
    [checkpoint] = [event for event in events if event["event"] == "checkpoint"]
    states = sdstudio_home / "data" / "training" / "hypernetworks" / "hyper"
    assert checkpoint["path"] == str(states / "step-000001")
    assert (states / "step-000001" / "hyper.pt").is_file()
    written = sdstudio_home / "data" / "models" / "hypernetworks" / "hyper.pt"
    assert events[-1]["path"] == str(written)
    file = read_hypernetwork(written)
    assert file.settings.activation == "swish" and file.settings.structure == (1.0, 1.5, 1.0)

    used = generate(tiny_model, tmp_path / "a", "x <hypernet:hyper:1>", capsys)
    off = generate(tiny_model, tmp_path / "b", "x <hypernet:hyper:0>", capsys)
    plain = generate(tiny_model, tmp_path / "c", "x", capsys)
    assert np.abs(used - plain).max() > 0
    assert np.array_equal(off, plain)

    code, events = run_cli(train_args(tiny_model, dataset, "hyper", "--json"), capsys)
    assert code == 1 and "already exists" in events[-1]["message"]
    assert "--overwrite" in events[-1]["message"]
    code, events = run_cli(
        train_args(tiny_model, dataset, "x", "--dropout", "0,a", "--json"), capsys
    )
    assert code == 1 and "--dropout '0,a' must be numbers" in events[-1]["message"]


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_resume_equals_a_straight_run(tiny_model: Path, dataset: Path, tmp_path: Path) -> None:
    changes = {"dropout": (0.0, 0.2, 0.0), "lr_scheduler": "cosine", "max_train_steps": 4}
    straight = train_hypernetwork(
        options(tiny_model, dataset, tmp_path / "a", **changes), on_event=lambda e: None
    )
    assert straight is not None

    cancel = CancelFlag()
    events: list[TrainingEvent] = []

    def on_event(event: TrainingEvent) -> None:
        events.append(event)
        if event.kind == "step" and event.fields()["step"] == 2:
            cancel.set()

    split = options(tiny_model, dataset, tmp_path / "b", **changes)
    assert train_hypernetwork(split, on_event=on_event, cancel=cancel) is None
    state = Path(events[-1].fields()["path"])
    assert read_hypernetwork(state / "shapes.pt").widths == (32, 64)
    resumed = train_hypernetwork(split, on_event=lambda e: None, resume=state.parent)
    assert resumed is not None
    first, second = load_pickle_data(straight), load_pickle_data(resumed)
    for width in (32, 64):
        for a, b in zip(first[width], second[width], strict=True):
            assert all(torch.equal(a[k], b[k]) for k in a)
    assert first["step"] == second["step"] == 4

    other = options(tiny_model, dataset, tmp_path / "c", **{**changes, "activation": "elu"})
    with pytest.raises(InvalidRequest, match=r"other settings.*activation"):
        train_hypernetwork(other, on_event=lambda e: None, resume=state)


def test_bad_settings_get_clear_messages(tiny_model: Path, dataset: Path, tmp_path: Path) -> None:
    def refused(match: str, error: type[Exception] = InvalidRequest, **changes: Any) -> None:
        with pytest.raises(error, match=match):
            HypernetworkTrainer(options(tiny_model, dataset, tmp_path, **changes), on_event=print)

    refused("must start and end with 1", layer_structure=(2.0, 1.0))
    refused("must start and end with 1", layer_structure=(1.0,))
    refused("sizes must be above 0", layer_structure=(1.0, 0.0, 1.0))
    refused("Unknown --activation 'softer'", activation="softer")
    refused("Unknown --activation", activation="multiheadattention")
    refused("Unknown --weight-init 'Zeros'", weight_init="Zeros")
    refused("one probability per entry", dropout=(0.0, 0.0))
    refused("must start and end with 0", dropout=(0.1, 0.0, 0.0))
    refused("from 0 to below 1", dropout=(0.0, 1.0, 0.0))
    refused("no attention of width 768", sizes=(768, 32))
    refused("gives an empty layer", ModelError, layer_structure=(1.0, 0.01, 1.0))

    out = tmp_path / "hypernetworks"
    out.mkdir()
    (out / "shapes.pt").write_bytes(b"")
    refused("named 'shapes' already exists.*--overwrite")
    HypernetworkTrainer(options(tiny_model, dataset, tmp_path, overwrite=True), on_event=print)
    elsewhere = tmp_path / "a1111"
    elsewhere.mkdir()
    (out / "shapes.pt").rename(elsewhere / "shapes.pt")
    with pytest.raises(InvalidRequest, match="already exists") as refusal:
        options(
            tiny_model, dataset, tmp_path, hypernetwork_dirs=(elsewhere,), overwrite=True
        ).check()
    assert "--overwrite" not in str(refusal.value)


def test_sdxl_is_refused(tmp_path: Path, dataset: Path) -> None:
    from sdstudio.testing.tiny_refiner import save_tiny_sdxl

    model = save_tiny_sdxl(tmp_path / "xl")
    with pytest.raises(ModelError, match=r"SDXL model; hypernetworks are made for SD 1\.x"):
        HypernetworkTrainer(options(model, dataset, tmp_path), on_event=lambda e: None)
