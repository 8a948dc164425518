"""``sdstudio-cli preprocess`` writes control maps; ``generate --control`` specs become
the request's control units, and bad specs are refused with messages that help."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.cli import build_parser, main
from sdstudio.cli.control_options import (
    KEYS,
    check_recorded_control_images,
    control_options,
    parse_control,
    recorded_control,
)
from sdstudio.engine.control.units import ControlMode, ControlResize, ControlUnit
from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.request import GenerationRequest


@pytest.fixture
def drawing(tmp_path: Path) -> Path:
    pixels = np.full((96, 128, 3), 255, np.uint8)
    pixels[30:70, 40:90] = 0
    path = tmp_path / "draw, with comma.png"
    Image.fromarray(pixels).save(path)
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict], str]:
    code = main(list(args))
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    return code, events, captured.err


def test_preprocess_writes_the_map(capsys, tmp_path: Path, drawing: Path) -> None:
    out = tmp_path / "maps" / "canny.png"
    code, events, _ = run_cli(
        capsys, "preprocess", str(drawing), "--preprocessor", "canny", "--resolution", "192",
        "--out", str(out), "--json",
    )  # fmt: skip
    assert code == 0 and events[-1] == {"event": "done", "path": str(out)}
    edges = np.asarray(Image.open(out))
    assert edges.shape == (192, 256, 3) and set(np.unique(edges)) == {0, 255}
    assert edges[80:120, 110:150].max() == 0 and edges[60:140, 75:85].max() == 255
    code, _, _ = run_cli(
        capsys, "preprocess", str(drawing), "--preprocessor", "invert", "--width", "64",
        "--height", "64", "--resize", "fill", "--out", str(out),
    )  # fmt: skip
    inverted = np.asarray(Image.open(out))
    assert code == 0 and inverted.shape == (64, 64, 3) and inverted[32, 32].max() == 255


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preprocessor", "cany"], "'cany' is unknown; the built-in ones are none, canny"),
        (["--preprocessor", "depth_midas"], "needs its own weights"),
        (["--preprocessor", "canny", "--threshold-b", "900"], "high threshold"),
        (["--preprocessor", "canny", "--width", "64"], "both --width and --height"),
        (["--preprocessor", "inpaint_only"], "needs --mask"),
    ],
)
def test_preprocess_refuses_clearly(
    capsys, tmp_path: Path, drawing: Path, extra: list[str], message: str
) -> None:
    out = tmp_path / "m.png"
    code, _, err = run_cli(capsys, "preprocess", str(drawing), *extra, "--out", str(out))
    assert code == 1 and message in err and "Traceback" not in err
    assert not out.exists()
    code, _, err = run_cli(
        capsys, "preprocess", str(tmp_path / "gone.png"), "--preprocessor", "canny",
        "--out", str(out),
    )  # fmt: skip
    assert code == 1 and "does not exist" in err


def test_control_specs_round_trip_into_the_request(drawing: Path, tmp_path: Path) -> None:
    model = tmp_path / "control_canny.safetensors"
    model.write_bytes(b"x")
    args = build_parser().parse_args(
        [
            "generate", "--model", "m", "--prompt", "p",
            "--control", f"model={model},image={drawing},preprocessor=canny,weight=0.8,start=0,"
            "end=0.75,mode=control,resize=fill,res=640,a=90,b=180,type=canny",
            "--control", f"model=lllyasviel/control_v11p_sd15_scribble,image={drawing}",
        ]
    )  # fmt: skip
    units = control_options(args)
    assert units[0] == ControlUnit(
        model=str(model), image=str(drawing), preprocessor="canny", weight=0.8, end=0.75,
        mode=ControlMode.CONTROL, resize=ControlResize.FILL, resolution=640,
        threshold_a=90, threshold_b=180, control_type="canny",
    )  # fmt: skip
    assert units[1] == ControlUnit("lllyasviel/control_v11p_sd15_scribble", str(drawing))
    request = GenerationRequest(model="m", prompt="p", control=units)
    again = GenerationRequest.from_json(request.to_json())
    assert again.control == units
    assert json.loads(request.to_json())["control"][0]["resize"] == "fill"


def test_relative_control_image_is_made_absolute(drawing: Path, monkeypatch) -> None:
    monkeypatch.chdir(drawing.parent)
    unit = parse_control(f"model=cn,image={drawing.name},module=invert")
    assert unit.image == str(drawing) and unit.preprocessor == "invert"


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("model=cn,image={image},strength=1", InvalidRequest, "the keys are " + ", ".join(KEYS)),
        ("image={image}", InvalidRequest, "needs model="),
        ("model=cn", InvalidRequest, "needs image="),
        ("model=cn,image=/no/such.png", InvalidRequest, "does not exist"),
        ("model=cn,image={image},weight=lots", InvalidRequest, "weight='lots' is not a number"),
        ("model=cn,image={image},res=1.5", InvalidRequest, "not a whole number"),
        ("model=cn,image={image},weight=3", InvalidRequest, "weight"),
        ("model=cn,image={image},mode=strong", InvalidRequest, "balanced, prompt, control"),
        ("model=cn,image={image},model=x", InvalidRequest, "given twice"),
        ("canny", InvalidRequest, "key=value"),
        ("model=cn,image={image},preprocessor=openpose_hand", ModelError, "annotator"),
        ("model=cn,image={image},preprocessor=sketchy", InvalidRequest, "built-in ones"),
    ],
)
def test_bad_control_specs_are_refused(
    drawing: Path, spec: str, error: type[Exception], message: str
) -> None:
    args = build_parser().parse_args(
        ["generate", "--model", "m", "--prompt", "p", "--control", spec.format(image=drawing)]
    )
    with pytest.raises(error) as refused:
        control_options(args)
    assert message in str(refused.value)


def test_generate_refuses_a_bad_control_before_loading(
    capsys, tmp_path: Path, tiny_model: Path
) -> None:
    missing = tmp_path / "absent.png"
    code, events, _ = run_cli(
        capsys, "generate", "--model", str(tiny_model), "--prompt", "p", "--steps", "1",
        "--control", f"model=cn,image={missing}", "--json",
    )  # fmt: skip
    assert code == 1 and [e["event"] for e in events] == ["error"]
    assert events[0]["message"] == f"--control: the control image {missing} does not exist."


def test_rerun_uses_recorded_control_images_only_from_the_inputs_folder(
    tmp_path: Path, drawing: Path
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    kept = inputs / "control.png"
    kept.write_bytes(drawing.read_bytes())
    check_recorded_control_images((ControlUnit("cn", str(kept)),), "x.png", inputs)
    with pytest.raises(InvalidRequest, match="only control images kept in its inputs folder"):
        check_recorded_control_images((ControlUnit("cn", str(drawing)),), "x.png", inputs)
    with pytest.raises(InvalidRequest, match="is gone"):
        check_recorded_control_images((ControlUnit("cn", str(inputs / "gone.png")),), "x", inputs)
    units = (
        ControlUnit("/home/someone/models/ControlNet/canny.safetensors", str(kept)),
        ControlUnit("C:\\webui\\models\\ControlNet\\depth.pth", str(kept)),
        ControlUnit("lllyasviel/control_v11p_sd15_canny", str(kept)),
    )
    assert [u.model for u in recorded_control(units)] == [
        "canny.safetensors",
        "depth.pth",
        "lllyasviel/control_v11p_sd15_canny",
    ]
