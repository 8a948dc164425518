"""LoRA training on the tiny models: steps, the kohya file, loading it back, resume, cancel."""

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
from sdstudio.engine.training.events import CancelFlag, TrainingEvent
from sdstudio.engine.training.lora_trainer import train_lora
from sdstudio.engine.training.options import LoraOptions, TrainingOptions


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three coloured images with tag captions, in a ``2_shapes`` folder."""
    root = tmp_path_factory.mktemp("dataset")
    folder = root / "2_shapes"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([(64, 64), (128, 64), (64, 128)]):
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"shape, colour {i}, noise", "utf-8")
    return root


def options(model: Path, data: Path, out: Path, **changes: Any) -> LoraOptions:
    network = {k: changes.pop(k) for k in ("train_text_encoder", "network_dim") if k in changes}
    base = TrainingOptions(
        model=model,
        data=data,
        name="shapes",
        output_dir=out / "lora",
        state_dir=out / "state",
        learning_rate=1e-2,
        max_train_steps=4,
        device="cpu",
        buckets=BucketOptions((64, 64), 64, 128, 64),
    )
    return LoraOptions(
        dataclasses.replace(base, **changes),
        network_alpha=4,
        **{"network_dim": 4, **network},
    )


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_training_steps_report_finite_loss_and_write_a_kohya_file(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    events: list[TrainingEvent] = []
    opts = options(
        tiny_model,
        dataset,
        tmp_path,
        train_text_encoder=True,
        lr_scheduler="cosine",
        lr_warmup_steps=1,
        min_snr_gamma=5.0,
        noise_offset=0.05,
        cache_latents=True,
        gradient_checkpointing=True,
    )
    path = train_lora(opts, on_event=events.append)

    assert path == tmp_path / "lora" / "shapes.safetensors"
    kinds = [event.kind for event in events]
    assert kinds[0] == "notice" and "start" in kinds and kinds[-1] == "done"
    steps = [event.fields() for event in events if event.kind == "step"]
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    assert all(np.isfinite(s["loss"]) and s["it_s"] > 0 for s in steps)
    assert steps[0]["lr"] == 0.0 and steps[1]["lr"] == pytest.approx(1e-2)  # warm-up, cosine
    assert steps[-1]["eta_s"] == 0

    with safe_open(str(path), "pt") as file:
        keys = set(file.keys())
        metadata = file.metadata()
    unet = [k for k in keys if k.startswith("lora_unet_down_blocks_1_attentions_0_")]
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.alpha" in keys
    # kohya's targets: proj_in, proj_out, q, k, v, out of attn1 and attn2, ff.net.0.proj and
    # ff.net.2; down, up and alpha each
    assert len(unet) == 12 * 3
    assert "lora_te_text_model_encoder_layers_1_self_attn_out_proj.lora_up.weight" in keys
    assert "lora_te_text_model_encoder_layers_1_mlp_fc2.lora_up.weight" in keys
    assert all(k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in keys)
    tensors = weights(path)
    assert (
        tensors["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"].shape[0]
        == 4
    )
    trained = [k for k, t in tensors.items() if ".lora_up." in k and t.abs().sum() > 0]
    assert any(k.startswith("lora_unet_") for k in trained)  # through gradient checkpointing
    assert any(k.startswith("lora_te_") for k in trained)
    assert metadata["ss_network_dim"] == "4" and metadata["ss_network_alpha"] == "4"
    assert metadata["ss_learning_rate"] == "0.01" and metadata["ss_base_model_version"] == "sd_v1"
    assert metadata["ss_num_train_images"] == "6" and metadata["ss_max_train_steps"] == "4"
    assert metadata["ss_resolution"] == "(64, 64)" and metadata["ss_output_name"] == "shapes"
    assert metadata["ss_network_module"] == "networks.lora" and metadata["ss_steps"] == "4"
    assert float(metadata["ss_training_started_at"]) > 1.7e9
    assert json.loads(metadata["ss_tag_frequency"])["shapes"]["shape"] == 3
    assert json.loads(metadata["ss_dataset_dirs"]) == {"shapes": {"n_repeats": 2, "img_count": 3}}


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_same_seed_same_weights_and_resume_equals_a_straight_run(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    schedule = {"lr_scheduler": "cosine", "lr_warmup_steps": 1, "train_text_encoder": True}
    straight = train_lora(
        options(tiny_model, dataset, tmp_path / "a", **schedule), on_event=lambda e: None
    )
    assert straight is not None

    cancel = CancelFlag()
    events: list[TrainingEvent] = []

    def on_event(event: TrainingEvent) -> None:
        events.append(event)
        if event.kind == "step" and event.fields()["step"] == 2:
            cancel.set()  # as SIGINT does through the CLI

    split = options(tiny_model, dataset, tmp_path / "b", **schedule)
    assert train_lora(split, on_event=on_event, cancel=cancel) is None
    cancelled = events[-1].fields()
    assert events[-1].kind == "cancelled" and cancelled["step"] == 2
    state = Path(cancelled["path"])
    assert state == tmp_path / "b" / "state" / "step-000002"
    assert (state / "weights.safetensors").is_file() and (state / "shapes.safetensors").is_file()
    assert not (tmp_path / "b" / "lora" / "shapes.safetensors").exists()

    resumed_events: list[TrainingEvent] = []
    resumed = train_lora(split, on_event=resumed_events.append, resume=state.parent)
    assert resumed is not None
    assert [e.fields()["step"] for e in resumed_events if e.kind == "step"] == [3, 4]
    first, second = weights(straight), weights(resumed)
    assert first.keys() == second.keys()
    assert any(t.abs().sum() > 0 for k, t in first.items() if ".lora_up." in k)
    for key in first:
        assert torch.equal(first[key], second[key]), key

    other_seed = options(tiny_model, dataset, tmp_path / "c", seed=1, **schedule)
    with pytest.raises(InvalidRequest, match=r"other settings.*seed"):
        train_lora(other_seed, on_event=lambda e: None, resume=state)


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_cli_trains_and_generate_applies_the_lora(
    tiny_model: Path, dataset: Path, sdstudio_home: Path, tmp_path: Path, capsys: Any
) -> None:
    from sdstudio.cli import main

    train = ["train", "lora", "--model", str(tiny_model), "--data", str(dataset)]
    train += ["--name", "shapes", "--resolution", "64", "--min-bucket-reso", "64"]
    train += ["--max-bucket-reso", "128", "--max-train-steps", "3", "--learning-rate", "0.02"]
    train += ["--network-dim", "4", "--network-alpha", "4", "--device", "cpu", "--json"]
    train += ["--save-every-n-steps", "2", "--sample-every-n-steps", "3"]
    train += ["--sample-prompt", "shape", "--sample-steps", "2"]
    assert main(train) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [event["event"] for event in events]
    assert kinds.count("step") == 3 and kinds[-1] == "done"
    step = next(event for event in events if event["event"] == "step")
    assert set(step) == {"event", "step", "steps", "loss", "lr", "it_s", "eta_s"}
    [checkpoint] = [event for event in events if event["event"] == "checkpoint"]
    assert Path(checkpoint["path"]).name == "step-000002"
    [sample] = [event for event in events if event["event"] == "sample"]
    with Image.open(sample["path"]) as image:
        assert image.size == (64, 64)
    written = sdstudio_home / "data" / "models" / "lora" / "shapes.safetensors"
    assert events[-1]["path"] == str(written) and written.is_file()

    def generate(prompt: str) -> np.ndarray:
        out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
        args = ["generate", "--model", str(tiny_model), "--steps", "2", "--width", "64"]
        args += ["--height", "64", "--seed", "3", "--out", str(out), "--json", "--prompt", prompt]
        assert main(args) == 0
        [image] = out.iterdir()
        with Image.open(image) as opened:
            return np.asarray(opened.convert("RGB"), dtype=np.int16)

    plain = generate("a shape")
    assert np.abs(generate("a shape <lora:shapes:1>") - plain).max() > 0
    assert np.array_equal(generate("a shape <lora:shapes:0>"), plain)


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_sdxl_names_match_what_diffusers_loads(tmp_path: Path, dataset: Path) -> None:
    from diffusers import StableDiffusionXLPipeline
    from peft.tuners.lora import LoraLayer

    from sdstudio.engine.training.lora_network import sgm_unet_name
    from sdstudio.testing.tiny_refiner import save_tiny_sdxl

    model = save_tiny_sdxl(tmp_path / "xl")
    opts = options(model, dataset, tmp_path, train_text_encoder=True, max_train_steps=1)
    path = train_lora(opts, on_event=lambda e: None)
    assert path is not None
    with safe_open(str(path), "pt") as file:
        assert file.metadata()["ss_base_model_version"] == "sdxl_base_v1-0"
    tensors = weights(path)
    assert any(k.startswith("lora_unet_input_blocks_") for k in tensors)
    assert any(k.startswith("lora_unet_output_blocks_") for k in tensors)
    assert any(k.startswith("lora_te1_text_model_encoder_layers_") for k in tensors)
    assert any(k.startswith("lora_te2_text_model_encoder_layers_") for k in tensors)

    pipe = StableDiffusionXLPipeline.from_pretrained(model)
    pipe.load_lora_weights(str(path), adapter_name="trained")
    loaded = 0
    per_block = pipe.unet.config.layers_per_block
    for name, module in pipe.unet.named_modules():
        if isinstance(module, LoraLayer):
            kohya = "lora_unet_" + sgm_unet_name(name, per_block).replace(".", "_")
            down = module.lora_A["trained"].weight
            assert torch.equal(down.to(torch.float16), tensors[f"{kohya}.lora_down.weight"])
            loaded += 1
    layers = sum(1 for k in tensors if k.endswith(".alpha"))
    text = sum(
        isinstance(m, LoraLayer)
        for encoder in (pipe.text_encoder, pipe.text_encoder_2)
        for m in encoder.modules()
    )
    assert loaded + text == layers


def test_bad_settings_get_clear_messages(tiny_model: Path, dataset: Path, tmp_path: Path) -> None:
    def refused(match: str, **changes: Any) -> None:
        with pytest.raises(InvalidRequest, match=match):
            train_lora(options(tiny_model, dataset, tmp_path, **changes), on_event=lambda e: None)

    refused("bitsandbytes", optimizer="AdamW8bit")
    refused("fp16 needs a CUDA GPU", mixed_precision="fp16")
    refused("--network-dim", network_dim=0)
    refused("--name", name="../up")
    refused("--sample-prompt", sample_every_n_steps=2)


def test_sigint_and_sigterm_set_the_cancel_flag_while_training() -> None:
    import os
    import signal

    from sdstudio.cli.train import cancel_on_signals

    before = signal.getsignal(signal.SIGTERM)
    for number in (signal.SIGINT, signal.SIGTERM):
        flag = CancelFlag()
        with cancel_on_signals(flag):
            os.kill(os.getpid(), number)
            for _ in range(1000):  # the handler runs between bytecodes
                if flag.is_set():
                    break
        assert flag.is_set()
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
def test_training_step_benchmark_runs(capsys: Any) -> None:
    import importlib.util

    path = Path(__file__).parents[1] / "benchmarks" / "train_lora_step.py"
    spec = importlib.util.spec_from_file_location("train_lora_step", path)
    assert spec is not None and spec.loader is not None
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    assert benchmark.main(["--tiny", "--size", "64", "--steps", "2"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["step_s_median"] > 0 and figures["peak_rss_mb"] > 0


def test_a_v_prediction_model_is_trained_on_v(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    import shutil

    from sdstudio.engine.training.lora_trainer import LoraTrainer

    model = shutil.copytree(tiny_model, tmp_path / "tiny-v")
    config_file = model / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text("utf-8"))
    config_file.write_text(json.dumps({**config, "prediction_type": "v_prediction"}), "utf-8")
    opts = options(model, dataset, tmp_path, min_snr_gamma=5.0)
    trainer = LoraTrainer(opts, on_event=lambda e: None)
    assert trainer.model.v_prediction
    scheduler = trainer.model.noise_scheduler
    calls: list[Any] = []
    original = scheduler.get_velocity

    def get_velocity(*args: Any) -> Any:
        calls.append(args)
        return original(*args)

    scheduler.get_velocity = get_velocity
    loss = trainer.loss(0)
    assert torch.isfinite(loss) and len(calls) == 1
    timesteps = calls[0][2]
    weights = trainer._snr_weights(timesteps)
    alphas = scheduler.alphas_cumprod[timesteps]
    snr = alphas / (1 - alphas)
    assert torch.allclose(weights, torch.minimum(snr, torch.tensor(5.0)) / (snr + 1))
