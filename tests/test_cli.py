"""sdstudio-cli: generate, info and rerun, JSON events, and clear errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.cli import main
from sdstudio.engine.metadata.a1111 import split_parameters


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict], str]:
    code = main(list(args))
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    return code, events, captured.err


def generate(capsys, model: Path, out: Path, *extra: str) -> tuple[int, list[dict], str]:
    return run_cli(
        capsys,
        "generate",
        "--model",
        str(model),
        "--prompt",
        "a red boat, at dawn",
        "--negative",
        "blurry",
        "--steps",
        "4",
        "--width",
        "64",
        "--height",
        "64",
        "--seed",
        "42",
        "--out",
        str(out),
        "--json",
        *extra,
    )


def pixels(path: str | Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def images_of(events: list[dict]) -> list[str]:
    return [e["path"] for e in events if e["event"] == "image"]


@pytest.mark.parametrize("mode", ["txt2img", "img2img", "inpaint"])
def test_generate_then_rerun_is_pixel_identical(
    capsys, tiny_model: Path, tmp_path: Path, init_image: Path, mask_image: Path, mode: str
) -> None:
    extra: list[str] = []
    if mode != "txt2img":
        extra += ["--init-image", str(init_image), "--strength", "0.5", "--steps", "8"]
    if mode == "inpaint":
        extra += ["--mask", str(mask_image)]
    code, events, _ = generate(capsys, tiny_model, tmp_path / "out", *extra)
    assert code == 0
    steps = [e for e in events if e["event"] == "step"]
    # img2img and inpaint run 8 steps at strength 0.5: 4 denoising steps.
    assert [(e["step"], e["total"]) for e in steps] == [(i, 4) for i in range(1, 5)]
    assert events[-1] == {"event": "done"}
    [path] = images_of(events)
    assert Path(path).parent == tmp_path / "out"
    assert [e["seed"] for e in events if e["event"] == "image"] == [42]

    with Image.open(path) as image:
        parameters = image.text["parameters"]
    parts = split_parameters(parameters)
    assert parts.prompt == "a red boat, at dawn" and parts.negative_prompt == "blurry"
    assert parts.settings["Seed"] == "42" and parts.settings["Sampler"] == "DPM++ 2M"
    assert parts.settings["Schedule type"] == "Karras"
    assert ("Denoising strength" in parts.settings) is (mode != "txt2img")

    code, events, _ = run_cli(capsys, "rerun", path, "--out", str(tmp_path / "again"), "--json")
    assert code == 0
    [again] = images_of(events)
    assert np.array_equal(pixels(again), pixels(path))


def test_batch_text_output_and_info(capsys, tiny_model: Path, tmp_path: Path) -> None:
    code = main(
        [
            "generate",
            "--model",
            str(tiny_model),
            "--prompt",
            "two boats",
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "--batch",
            "2",
            "--seed",
            "7",
            "--out",
            str(tmp_path),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    paths = captured.out.split()
    assert [p.endswith(s) for p, s in zip(paths, ("_7.png", "_8.png"), strict=True)] == [True] * 2
    assert "image 2/2 step 2/2" in captured.err
    assert main(["info", paths[1]]) == 0
    info = capsys.readouterr().out
    assert "Source: sdstudio" in info and "Seed: 8" in info and "Prompt: two boats" in info
    assert main(["info", paths[1], "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == "sdstudio" and data["request"]["seed"] == 8


def test_default_outputs_folder_is_used_without_out(
    capsys, tiny_model: Path, sdstudio_home: Path
) -> None:
    code, events, _ = run_cli(
        capsys,
        "generate",
        "--model",
        str(tiny_model),
        "--prompt",
        "x",
        "--steps",
        "1",
        "--width",
        "64",
        "--height",
        "64",
        "--json",
    )
    assert code == 0
    [path] = images_of(events)
    assert Path(path).is_relative_to(sdstudio_home / "outputs")


def test_rerun_with_another_seed_and_a1111_image_needs_model(
    capsys, tiny_model: Path, tmp_path: Path
) -> None:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(
        "parameters",
        "a cat\nSteps: 3, Sampler: Euler a, CFG scale: 7, Seed: 5, "
        "Size: 64x64, Model: v1-5-pruned-emaonly, Dynamic thresholding enabled: True",
    )
    a1111 = tmp_path / "a1111.png"
    Image.new("RGB", (64, 64)).save(a1111, pnginfo=info)
    code, events, _ = run_cli(capsys, "rerun", str(a1111), "--json")
    assert code == 1
    assert "recorded in a1111.png was not found; give it with --model PATH" in events[-1]["message"]
    code, events, _ = run_cli(
        capsys,
        "rerun",
        str(a1111),
        "--model",
        str(tiny_model),
        "--seed",
        "9",
        "--out",
        str(tmp_path / "o"),
        "--json",
    )
    assert code == 0
    assert [e["seed"] for e in events if e["event"] == "image"] == [9]
    assert sum(e["event"] == "step" for e in events) == 3
    # A setting of an extension sdstudio lacks is named, never dropped silently.
    notices = [e["message"] for e in events if e["event"] == "notice"]
    assert any(
        "kept but not applied" in n and "Dynamic thresholding enabled" in n for n in notices
    ), notices


def test_size_not_a_multiple_of_8_is_rounded_with_a_notice(
    capsys, tiny_model: Path, tmp_path: Path
) -> None:
    code, events, _ = generate(capsys, tiny_model, tmp_path, "--width", "70", "--steps", "1")
    assert code == 0
    assert {"event": "notice", "message": "width 70 is not a multiple of 8; using 72."} in events
    with Image.open(images_of(events)[0]) as image:
        assert image.size == (72, 64)


def test_mask_of_another_size_is_resized_and_said(
    capsys, tiny_model: Path, tmp_path: Path, init_image: Path
) -> None:
    mask = tmp_path / "small.png"
    Image.new("L", (20, 20), 255).save(mask)
    code, events, _ = generate(
        capsys,
        tiny_model,
        tmp_path / "o",
        "--init-image",
        str(init_image),
        "--mask",
        str(mask),
        "--strength",
        "1",
    )
    assert code == 0
    notices = [e["message"] for e in events if e["event"] == "notice"]
    assert "The mask (20x20) was resized to match the init image (80x72)." in notices


def _not_an_image(tmp_path: Path) -> str:
    path = tmp_path / "notes.png"
    path.write_text("plain text")
    return str(path)


def _truncated(tmp_path: Path) -> str:
    path = tmp_path / "cut.png"
    Image.new("RGB", (128, 128), (200, 10, 10)).save(path)
    path.write_bytes(path.read_bytes()[:100])
    return str(path)


BAD_INPUTS = [
    (lambda m, t: ["--model", str(t / "nowhere")], "does not exist"),
    (lambda m, t: ["--model", str(t)], "is not a diffusers model folder"),
    (lambda m, t: ["--init-image", str(t / "missing.png")], "The init image"),
    (lambda m, t: ["--init-image", _not_an_image(t)], "is not an image file sdstudio can read"),
    (lambda m, t: ["--init-image", _truncated(t)], "is damaged or truncated"),
    (lambda m, t: ["--steps", "0"], "Steps must be between 1 and 500, not 0"),
    (
        lambda m, t: ["--strength", "1.5", "--init-image", str(t / "init.png")],
        "Strength must be between 0 and 1, not 1.5",
    ),
    (
        lambda m, t: ["--strength", "-0.1", "--init-image", str(t / "init.png")],
        "Strength must be between 0 and 1",
    ),
    (
        lambda m, t: ["--sampler", "Euler b"],
        "Unknown sampler 'Euler b'. Valid samplers: Euler, Euler a",
    ),
    (lambda m, t: ["--schedule", "Weird"], "Unknown schedule type 'Weird'"),
    (
        lambda m, t: ["--sampler", "Euler a", "--schedule", "Karras"],
        "does not support the Karras schedule",
    ),
    (lambda m, t: ["--mask", str(t / "init.png")], "--mask needs --init-image"),
    (lambda m, t: ["--width", "4000000"], "Width must be between 64 and 4096"),
    (lambda m, t: ["--mask-blur", "3"], "--mask-blur is an inpainting setting: it needs --mask"),
    (lambda m, t: ["--resize-mode", "crop"], "--resize-mode needs --init-image"),
    (
        lambda m, t: [
            *("--init-image", str(t / "init.png"), "--mask", str(t / "init.png")),
            *("--mask-blur", "99"),
        ],
        "Mask blur must be between 0 and 64 pixels, not 99",
    ),
    (lambda m, t: ["--device", "cuda"], "no CUDA GPU is available"),
]


@pytest.mark.parametrize(("arguments", "message"), BAD_INPUTS)
def test_bad_input_gives_one_clear_line_and_non_zero_exit(
    capsys, tiny_model: Path, tmp_path: Path, init_image: Path, arguments, message
) -> None:
    import torch

    extra = arguments(tiny_model, tmp_path)
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    # A later --model overrides the good one given by `generate`.
    code, events, err = generate(capsys, tiny_model, tmp_path / "out", *extra)
    assert code == 1
    assert events[-1]["event"] == "error"
    assert message in events[-1]["message"]
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    # The same in text mode: one line on stderr.
    code = main(
        [
            "generate",
            "--model",
            str(tiny_model),
            "--prompt",
            "x",
            "--steps",
            "4",
            "--width",
            "64",
            "--height",
            "64",
            "--out",
            str(tmp_path / "out"),
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and message in lines[0]


def test_pickle_checkpoint_is_refused(capsys, tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"\x80\x04fake pickle")
    code, events, _ = run_cli(
        capsys, "generate", "--model", str(checkpoint), "--prompt", "x", "--json"
    )
    assert code == 1
    assert "pickle checkpoint, which can run code" in events[-1]["message"]
    assert "Convert it to .safetensors" in events[-1]["message"]


def test_info_on_images_without_settings(capsys, tmp_path: Path) -> None:
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert main(["info", str(plain)]) == 1
    assert "error: plain.png holds no generation settings." in capsys.readouterr().err
    assert main(["info", _not_an_image(tmp_path), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["event"] == "error"


@pytest.mark.slow
def test_installed_command_runs_end_to_end(
    tiny_model: Path, tmp_path: Path, sdstudio_home: Path
) -> None:
    """The real entry point in a fresh process: JSON events on stdout, nothing else."""
    command = [
        sys.executable,
        "-m",
        "sdstudio.cli",
        "generate",
        "--model",
        str(tiny_model),
        "--prompt",
        "a boat",
        "--steps",
        "3",
        "--width",
        "64",
        "--height",
        "64",
        "--seed",
        "1",
        "--out",
        str(tmp_path),
        "--json",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    kinds = ["notice", "notice", "step", "step", "step", "image", "done"]
    assert [e["event"] for e in events] == kinds
    assert events[0]["message"].startswith("Using the settings that suit tiny-sd: CFG 7, ")
    assert done.stderr == ""
    failed = subprocess.run(
        [*command[:5], str(tmp_path / "nope"), *command[6:]],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 1
    assert json.loads(failed.stdout.splitlines()[-1])["event"] == "error"
    assert "Traceback" not in failed.stderr
