"""``generate --ip-adapter`` specs become the request's image prompts (bad specs refused
with messages that help, before a model loads); ``rerun`` keeps a record's image prompts
(their images only from the inputs folder) and prints the notes of another tool's; and
``--control``'s pixel perfect key."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.cli import build_parser, main
from sdstudio.cli.control_options import parse_control
from sdstudio.cli.ip_adapter_options import (
    KEYS,
    check_recorded_reference_images,
    ip_adapter_options,
    parse_ip_adapter,
    recorded_image_prompts,
)
from sdstudio.engine.control.image_prompts import ImagePrompt
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.generation import Engine
from sdstudio.engine.metadata import ImageRecord, png_info
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.request import GenerationRequest


@pytest.fixture
def pictures(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "style, one.png", tmp_path / "two.png", tmp_path / "mask.png"]
    for path in paths:
        Image.new("RGB", (16, 16), "white").save(path)
    return paths


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[GenerationRequest]:
    """The requests ``generate`` and ``rerun`` hand the engine (which runs nothing)."""
    requests: list[GenerationRequest] = []

    def generate(self: Engine, request: GenerationRequest, **_: Any) -> Iterator[Any]:
        requests.append(request)
        return iter(())

    monkeypatch.setattr(Engine, "generate", generate)
    return requests


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict], str]:
    code = main(list(args))
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    return code, events, captured.err


def test_specs_become_image_prompts(pictures: list[Path], tmp_path: Path) -> None:
    style, two, mask = pictures
    adapter = tmp_path / "ip-adapter-plus_sd15.safetensors"
    adapter.write_bytes(b"x")
    args = build_parser().parse_args(
        [
            "generate", "--model", "m", "--prompt", "p",
            "--ip-adapter", f"model={adapter},image={style},image={two},weight=0.6,start=0.1,"
            f"end=0.8,mask={mask},encoder=CLIP-ViT-H-14.safetensors",
            "--ip-adapter", f"model=ip-adapter_sd15,image={two}",
        ]
    )  # fmt: skip
    first, second = ip_adapter_options(args)
    assert first == ImagePrompt(
        model=str(adapter), images=(str(style), str(two)), weight=0.6, start=0.1, end=0.8,
        mask=str(mask), encoder="CLIP-ViT-H-14.safetensors",
    )  # fmt: skip
    assert second == ImagePrompt("ip-adapter_sd15", (str(two),))
    request = GenerationRequest(model="m", prompt="p", ip_adapters=(first, second))
    again = GenerationRequest.from_json(request.to_json())
    assert again.ip_adapters == (first, second)
    assert json.loads(request.to_json())["ip_adapters"][0]["images"] == [str(style), str(two)]
    plain = build_parser().parse_args(["generate", "--model", "m", "--prompt", "p"])
    assert ip_adapter_options(plain) == ()


def test_relative_paths_are_made_absolute(pictures: list[Path], monkeypatch) -> None:
    monkeypatch.chdir(pictures[0].parent)
    prompt = parse_ip_adapter("model=ip,image=two.png,IMAGE=style, one.png,mask=mask.png")
    assert prompt.images == (str(pictures[1]), str(pictures[0])) and prompt.mask == str(pictures[2])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("model=ip,image={image},strength=1", "the keys are " + ", ".join(KEYS)),
        ("image={image}", "needs model="),
        ("model=ip", "needs image="),
        ("model=ip,image=", "needs image="),
        ("model=ip,image=/no/such.png", "the reference image /no/such.png does not exist"),
        ("model=ip,image={image},mask=/no/mask.png", "the mask /no/mask.png does not exist"),
        ("model=ip,image={image},weight=lots", "weight='lots' is not a number"),
        ("model=ip,image={image},weight=3", "weight must be between 0 and 2"),
        ("model=ip,image={image},start=0.8,end=0.2", "must come before its end"),
        ("model=ip,image={image},weight=1,weight=2", "given twice"),
        ("ip-adapter_sd15", "key=value"),
        ("model=ip" + ",image={image}" * 9, "at most 8 reference images"),
    ],
)
def test_bad_specs_are_refused(pictures: list[Path], spec: str, message: str) -> None:
    args = build_parser().parse_args(
        [
            "generate",
            "--model",
            "m",
            "--prompt",
            "p",
            "--ip-adapter",
            spec.format(image=pictures[1]),
        ]
    )
    with pytest.raises(InvalidRequest) as refused:
        ip_adapter_options(args)
    assert message in str(refused.value)


def test_more_than_four_are_refused(pictures: list[Path]) -> None:
    spec = ["--ip-adapter", f"model=ip,image={pictures[1]}"]
    args = build_parser().parse_args(["generate", "--model", "m", "--prompt", "p", *spec * 5])
    with pytest.raises(InvalidRequest, match="given 5 times; at most 4 image prompts"):
        ip_adapter_options(args)


def test_generate_puts_them_in_the_request(
    capsys, tiny_model: Path, pictures: list[Path], ran: list[GenerationRequest]
) -> None:
    code, events, _ = run_cli(
        capsys, "generate", "--model", str(tiny_model), "--prompt", "p", "--steps", "1",
        "--device", "cpu", "--ip-adapter", f"model=ip-adapter_sd15,image={pictures[1]},weight=0.5",
        "--json",
    )  # fmt: skip
    assert code == 0 and events[-1]["event"] == "done"
    (request,) = ran
    assert request.ip_adapters == (ImagePrompt("ip-adapter_sd15", (str(pictures[1]),), 0.5),)
    assert request.model == str(tiny_model)


def test_generate_refuses_a_bad_spec_before_loading(
    capsys, tiny_model: Path, tmp_path: Path, ran: list[GenerationRequest]
) -> None:
    code, events, _ = run_cli(
        capsys, "generate", "--model", str(tiny_model), "--prompt", "p", "--steps", "1",
        "--ip-adapter", f"model=ip,image={tmp_path / 'absent.png'}", "--json",
    )  # fmt: skip
    assert code == 1 and [e["event"] for e in events] == ["error"]
    assert "does not exist" in events[0]["message"] and ran == []


def recorded_image(tmp_path: Path, tiny_model: Path, images: tuple[str, ...]) -> Path:
    prompt = ImagePrompt("/elsewhere/ipadapter/ip-adapter_sd15.bin", images, 0.7, 0.1, 0.9)
    request = GenerationRequest(
        model=str(tiny_model), prompt="p", steps=1, width=64, height=64, seed=3,
        ip_adapters=(prompt,),
    )  # fmt: skip
    path = tmp_path / "made.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info(ImageRecord(request=request)))
    return path


def test_rerun_keeps_a_records_image_prompts(
    capsys, tmp_path: Path, tiny_model: Path, pictures: list[Path], ran: list[GenerationRequest]
) -> None:
    inputs = AppPaths.default().inputs_dir
    inputs.mkdir(parents=True, exist_ok=True)
    kept = inputs / "kept.png"
    kept.write_bytes(pictures[1].read_bytes())
    path = recorded_image(tmp_path, tiny_model, (str(kept),))
    code, events, _ = run_cli(capsys, "rerun", str(path), "--model", str(tiny_model), "--json")
    assert code == 0, events
    (request,) = ran
    # Read from a file, not the history: the adapter is looked for by its file name only.
    assert request.ip_adapters == (ImagePrompt("ip-adapter_sd15.bin", (str(kept),), 0.7, 0.1, 0.9),)

    outside = recorded_image(tmp_path, tiny_model, (str(pictures[1]),))
    code, events, _ = run_cli(capsys, "rerun", str(outside), "--model", str(tiny_model), "--json")
    assert code == 1 and "reference image of made.png is missing" in events[-1]["message"]
    assert "generate --ip-adapter" in events[-1]["message"] and len(ran) == 1


def test_rerun_of_another_tools_image_prompt_prints_its_note(
    capsys, tmp_path: Path, tiny_model: Path, ran: list[GenerationRequest]
) -> None:
    entry = (
        "Module: ip-adapter_clip_h, Model: ip-adapter_sd15 [6a3f4ec5], Weight: 0.6, Guidance "
        "Start: 0.0, Guidance End: 1.0"
    )
    image = tmp_path / "a1111.png"
    info = PngInfo()
    info.add_text(
        "parameters",
        f'a cat\nSteps: 1, Sampler: Euler, Seed: 5, Size: 64x64, ControlNet 0: "{entry}"',
    )
    Image.new("RGB", (8, 8)).save(image, pnginfo=info)
    code, events, _ = run_cli(capsys, "rerun", str(image), "--model", str(tiny_model), "--json")
    assert code == 0
    notices = [e["message"] for e in events if e["event"] == "notice"]
    assert any(
        n.startswith("ControlNet 0 (IP-Adapter ip-adapter_sd15) needs its reference images")
        for n in notices
    )
    assert ran[0].ip_adapters == ()


def test_recorded_paths_and_images(tmp_path: Path) -> None:
    prompt = ImagePrompt("C:\\ip\\plus.safetensors", ("/x/a.png",), encoder="/enc/clip_h.pth")
    (named,) = recorded_image_prompts((prompt,))
    assert named == dataclasses.replace(prompt, model="plus.safetensors", encoder="clip_h.pth")
    name = ImagePrompt("h94/IP-Adapter", ("/x/a.png",))
    assert recorded_image_prompts((name,)) == (name,)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "a.png").write_bytes(b"")
    masked = ImagePrompt("ip", (str(inputs / "a.png"),), mask=str(tmp_path / "m.png"))
    with pytest.raises(InvalidRequest, match="The image prompt mask of x is missing"):
        check_recorded_reference_images((masked,), "x", inputs)
    gone = ImagePrompt("ip", (str(inputs / "gone.png"),))
    with pytest.raises(InvalidRequest, match=r"gone\.png of x is gone"):
        check_recorded_reference_images((gone,), "x", inputs)


@pytest.mark.parametrize(
    ("part", "expected"),
    [("pixel_perfect=true", True), ("pp=False", False), ("PP=TRUE", True), ("", False)],
)
def test_control_pixel_perfect(pictures: list[Path], part: str, expected: bool) -> None:
    spec = f"model=cn,image={pictures[1]}" + (f",{part}" if part else "")
    assert parse_control(spec).pixel_perfect is expected


def test_control_pixel_perfect_refuses_other_values(pictures: list[Path]) -> None:
    with pytest.raises(InvalidRequest, match="pixel_perfect='yes' must be true or false"):
        parse_control(f"model=cn,image={pictures[1]},pp=yes")
