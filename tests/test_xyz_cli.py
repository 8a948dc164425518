"""``sdstudio-cli xyz`` on the tiny SD 1.x model: cells recorded in the history, one grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from sdstudio.cli import main
from sdstudio.engine.history.store import HistoryStore
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.xyz.grid import XYZ_KEY, layout_grid


def run_xyz(capsys: pytest.CaptureFixture[str], model: Path, *extra: str) -> tuple[int, list, str]:
    code = main(
        [
            "xyz",
            "--model",
            str(model),
            "--prompt",
            "a red boat",
            "--negative",
            "boat wreck",
            "--width",
            "64",
            "--height",
            "64",
            "--seed",
            "5",
            "--device",
            "cpu",
            "--json",
            *extra,
        ]
    )
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    return code, events, captured.err


def history_count() -> int:
    store = HistoryStore(AppPaths.default().history_db)
    try:
        return store.count()
    finally:
        store.close()


def test_two_by_two_plot_records_four_images_and_writes_the_grid(
    capsys, tiny_model: Path, sdstudio_home: Path
) -> None:
    code, events, err = run_xyz(capsys, tiny_model, "--x", "Steps: 1,2", "--y", "CFG Scale: 1,2")
    assert code == 0, err
    images = [e for e in events if e["event"] == "image"]
    assert [e["cell"] for e in images] == [0, 1, 2, 3]
    assert {e["seed"] for e in images} == {5}
    assert history_count() == 4
    [grid] = [e for e in events if e["event"] == "grid"]
    assert [c["id"] for c in grid["cells"]] == [e["id"] for e in images]
    path = Path(grid["path"])
    assert path.parent == sdstudio_home / "outputs" / "grids"
    layout = layout_grid(
        (64, 64), (2, 2, 1), ["Steps: 1", "Steps: 2"], ["CFG Scale: 1.0", "CFG Scale: 2.0"]
    )[0]
    with Image.open(path) as saved:
        assert saved.size == layout.size == (grid["width"], grid["height"])
        assert 'X Type: Steps, X Values: "1,2"' in saved.info["parameters"]
        assert json.loads(saved.info[XYZ_KEY])["axes"][1]["type"] == "CFG Scale"
        left, top = layout.cells[3]
        with Image.open(images[3]["path"]) as last_image:
            cell = last_image.convert("RGB").tobytes()
        assert saved.convert("RGB").crop((left, top, left + 64, top + 64)).tobytes() == cell
    with Image.open(images[3]["path"]) as last:
        assert "Steps: 2," in last.info["parameters"] and "CFG scale: 2," in last.info["parameters"]
    assert events[-1]["event"] == "done"


def test_ctrl_c_between_cells_keeps_the_images_made(
    capsys, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine is replaced by one that makes plain images (the model is not needed to
    see what a cancel keeps), and is interrupted as the third cell starts."""
    from sdstudio.engine.generation import Engine, GeneratedImage
    from sdstudio.engine.metadata.record import ImageRecord

    calls = []

    def interrupted(self, request, **kwargs):
        calls.append(request)
        if len(calls) == 3:
            raise KeyboardInterrupt
        yield GeneratedImage(Image.new("RGB", (64, 64), (9, 9, 9)), ImageRecord(request=request))

    monkeypatch.setattr(Engine, "generate", interrupted)
    code, events, _ = run_xyz(capsys, tiny_model, "--x", "Prompt S/R: red, blue, green")
    assert code == 130
    assert [e["cell"] for e in events if e["event"] == "image"] == [0, 1]
    assert calls[1].prompt == "a blue boat"
    [grid] = [e for e in events if e["event"] == "grid"]
    assert [c["id"] is not None for c in grid["cells"]] == [True, True, False]
    assert Path(grid["path"]).exists()
    assert events[-1]["event"] == "cancelled"
    assert history_count() == 2


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        (["--x", "Steps: 1-60", "--y", "CFG Scale: 1,2"], "would make 120 images (60 × 2)"),
        (["--x", "Steps: 1-200"], "The range '1-200' makes 200 values; an axis takes at most 100"),
        (["--x", "Sharpness: 1"], "Unknown X/Y/Z axis 'Sharpness'"),
        (["--x", "Prompt S/R: horse, dog"], "did not find 'horse'"),
        (["--x", "Steps: 1", "--z", "Seed: 1,2"], "--z needs --y"),
        (["--x", "Steps: 1, 0"], "Steps 0: Steps must be between 1 and 500"),
    ],
)
def test_bad_plots_are_refused_before_a_model_loads(
    capsys, tiny_model: Path, axes: list[str], message: str
) -> None:
    code, events, _ = run_xyz(capsys, tiny_model, *axes)
    assert code == 1
    assert events[-1]["event"] == "error"
    assert message in events[-1]["message"]
    assert not any("Loading" in e.get("message", "") for e in events)
    assert history_count() == 0


@pytest.mark.slow
def test_three_by_three_plot_on_the_tiny_model(capsys, tiny_model: Path) -> None:
    code, events, err = run_xyz(
        capsys, tiny_model, "--x", "Steps: 1-3", "--y", "CFG Scale: 1-7 [3]"
    )
    assert code == 0, err
    images = [e for e in events if e["event"] == "image"]
    assert len(images) == 9 and history_count() == 9
    [grid] = [e for e in events if e["event"] == "grid"]
    x_labels = ["Steps: 1", "Steps: 2", "Steps: 3"]
    y_labels = ["CFG Scale: 1.0", "CFG Scale: 4.0", "CFG Scale: 7.0"]
    layout = layout_grid((64, 64), (3, 3, 1), x_labels, y_labels)[0]
    with Image.open(grid["path"]) as saved:
        assert saved.size == layout.size
        for cell, (left, top) in zip(images, layout.cells, strict=True):
            with Image.open(cell["path"]) as image:
                assert saved.crop((left, top, left + 64, top + 64)).tobytes() == (
                    image.convert("RGB").tobytes()
                )
