"""Seeds up to 2**64-1, as ComfyUI, Fooocus and Civitai images carry them, are kept and used."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from sdstudio.cli import main
from sdstudio.engine import generation
from sdstudio.engine.generation import Engine, initial_noise
from sdstudio.engine.history.store import HistoryStore
from sdstudio.engine.metadata import read_image_settings
from sdstudio.engine.metadata.a1111 import read_parameters
from sdstudio.engine.metadata.record import ImageRecord
from sdstudio.engine.metadata.values import build_request
from sdstudio.engine.outputs import OutputWriter
from sdstudio.engine.request import MAX_SEED, GenerationRequest
from tests.metadata_samples import write_png

COMFY_SEEDS = [1125899906842624, 2**64 - 1]


def comfyui_graph(seed: int) -> str:
    """A ComfyUI API graph: KSampler with its prompts, checkpoint and empty latent."""
    return json.dumps(
        {
            "3": {
                "class_type": "KSampler",
                "inputs": {
                    "seed": seed,
                    "steps": 4,
                    "cfg": 7.0,
                    "sampler_name": "euler",
                    "scheduler": "normal",
                    "denoise": 1.0,
                    "model": ["4", 0],
                    "positive": ["6", 0],
                    "negative": ["7", 0],
                    "latent_image": ["5", 0],
                },
            },
            "4": {
                "class_type": "CheckpointLoaderSimple",
                "inputs": {"ckpt_name": "tiny.safetensors"},
            },
            "5": {
                "class_type": "EmptyLatentImage",
                "inputs": {"width": 64, "height": 64, "batch_size": 1},
            },
            "6": {
                "class_type": "CLIPTextEncode",
                "inputs": {"text": "a red boat", "clip": ["4", 1]},
            },
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        }
    )


def comfyui_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """ComfyUI's starting noise: float32 on the CPU after ``torch.manual_seed(seed)``."""
    with torch.random.fork_rng(devices=[]):
        generator = torch.manual_seed(seed)
        return torch.randn(shape, dtype=torch.float32, generator=generator, device="cpu")


@pytest.mark.parametrize("seed", COMFY_SEEDS)
@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_comfyui_seed_survives_read_generate_png_history_and_reread(
    engine: Engine, tiny_model: Path, tmp_path: Path, seed: int
) -> None:
    source = write_png(tmp_path / "comfy.png", prompt=comfyui_graph(seed))
    read = read_image_settings(source)
    assert read.request.seed == seed, read.notes
    request = read.request.replace(model=str(tiny_model))
    [first] = engine.generate(request)
    [second] = engine.generate(request)
    [other] = engine.generate(request.replace(seed=(seed + 1) % (MAX_SEED + 1)))
    assert first.record.request.seed == seed
    assert np.array_equal(np.asarray(first.image), np.asarray(second.image))
    assert not np.array_equal(np.asarray(first.image), np.asarray(other.image))

    path = OutputWriter(tmp_path / "out").write(first)
    with Image.open(path) as image:
        assert f"Seed: {seed}," in image.text["parameters"]
    assert read_image_settings(path).request.seed == seed
    assert read_parameters(read_image_settings(path).parameters).request.seed == seed
    with HistoryStore(tmp_path / "history.db") as store:
        entry = store.get(store.add(path, first.record))
        assert entry.seed == seed
        assert entry.request.seed == seed
        [listed] = store.page()
        assert listed.seed == seed


def test_starting_noise_is_comfyuis_for_a_64_bit_seed(
    engine: Engine, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[torch.Tensor] = []

    def recording(*args, **kwargs):
        noise = initial_noise(*args, **kwargs)
        drawn.append(noise)
        return noise

    monkeypatch.setattr(generation, "initial_noise", recording)
    request = GenerationRequest(
        model=str(tiny_model), prompt="a red boat", steps=2, width=72, height=64, seed=2**64 - 1
    )
    next(engine.generate(request))
    [noise] = drawn
    assert noise.shape == (1, 4, 8, 9)
    assert torch.equal(noise, comfyui_noise(2**64 - 1, (1, 4, 8, 9)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_noise_is_the_float32_noise_rounded(dtype: torch.dtype) -> None:
    # 72x72 pixels give 4x9x9 latent values, not a multiple of 16: torch's own
    # half-precision draw gives other numbers there.
    pipe = SimpleNamespace(
        unet=SimpleNamespace(config=SimpleNamespace(in_channels=4), dtype=dtype),
        vae_scale_factor=8,
    )
    generator = torch.Generator("cpu").manual_seed(1125899906842624)
    noise = initial_noise(pipe, 72, 72, generator)
    expected = comfyui_noise(1125899906842624, (1, 4, 9, 9))
    assert noise.dtype == dtype
    assert torch.equal(noise, expected.to(dtype))
    direct = torch.randn(
        (1, 4, 9, 9), generator=torch.Generator().manual_seed(1125899906842624), dtype=dtype
    )
    assert not torch.equal(direct, expected.to(dtype))


def test_a_cpu_generator_takes_every_64_bit_seed() -> None:
    assert torch.Generator().manual_seed(2**64 - 1).initial_seed() == 2**64 - 1
    with pytest.raises((RuntimeError, ValueError)):
        torch.Generator().manual_seed(2**64)


def record(seed: int) -> ImageRecord:
    return ImageRecord(
        request=GenerationRequest(model="m", prompt=f"seed {seed}", seed=seed),
        created="2026-01-01T00:00:00.000+00:00",
    )


def test_history_round_trips_every_64_bit_seed(tmp_path: Path) -> None:
    seeds = [0, 2**32, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1, -1]
    with HistoryStore(tmp_path / "history.db") as store:
        ids = {seed: store.add(tmp_path / f"{i}.png", record(seed)) for i, seed in enumerate(seeds)}
        for seed, entry_id in ids.items():
            entry = store.get(entry_id)
            assert (entry.seed, entry.request.seed) == (seed, seed)
    with sqlite3.connect(tmp_path / "history.db") as db:
        stored = dict(db.execute("SELECT prompt, seed FROM images"))
        ordered = [row[0] for row in db.execute("SELECT seed FROM images ORDER BY seed < 0, seed")]
    assert stored["seed 4294967296"] == 2**32
    assert stored[f"seed {2**63 - 1}"] == 2**63 - 1
    assert stored[f"seed {2**63}"] == -(2**63)
    assert stored[f"seed {2**64 - 1}"] == -1
    assert ordered == [0, 2**32, 2**63 - 1, -(2**63), -2, -1, -1]


def test_sdstudio_record_keeps_a_64_bit_seed() -> None:
    text = record(2**64 - 1).to_json()
    assert ImageRecord.from_json(text).request.seed == 2**64 - 1
    with pytest.raises(Exception, match="seed is out of range"):
        ImageRecord.from_json(text.replace(str(2**64 - 1), str(2**64)))


@pytest.mark.parametrize(
    ("raw", "seed", "note"),
    [
        ("18446744073709551615", 2**64 - 1, None),
        (1125899906842624, 1125899906842624, None),
        (1125899906842624.0, 1125899906842624, None),
        ("-1", -1, None),
        ("18446744073709551616", -1, "outside the range 0 to 18446744073709551615"),
        (-5, -1, "The seed -5 is outside the range"),
        (10**40, -1, "(a number of over 24 digits) is outside"),
        (1.8446744073709e19, -1, "stored as a rounded number"),
        ("1.2e18", -1, "stored as a rounded number"),
    ],
)
def test_readers_keep_64_bit_seeds_and_drop_others_with_a_note(
    raw: object, seed: int, note: str | None
) -> None:
    parsed = build_request({"seed": raw})
    assert parsed.request.seed == seed
    seed_notes = [n for n in parsed.notes if "seed" in n]
    if note is None:
        assert seed_notes == []
    else:
        [message] = seed_notes
        assert note in message


def test_a1111_text_with_a_64_bit_seed() -> None:
    text = (
        "a cat\nSteps: 3, Sampler: Euler a, CFG scale: 7, Seed: 18446744073709551615, Size: 64x64"
    )
    assert read_parameters(text).request.seed == 2**64 - 1


def test_seed_field_holds_64_bits(window, tiny_model: Path) -> None:
    request = GenerationRequest(model=str(tiny_model), prompt="a", seed=2**64 - 1, steps=4)
    window.panel.load(request)
    assert window.panel.seed.text() == "18446744073709551615"
    assert window.panel.seed.hasAcceptableInput()
    assert window.panel.request().seed == 2**64 - 1


def test_cli_generates_with_a_64_bit_seed(
    capsys: pytest.CaptureFixture[str], tiny_model: Path, tmp_path: Path
) -> None:
    code = main(
        [
            "generate",
            "--model",
            str(tiny_model),
            "--prompt",
            "a boat",
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "--seed",
            "18446744073709551615",
            "--batch",
            "2",
            "--out",
            str(tmp_path / "o"),
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [e["seed"] for e in events if e.get("event") == "image"] == [2**64 - 1, 0]
