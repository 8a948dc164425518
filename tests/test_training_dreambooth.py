"""DreamBooth on the tiny SD 1.x model: class images generated once, prior preservation,
the single-file checkpoint loaded back, resume, the memory check, bad options."""

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

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.training import memory_check
from sdstudio.engine.training.datasets import BucketOptions
from sdstudio.engine.training.dreambooth_options import DreamboothOptions
from sdstudio.engine.training.dreambooth_trainer import train_dreambooth
from sdstudio.engine.training.events import CancelFlag, TrainingEvent
from sdstudio.engine.training.options import TrainingOptions


@pytest.fixture(scope="module")
def subject(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("subject")
    rng = np.random.default_rng(0)
    for i in range(2):
        pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("a photo of sks shape", "utf-8")
    return folder


def options(model: Path, data: Path, out: Path, **changes: Any) -> DreamboothOptions:
    own = {f.name for f in dataclasses.fields(DreamboothOptions)} - {"base"}
    mine = {k: changes.pop(k) for k in list(changes) if k in own}
    base = TrainingOptions(
        model=model,
        data=data,
        name="sks",
        output_dir=out / "models",
        state_dir=out / "state",
        learning_rate=1e-3,
        max_train_steps=2,
        device="cpu",
        sample_steps=2,
        buckets=BucketOptions((64, 64), 64, 128, 64),
    )
    defaults = {"class_prompt": "a photo of a shape", "class_data_dir": out / "class"}
    return DreamboothOptions(dataclasses.replace(base, **changes), **{**defaults, **mine})


def image_from(pipe: Any) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(3)
    out = pipe("a photo of sks shape", num_inference_steps=2, width=64, height=64,
               generator=generator, output_type="np")  # fmt: skip
    return np.asarray(out.images[0])


@pytest.mark.slow
def test_prior_preservation_trains_a_checkpoint_that_loads(
    tiny_model: Path, subject: Path, tmp_path: Path
) -> None:
    from sdstudio.engine.models.loading import load_single_file

    events: list[TrainingEvent] = []
    opts = options(tiny_model, subject, tmp_path, num_class_images=2, min_snr_gamma=5.0)
    path = train_dreambooth(opts, on_event=events.append)

    assert path == tmp_path / "models" / "sks.safetensors"
    notices = [e.fields()["message"] for e in events if e.kind == "notice"]
    assert notices[0].startswith("DreamBooth needs about") and "free" in notices[0]
    assert "Generating class image 2 of 2…" in notices
    class_files = sorted(p.name for p in (tmp_path / "class").iterdir())
    assert class_files == ["class-000000.png", "class-000000.txt", "class-000001.png",
                           "class-000001.txt"]  # fmt: skip
    assert (tmp_path / "class" / "class-000000.txt").read_text("utf-8") == "a photo of a shape"
    steps = [e.fields() for e in events if e.kind == "step"]
    assert len(steps) == 2 and all(np.isfinite(s["loss"]) for s in steps)
    with safe_open(str(path), "pt") as file:
        metadata = file.metadata()
        assert file.get_tensor("model.diffusion_model.out.2.weight").dtype == torch.float16
    assert metadata["sdstudio.dreambooth.class_images"] == "2"
    assert metadata["modelspec.architecture"] == "stable-diffusion-v1"

    trained = load_single_file(path, dtype=torch.float32, config=tiny_model)
    from diffusers import StableDiffusionPipeline

    base = StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
    trained.set_progress_bar_config(disable=True)
    base.set_progress_bar_config(disable=True)
    assert np.abs(image_from(trained) - image_from(base)).max() > 1e-3
    assert np.array_equal(image_from(base), image_from(base))

    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "class").iterdir()}
    again: list[TrainingEvent] = []
    rerun = options(tiny_model, subject, tmp_path, num_class_images=2, overwrite=True)
    assert train_dreambooth(rerun, on_event=again.append) == path
    messages = [e.fields()["message"] for e in again if e.kind == "notice"]
    assert not any("Generating" in m for m in messages)
    assert any(m.startswith("Using 2 class images") for m in messages)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "class").iterdir()} == stamps


@pytest.mark.slow
def test_cancel_then_resume_ends_with_the_uninterrupted_weights(
    tiny_model: Path, subject: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    changes = {"num_class_images": 1, "max_train_steps": 3, "train_text_encoder": True}
    changes |= {"text_encoder_lr": 5e-4, "save_precision": "float"}
    straight = train_dreambooth(
        options(tiny_model, subject, tmp_path / "a", **changes), on_event=lambda e: None
    )
    assert straight is not None
    cancel = CancelFlag()
    events: list[TrainingEvent] = []

    def on_event(event: TrainingEvent) -> None:
        events.append(event)
        if event.kind == "step" and event.fields()["step"] == 1:
            cancel.set()

    split = options(tiny_model, subject, tmp_path / "b", **changes)
    assert train_dreambooth(split, on_event=on_event, cancel=cancel) is None
    state = Path(events[-1].fields()["path"])
    assert events[-1].kind == "cancelled" and state.name == "step-000001"
    resumed = train_dreambooth(split, on_event=lambda e: None, resume=state.parent)
    assert resumed is not None
    first, second = load_file(str(straight)), load_file(str(resumed))
    base = load_file(str(state / "weights.safetensors"))
    assert first.keys() == second.keys()
    for key in (
        "model.diffusion_model.out.2.weight",
        "model.diffusion_model.input_blocks.0.0.weight",
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
    ):
        assert torch.equal(first[key], second[key]), key
    assert not torch.equal(
        first["model.diffusion_model.out.2.weight"], base["unet.conv_out.weight"]
    )


def test_the_memory_check_refuses_with_both_figures(
    tiny_model: Path, subject: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_check, "available_bytes", lambda device: 1000)
    opts = options(tiny_model, subject, tmp_path, class_data_dir=None, class_prompt="")
    verdict = memory_check.check_dreambooth_memory(opts)
    assert not verdict.enough and verdict.available == 1000 and verdict.needed > 1000
    with pytest.raises(InvalidRequest, match=r"needs about .* GiB .* has 0\.0 GiB free") as info:
        train_dreambooth(opts, on_event=lambda e: None)
    assert "--gradient-checkpointing" in str(info.value) and "AdamW8bit" in str(info.value)
    assert not (tmp_path / "models").exists()

    sd15 = memory_check.ParameterCounts(859_520_964, 83_653_863, 123_060_480)
    monkeypatch.setattr(memory_check, "parameter_counts", lambda path: sd15)
    figures = {}
    for name, extra in {
        "plain": {},
        "lean": {"gradient_checkpointing": True, "mixed_precision": "bf16"},
        "lean-8bit": {
            "gradient_checkpointing": True,
            "mixed_precision": "bf16",
            "optimizer": "AdamW8bit",
        },
    }.items():
        needed = memory_check.estimate_dreambooth_bytes(
            tiny_model,
            train_text_encoder=False,
            mixed_precision=extra.get("mixed_precision", "no"),
            batch_size=1,
            resolution=512,
            gradient_checkpointing=bool(extra.get("gradient_checkpointing")),
            optimizer=str(extra.get("optimizer", "AdamW")),
        )
        figures[name] = round(needed / 2**30, 1)
    print("SD 1.5 DreamBooth estimate (GiB):", json.dumps(figures))
    assert figures["plain"] > figures["lean"] > figures["lean-8bit"] > 16 * 859e6 * 0.6 / 2**30


def test_the_sd15_parameters_are_counted_from_its_header(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    header = tmp_path / "sd.safetensors"
    save_file(
        {"model.diffusion_model.a": torch.zeros(3, 4), "first_stage_model.b": torch.zeros(5),
         "cond_stage_model.transformer.c": torch.zeros(2, 2), "other": torch.zeros(7)},
        str(header),
    )  # fmt: skip
    assert memory_check.parameter_counts(header) == memory_check.ParameterCounts(12, 5, 4)
    assert memory_check.available_bytes("cpu") is None or memory_check.available_bytes("cpu") > 0


def test_bad_options_get_clear_messages(tiny_model: Path, subject: Path, tmp_path: Path) -> None:
    def refused(match: str, **changes: Any) -> None:
        with pytest.raises(InvalidRequest, match=match):
            options(tiny_model, subject, tmp_path, **changes).check()

    refused("--save-precision", save_precision="fp8")
    refused("--class-prompt", num_class_images=2, class_prompt=" ")
    refused("--reg-data-dir", num_class_images=2, class_data_dir=None)
    refused("holds no images", num_class_images=0)
    refused("another folder than --data", class_data_dir=subject, num_class_images=1)
    refused("--text-encoder-lr needs", text_encoder_lr=1e-5)
    refused("--prior-loss-weight", prior_loss_weight=0)
    refused("--num-class-images cannot", num_class_images=-1)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "sks.safetensors").write_bytes(b"x")
    refused("already exists", num_class_images=1)
    options(tiny_model, subject, tmp_path, num_class_images=1, overwrite=True).check()


def test_the_cli_trains_into_the_models_folder(
    tiny_model: Path, subject: Path, sdstudio_home: Path, tmp_path: Path, capsys: Any
) -> None:
    from sdstudio.cli import main

    args = ["train", "dreambooth", "--model", str(tiny_model), "--data", str(subject)]
    args += ["--name", "cli-sks", "--resolution", "64", "--min-bucket-reso", "64"]
    args += ["--max-train-steps", "1", "--device", "cpu", "--json", "--sample-steps", "2"]
    reg = tmp_path / "reg"  # a class image already there: generating is tested apart
    reg.mkdir()
    Image.new("RGB", (64, 64), (90, 120, 200)).save(reg / "dog.png")
    args += ["--class-prompt", "a shape", "--class-data-dir", str(reg)]
    args += ["--num-class-images", "1", "--save-precision", "bf16", "--learning-rate", "1e-4"]
    assert main(args) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    written = sdstudio_home / "data" / "models" / "cli-sks.safetensors"
    assert events[-1]["event"] == "done" and events[-1]["path"] == str(written)
    with safe_open(str(written), "pt") as file:
        assert file.get_tensor("model.diffusion_model.out.2.weight").dtype == torch.bfloat16
    assert sorted(p.name for p in reg.iterdir()) == ["dog.png"]
    start = next(event for event in events if event["event"] == "start")
    assert start["images"] == 2
    assert main([*args, "--num-class-images", "0"]) != 0  # the name is taken now
    assert "already exists" in capsys.readouterr().out


class FakePipe:
    """Stands for the loaded pipeline: records each call's prompt and seed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, *, prompt: str, generator: torch.Generator, **_: Any) -> Any:
        from types import SimpleNamespace

        self.calls.append((prompt, generator.initial_seed()))
        return SimpleNamespace(images=[Image.new("RGB", (64, 64), (len(self.calls), 0, 0))])


def test_only_missing_class_images_are_generated_and_cancel_stops_between(
    tiny_model: Path, subject: Path, tmp_path: Path
) -> None:
    from types import SimpleNamespace

    from sdstudio.engine.training.class_images import class_data, ensure_class_images

    pipe = FakePipe()
    model: Any = SimpleNamespace(pipe=pipe, device=torch.device("cpu"))
    folder = tmp_path / "class"
    folder.mkdir()
    Image.new("RGB", (64, 64)).save(folder / "class-000000.png")  # one there already
    opts = options(tiny_model, subject, tmp_path, num_class_images=4, seed=10)
    cancel = CancelFlag()
    events: list[TrainingEvent] = []

    def on_event(event: TrainingEvent) -> None:
        events.append(event)
        if event.fields().get("message") == "Generating class image 2 of 3…":
            cancel.set()  # stops after this image

    assert not ensure_class_images(model, opts, on_event=on_event, cancel=cancel)
    assert pipe.calls == [("a photo of a shape", 11), ("a photo of a shape", 12)]
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["class-000000.png", "class-000001.png", "class-000001.txt",
                     "class-000002.png", "class-000002.txt"]  # fmt: skip
    assert events[0].fields()["message"].startswith("1 class images in")

    assert ensure_class_images(model, opts, on_event=lambda e: None, cancel=CancelFlag())
    assert pipe.calls[2:] == [("a photo of a shape", 13)]  # only the one still missing
    assert len(list(folder.glob("*.png"))) == 4
    assert ensure_class_images(model, opts, on_event=lambda e: None)
    assert len(pipe.calls) == 3
    data = class_data(opts, on_event=lambda e: None)
    captions = [image.caption for image in data.dataset.images]
    assert captions == ["a photo of a shape"] * 4  # a missing caption is the class prompt
