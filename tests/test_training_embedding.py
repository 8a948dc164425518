"""Textual-inversion and DreamArtist training on the tiny models: what learns, the A1111
file, generation by name, resume, and refused settings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.training.datasets import BucketOptions
from sdstudio.engine.training.embedding_options import EmbeddingOptions
from sdstudio.engine.training.embedding_trainer import EmbeddingTrainer, train_embedding
from sdstudio.engine.training.events import CancelFlag, TrainingEvent
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


def options(model: Path, data: Path, out: Path, **changes: Any) -> EmbeddingOptions:
    own = {f.name for f in dataclasses.fields(EmbeddingOptions)} - {"base"}
    embedding = {k: changes.pop(k) for k in list(changes) if k in own}
    base = TrainingOptions(
        model=model,
        data=data,
        name="shapes",
        output_dir=out / "embeddings",
        state_dir=out / "state",
        learning_rate=5e-2,
        max_train_steps=3,
        device="cpu",
        buckets=BucketOptions((64, 64), 64, 128, 64),
    )
    return EmbeddingOptions(dataclasses.replace(base, **changes), **embedding)


def test_only_the_new_vectors_learn_and_the_file_is_a1111s(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    opts = options(
        tiny_model, dataset, tmp_path, num_vectors=3, gradient_checkpointing=True, min_snr_gamma=5.0
    )
    events: list[TrainingEvent] = []
    trainer = EmbeddingTrainer(opts, on_event=events.append)
    [(_prefix, tokenizer, encoder)] = trainer.model.text_encoders()
    own_rows = encoder.get_input_embeddings().original.weight.detach().clone()
    star = own_rows[tokenizer.convert_tokens_to_ids("*</w>")]
    start = trainer.vectors[0].vectors.detach().clone()
    assert torch.equal(start, star.expand(3, -1))  # A1111: the init token repeated
    assert trainer.captions_at(0)[0].count("shapes shapes_1 shapes_2,") == 1

    path = run_training(trainer, on_event=events.append)

    steps = [e.fields() for e in events if e.kind == "step"]
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert all(np.isfinite(s["loss"]) for s in steps)
    assert torch.equal(encoder.get_input_embeddings().original.weight, own_rows)
    assert not any(p.requires_grad for p in encoder.get_input_embeddings().original.parameters())
    assert path == tmp_path / "embeddings" / "shapes.safetensors"
    with safe_open(str(path), "pt") as file:
        assert set(file.keys()) == {"emb_params"}
        metadata = file.metadata()
    assert metadata == {"name": "shapes", "step": "3", "sd_checkpoint_name": "tiny-sd"}
    vectors = load_file(str(path))["emb_params"]
    assert vectors.shape == (3, own_rows.shape[1]) and vectors.dtype == torch.float32
    assert torch.equal(vectors, trainer.vectors[0].vectors.detach())
    assert not torch.equal(vectors, start)


def test_init_text_is_spread_over_the_vectors_as_a1111_does(tiny_model: Path) -> None:
    from transformers import CLIPTextModel, CLIPTokenizer

    from sdstudio.engine.training.embedding_file import initial_vectors

    tokenizer = CLIPTokenizer.from_pretrained(tiny_model / "tokenizer")
    table = CLIPTextModel.from_pretrained(tiny_model / "text_encoder").get_input_embeddings()
    ids = tokenizer("a b c", add_special_tokens=False).input_ids
    rows = table.weight.detach()[ids]
    assert torch.equal(initial_vectors(tokenizer, table, "a b c", 2), rows[[0, 1]])
    assert torch.equal(initial_vectors(tokenizer, table, "a b c", 5), rows[[0, 0, 1, 1, 2]])
    assert not initial_vectors(tokenizer, table, "", 2).any()


def run_cli(args: list[str], capsys: Any) -> tuple[int, list[dict[str, Any]]]:
    from sdstudio.cli import main

    code = main(args)
    lines = capsys.readouterr().out.splitlines()
    return code, [json.loads(line) for line in lines if line.startswith("{")]


def generate(
    model: Path, out: Path, prompt: str, negative: str, capsys: Any, *, names: str = ""
) -> np.ndarray:
    """The image, after checking its A1111 parameters name the embeddings used (``TI
    hashes``: what generation loaded by name), or none."""
    args = ["generate", "--model", str(model), "--steps", "2", "--width", "64", "--height", "64"]
    args += ["--seed", "3", "--out", str(out), "--json", "--prompt", prompt]
    args += ["--negative", negative]
    code, _events = run_cli(args, capsys)
    assert code == 0
    [image] = out.iterdir()
    with Image.open(image) as opened:
        parameters = opened.info["parameters"]
        hashes = parameters.split("TI hashes: ")[1].split('"')[1] if names else ""
        assert sorted(h.split(":")[0] for h in hashes.split(", ") if h) == sorted(names.split())
        assert names or "TI hashes" not in parameters
        return np.asarray(opened.convert("RGB"), dtype=np.int16)


def train_args(model: Path, data: Path, name: str, *extra: str) -> list[str]:
    args = ["train", "embedding", "--model", str(model), "--data", str(data), "--name", name]
    args += ["--resolution", "64", "--min-bucket-reso", "64", "--max-bucket-reso", "128"]
    return [*args, "--max-train-steps", "2", "--learning-rate", "0.5", "--device", "cpu", *extra]


def test_cli_trains_an_embedding_that_generate_uses_by_name(
    tiny_model: Path, dataset: Path, sdstudio_home: Path, tmp_path: Path, capsys: Any
) -> None:
    extra = ("--num-vectors", "2", "--save-every-n-steps", "1", "--json")
    code, events = run_cli(train_args(tiny_model, dataset, "shapes", *extra), capsys)
    assert code == 0 and events[-1]["event"] == "done"
    [checkpoint] = [event for event in events if event["event"] == "checkpoint"]
    states = sdstudio_home / "data" / "training" / "embeddings" / "shapes"
    assert checkpoint["path"] == str(states / "step-000001")
    written = sdstudio_home / "data" / "models" / "embeddings" / "shapes.safetensors"
    assert events[-1]["path"] == str(written)
    assert load_file(str(written))["emb_params"].shape == (2, 32)

    used = generate(tiny_model, tmp_path / "a", "a photo of shapes", "", capsys, names="shapes")
    code, events = run_cli(train_args(tiny_model, dataset, "shapes", "--json"), capsys)
    assert (
        code == 1
        and "already exists" in events[-1]["message"]
        and "--overwrite" in events[-1]["message"]
    )
    written.rename(tmp_path / "away.safetensors")
    plain = generate(tiny_model, tmp_path / "b", "a photo of shapes", "", capsys)
    assert np.abs(used - plain).max() > 0


def test_dreamartist_trains_a_pair_and_the_negative_steers_the_image(
    tiny_model: Path, dataset: Path, sdstudio_home: Path, tmp_path: Path, capsys: Any
) -> None:
    extra = ("--dreamartist", "--dreamartist-cfg", "3", "--dreamartist-rec-weight", "0.5", "--json")
    code, _events = run_cli(train_args(tiny_model, dataset, "duo", *extra), capsys)
    assert code == 0
    folder = sdstudio_home / "data" / "models" / "embeddings"
    positive = load_file(str(folder / "duo.safetensors"))["emb_params"]
    negative = load_file(str(folder / "duo-neg.safetensors"))["emb_params"]
    assert positive.shape == negative.shape == (1, 32)
    assert not torch.allclose(positive, negative, atol=1e-2)
    with safe_open(str(folder / "duo-neg.safetensors"), "pt") as file:
        assert file.metadata()["name"] == "duo-neg"

    steered = generate(
        tiny_model, tmp_path / "a", "a photo of duo", "duo-neg", capsys, names="duo duo-neg"
    )
    (folder / "duo-neg.safetensors").rename(tmp_path / "away.safetensors")
    plain = generate(tiny_model, tmp_path / "b", "a photo of duo", "duo-neg", capsys, names="duo")
    assert np.abs(steered - plain).max() > 0


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_resume_equals_a_straight_run(tiny_model: Path, dataset: Path, tmp_path: Path) -> None:
    changes = {
        "dreamartist": True,
        "num_vectors": 2,
        "lr_scheduler": "cosine",
        "max_train_steps": 4,
    }
    straight = train_embedding(
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
    assert train_embedding(split, on_event=on_event, cancel=cancel) is None
    state = Path(events[-1].fields()["path"])
    assert (state / "shapes.safetensors").is_file() and (state / "shapes-neg.safetensors").is_file()
    resumed = train_embedding(split, on_event=lambda e: None, resume=state.parent)
    assert resumed is not None
    for name in ("shapes", "shapes-neg"):
        first = load_file(str(straight.with_name(f"{name}.safetensors")))["emb_params"]
        second = load_file(str(resumed.with_name(f"{name}.safetensors")))["emb_params"]
        assert torch.equal(first, second), name

    other = options(tiny_model, dataset, tmp_path / "c", **{**changes, "num_vectors": 3})
    with pytest.raises(InvalidRequest, match=r"other settings.*num_vectors"):
        train_embedding(other, on_event=lambda e: None, resume=state)


def test_bad_settings_get_clear_messages(tiny_model: Path, dataset: Path, tmp_path: Path) -> None:
    def refused(match: str, **changes: Any) -> None:
        with pytest.raises(InvalidRequest, match=match):
            train_embedding(
                options(tiny_model, dataset, tmp_path, **changes), on_event=lambda e: None
            )

    refused("--num-vectors must be between 1 and 75", num_vectors=0)
    refused("--num-vectors must be between 1 and 75", num_vectors=76)
    refused("--name 'two words' is the word a prompt", name="two words")
    refused("--dreamartist-cfg", dreamartist=True, dreamartist_cfg=1.0)
    refused("needs --dreamartist", dreamartist_rec_weight=0.5)
    refused("--template-kind", template_kind="portrait")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", "utf-8")
    refused("no prompt lines", template=empty)

    from sdstudio.engine.training.embedding_file import check_free, embedding_bytes

    out = tmp_path / "embeddings"
    out.mkdir()
    (out / "shapes-neg.safetensors").write_bytes(
        embedding_bytes([torch.zeros(1, 32)], name="x", step=0, model_name="m")
    )
    refused("named 'shapes-neg' already exists.*--overwrite", dreamartist=True)
    check_free(["shapes-neg"], out, (), overwrite=True)
    other = tmp_path / "a1111-embeddings"
    other.mkdir()
    (out / "shapes-neg.safetensors").rename(other / "shapes-neg.safetensors")
    with pytest.raises(InvalidRequest, match="already exists") as refusal:
        check_free(["shapes-neg"], out, (other,), overwrite=True)
    assert "--overwrite" not in str(refusal.value)


def test_sdxl_writes_clip_l_and_clip_g(tmp_path: Path, dataset: Path) -> None:
    from sdstudio.engine.networks import _sdxl_vectors
    from sdstudio.testing.tiny_refiner import save_tiny_sdxl

    model = save_tiny_sdxl(tmp_path / "xl")
    opts = options(
        model, dataset, tmp_path, num_vectors=2, max_train_steps=1, template_kind="style"
    )
    trainer = EmbeddingTrainer(opts, on_event=lambda e: None)
    widths = [
        enc.get_input_embeddings().weight.shape[1] for _p, _t, enc in trainer.model.text_encoders()
    ]
    path = run_training(trainer, on_event=lambda e: None)
    assert path is not None
    clip_l, clip_g = _sdxl_vectors(path)
    assert [clip_l.shape, clip_g.shape] == [(2, widths[0]), (2, widths[1])]
    assert set(load_file(str(path))) == {"clip_l", "clip_g"}


def test_dreamartist_loss_reaches_both_embeddings(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    opts = options(tiny_model, dataset, tmp_path, dreamartist=True, num_vectors=2)
    trainer = EmbeddingTrainer(opts, on_event=lambda e: None)
    negative, positive = trainer.captions_at(0)
    assert "shapes-neg shapes-neg_1," in negative and "shapes shapes_1," in positive
    assert negative.replace("shapes-neg shapes-neg_1", "shapes shapes_1") == positive
    trainer.loss(0).backward()
    grad = trainer.vectors[0].vectors.grad
    assert grad is not None and grad.shape == (4, 32)
    assert grad[:2].abs().sum() > 0 and grad[2:].abs().sum() > 0  # NAME and NAME-neg
