"""Generate ▸ X/Y/Z plot…: the dialog, every cell queued as a job, the grid shown at the end
(pytest-qt, offscreen, over a worker whose engine paints plain images)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.xyz.grid import layout_grid
from sdstudio.ui.worker import GenerationWorker

BASE = GenerationRequest(model="/models/tiny", prompt="a red boat", seed=4, width=64, height=64)


class PaintingEngine:
    """Makes a 64x64 image coloured by the request's steps and CFG; fails on 13 steps."""

    def __init__(self, ran: list[GenerationRequest]) -> None:
        self.ran = ran
        self.pipelines = SimpleNamespace(use_device=lambda config: None)
        self.tiny_vaes = SimpleNamespace(mode="auto")

    def generate(self, request: GenerationRequest, **_: Any) -> Iterator[Any]:
        from sdstudio.engine.generation import GeneratedImage
        from sdstudio.engine.metadata.record import ImageRecord

        self.ran.append(request)
        if request.steps == 13:
            raise InvalidRequest("thirteen steps are unlucky")
        colour = (request.steps * 20 % 256, int(request.guidance_scale * 30) % 256, 120)
        yield GeneratedImage(Image.new("RGB", (64, 64), colour), ImageRecord(request=request))


class PaintingWorker(GenerationWorker):
    def __init__(self, library: Any, paths: Any) -> None:
        super().__init__(library, paths, "cpu")
        self.ran: list[GenerationRequest] = []

    def _ensure_engine(self) -> Any:
        return PaintingEngine(self.ran)


@pytest.fixture
def xyz_window(qtbot, paths) -> Iterator[Any]:
    from sdstudio.engine.history.library import ImageLibrary
    from sdstudio.ui.controller import GenerationController
    from sdstudio.ui.main_window import MainWindow
    from sdstudio.ui.xyz_actions import XyzActions

    library = ImageLibrary.open(paths.history_db, paths.outputs_dir)
    worker = PaintingWorker(library, paths)
    controller = GenerationController(worker)
    window = MainWindow(controller, library, paths)
    qtbot.addWidget(window)
    window.xyz = XyzActions(window)
    window.worker = worker
    window.panel.load(BASE)
    window.panel.set_model(BASE.model)
    window.show()
    yield window
    controller.shutdown()
    window.gallery.shutdown()
    assert not controller.thread_running
    library.close()


def test_the_generate_menu_offers_the_plot(xyz_window) -> None:
    menus = {a.text().replace("&", ""): a.menu() for a in xyz_window.menuBar().actions()}
    texts = [a.text() for a in menus["Generate"].actions()]
    assert "X/Y/Z plot…" in texts


def test_the_dialog_counts_images_and_names_bad_values(xyz_window) -> None:
    dialog = xyz_window.xyz.open_dialog()
    assert dialog.base.prompt == "a red boat"
    assert dialog.count.text() == "Enter the X values."
    assert not dialog.run_button.isEnabled()
    dialog.set_axis(0, "Steps", "1-3")
    assert dialog.count.text() == "3 images (3)"
    dialog.set_axis(1, "CFG Scale", "5, 7")
    assert dialog.count.text() == "6 images (3 × 2)"
    assert dialog.run_button.isEnabled()
    dialog.set_axis(1, "CFG Scale", "5, seven")
    assert "CFG Scale: 'seven' is not a number" in dialog.count.text()
    assert not dialog.run_button.isEnabled()
    dialog.set_axis(1, "Nothing", "")
    dialog.set_axis(2, "Seed", "1,2")
    assert "Fill in the Y axis before the Z axis" in dialog.count.text()
    dialog.set_axis(1, "Prompt S/R", "horse, cow")
    assert "did not find 'horse'" in dialog.count.text()
    dialog.set_axis(1, "Steps", "1-60")
    dialog.set_axis(2, "Nothing", "")
    assert "would make 180 images" in dialog.count.text()
    dialog.set_axis(1, "Nothing", "")
    dialog.set_axis(0, "Checkpoint name", "TINY, /models/tiny")
    assert dialog.count.text() == "2 images (2)"
    assert [c.request.model for c in dialog.plot.cells] == ["/models/tiny", "/models/tiny"]
    dialog.set_axis(0, "Checkpoint name", "no-such-model")
    assert "Unknown checkpoint 'no-such-model'" in dialog.count.text()
    dialog.reject()


def test_run_queues_every_cell_and_shows_the_grid(qtbot, xyz_window, paths) -> None:
    dialog = xyz_window.xyz.open_dialog()
    dialog.set_axis(0, "Steps", "1,2,3")
    dialog.set_axis(1, "CFG Scale", "5,7")
    queued = []
    xyz_window.controller.job_started.connect(queued.append)
    dialog.accept()
    [run] = xyz_window.xyz.runs
    assert len(run.job_ids) == 6
    qtbot.waitUntil(lambda: xyz_window.xyz.viewer is not None, timeout=10_000)
    ran = xyz_window.worker.ran
    assert [(r.steps, r.guidance_scale) for r in ran] == [
        (1, 5.0), (2, 5.0), (3, 5.0), (1, 7.0), (2, 7.0), (3, 7.0)
    ]  # fmt: skip
    assert queued == run.job_ids
    assert xyz_window.library.store.count() == 6
    viewer = xyz_window.xyz.viewer
    layout = layout_grid(
        (64, 64),
        (3, 2, 1),
        [f"Steps: {n}" for n in (1, 2, 3)],
        ["CFG Scale: 5.0", "CFG Scale: 7.0"],
    )[0]
    assert (viewer.view.image.width(), viewer.view.image.height()) == layout.size
    [grid] = (paths.outputs_dir / "grids").iterdir()
    assert str(grid) in viewer.caption.text()
    with Image.open(grid) as saved:
        assert saved.size == layout.size
        left, top = layout.cells[4]  # steps 2, CFG 7
        assert saved.getpixel((left + 30, top + 30)) == (40, 210, 120)
    assert xyz_window.xyz.runs == []


def test_a_failed_cell_stays_grey_and_the_others_make_the_grid(qtbot, xyz_window, paths) -> None:
    dialog = xyz_window.xyz.open_dialog()
    dialog.set_axis(0, "Steps", "12, 13")
    dialog.accept()
    qtbot.waitUntil(lambda: xyz_window.xyz.viewer is not None, timeout=10_000)
    assert "unlucky" in xyz_window.last_error
    [grid] = (paths.outputs_dir / "grids").iterdir()
    layout = layout_grid((64, 64), (2, 1, 1), ["Steps: 12", "Steps: 13"], [])[0]
    with Image.open(grid) as saved:
        assert saved.getpixel((layout.cells[1][0] + 30, layout.cells[1][1] + 30)) == (
            128,
            128,
            128,
        )
    assert xyz_window.library.store.count() == 1


def test_cancelling_every_cell_shows_no_grid(qtbot, xyz_window, paths: Path) -> None:
    controller = xyz_window.controller
    controller.cancel_all()
    dialog = xyz_window.xyz.open_dialog()
    dialog.set_axis(0, "Seed", "1, 2, 3")
    # The cells are dropped from the queue before they run.
    controller.job_started.connect(lambda _job: controller.cancel_all())
    dialog.accept()
    [run] = xyz_window.xyz.runs
    qtbot.waitUntil(lambda: not run.jobs, timeout=10_000)
    qtbot.waitUntil(
        lambda: xyz_window.statusBar().currentMessage() == "The X/Y/Z plot was cancelled.",
        timeout=5000,
    )
    assert xyz_window.xyz.viewer is None
    assert not (paths.outputs_dir / "grids").exists()
