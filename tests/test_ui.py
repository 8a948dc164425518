"""The desktop window and its generation worker (pytest-qt, offscreen)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from sdstudio.engine.paths import AppPaths
from sdstudio.engine.request import GenerationRequest
from sdstudio.ui.mask_layer import mask_from_pil


def fill(window, model: Path, **changes) -> None:
    request = GenerationRequest(
        model=str(model), prompt="a lighthouse", steps=4, width=64, height=64, seed=3
    ).replace(**changes)
    window.panel.load(request)


def outputs(paths: AppPaths) -> list[Path]:
    return sorted(paths.outputs_dir.rglob("*.png")) if paths.outputs_dir.exists() else []


def test_first_run_explains_how_to_add_a_model(window) -> None:
    assert window.stack.currentWidget() is window.welcome
    assert "needs a Stable Diffusion model" in window.welcome.text()


def test_generate_emits_one_progress_signal_per_step(qtbot, window, tiny_model, paths) -> None:
    fill(window, tiny_model, steps=5)
    steps: list[tuple[int, int]] = []
    window.controller.progress.connect(lambda job, step, total, *rest: steps.append((step, total)))
    with qtbot.waitSignal(window.controller.finished, timeout=60_000) as finished:
        job = window.generate()
    assert finished.args[0] == job
    assert steps == [(i, 5) for i in range(1, 6)]
    [path] = finished.args[1]
    assert outputs(paths) == [Path(path)]
    assert window.canvas.has_image and window.stack.currentWidget() is window.canvas
    assert window.progress.format() == "Done"
    assert window.panel.last_seed == 3
    [entry] = window.library.store.page()
    assert (entry.path, entry.seed, entry.prompt) == (path, 3, "a lighthouse")


def test_cancel_mid_run_ends_cancelled_and_writes_nothing(qtbot, window, tiny_model, paths) -> None:
    fill(window, tiny_model, steps=200)
    window.controller.progress.connect(
        lambda job, step, *rest: window.cancel() if step == 2 else None
    )
    ended: list[str] = []
    window.controller.finished.connect(lambda *a: ended.append("finished"))
    window.controller.failed.connect(lambda *a: ended.append("failed"))
    with qtbot.waitSignal(window.controller.cancelled, timeout=60_000):
        window.generate()
    qtbot.wait(50)
    assert ended == []
    assert outputs(paths) == []
    assert window.progress.format() == "Cancelled"


def test_failure_is_shown_and_the_app_keeps_working(qtbot, window, tiny_model, tmp_path) -> None:
    fill(window, tmp_path / "no-such-model")
    with qtbot.waitSignal(window.controller.failed, timeout=60_000) as failed:
        window.generate()
    assert "does not exist" in failed.args[1]
    assert "does not exist" in window.last_error
    fill(window, tiny_model)
    with qtbot.waitSignal(window.controller.finished, timeout=60_000):
        window.generate()


def test_jobs_wait_in_a_visible_queue_and_run_in_order(qtbot, window, tiny_model) -> None:
    fill(window, tiny_model, steps=3)
    done: list[int] = []
    window.controller.finished.connect(lambda job, paths: done.append(job))
    first = window.generate()
    second = window.generate()
    assert window.queue_label.text() == "1 queued"
    qtbot.waitUntil(lambda: len(done) == 2, timeout=60_000)
    assert done == [first, second]
    assert window.queue_label.text() == ""


def test_invalid_settings_are_refused_in_the_window(window) -> None:
    window.panel.model.setCurrentText("")
    assert window.generate() is None
    assert "No model was given" in window.last_error


def test_keyboard_shortcuts_generate_and_cancel(qtbot, window, tiny_model) -> None:
    fill(window, tiny_model, steps=200)
    window.activateWindow()
    with qtbot.waitSignal(window.controller.job_started, timeout=10_000):
        QTest.keyClick(window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    with qtbot.waitSignal(window.controller.cancelled, timeout=60_000):
        QTest.keyClick(window, Qt.Key.Key_Escape)


def test_opening_an_a1111_image_loads_its_settings(window, tmp_path: Path) -> None:
    info = PngInfo()
    info.add_text(
        "parameters",
        "a castle\nNegative prompt: fog\nSteps: 33, Sampler: Euler a, "
        "CFG scale: 5.5, Seed: 77, Size: 640x384, Model: some-model",
    )
    path = tmp_path / "a1111.png"
    Image.new("RGB", (640, 384), (10, 100, 10)).save(path, pnginfo=info)
    window.open_file(path)
    assert window.settings_box is not None and window.settings_box.isVisible()
    window.settings_box.accept()
    panel = window.panel
    assert panel.prompt.toPlainText() == "a castle"
    assert panel.negative.toPlainText() == "fog"
    assert (panel.steps.value(), panel.sampler.currentText(), panel.seed.text()) == (
        33,
        "Euler a",
        "77",
    )
    assert (panel.width_box.value(), panel.height_box.value()) == (640, 384)
    assert panel.guidance.value() == 5.5
    assert window.canvas.has_image


def test_last_settings_persist_between_runs(window, tiny_model, paths) -> None:
    from sdstudio.app import restore_last_request, save_last_request

    fill(window, tiny_model, prompt="remember me", steps=9)
    save_last_request(window, paths)
    window.panel.prompt.setPlainText("changed")
    restore_last_request(window, paths)
    assert window.panel.prompt.toPlainText() == "remember me"
    assert window.panel.steps.value() == 9


def test_schedules_follow_the_sampler(window) -> None:
    panel = window.panel
    panel.sampler.setCurrentText("Euler a")
    assert [panel.schedule.itemText(i) for i in range(panel.schedule.count())] == [
        "Automatic",
        "SGM Uniform",
    ]
    panel.sampler.setCurrentText("DPM++ 2M")
    assert panel.schedule.currentText() == "Karras"


@pytest.mark.slow
def test_self_test_passes_in_a_fresh_process(sdstudio_home: Path) -> None:
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "sdstudio", "--self-test"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, (summary, done.stderr[-2000:])
    assert summary["ok"] and summary["progress_signals"] == summary["steps_expected"] == 4
    assert summary["images"] == 1 and summary["thread_stopped"]


def _drop(canvas, path: Path) -> None:
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(
        QPointF(10, 10),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    canvas.dropEvent(event)


def _run_job(qtbot, window):
    entries = []
    window.controller.image_saved.connect(lambda job, entry: entries.append(entry))
    with qtbot.waitSignal(window.controller.finished, timeout=60_000):
        assert window.generate() is not None
    return entries[-1]


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_dropped_file_becomes_the_source_for_img2img(qtbot, window, tiny_model, init_image) -> None:
    fill(window, tiny_model, steps=8)
    assert not window.panel.strength.isVisible()
    _drop(window.canvas, init_image)
    assert window.canvas.source is not None and window.canvas.source.size == (80, 72)
    assert window.panel.strength.isVisibleTo(window.panel)
    assert (window.panel.width_box.value(), window.panel.height_box.value()) == (80, 72)
    window.panel.strength.setValue(0.5)
    entry = _run_job(qtbot, window)
    assert entry.mode == "img2img"
    request = entry.request
    assert (request.width, request.height, request.strength) == (80, 72, 0.5)
    assert Path(request.init_image).parent == window.inputs_dir
    window.edit_toolbar.clear_source.trigger()
    assert window.canvas.source is None and not window.panel.strength.isVisibleTo(window.panel)
    result = _run_job(qtbot, window)
    assert result.mode == "txt2img"
    window.edit_toolbar.use_shown.trigger()  # the result becomes the next source
    assert window.canvas.source is not None and window.canvas.source.size == (80, 72)


def test_dropping_a_non_image_shows_an_error(window, tmp_path) -> None:
    junk = tmp_path / "notes.png"
    junk.write_text("hello")
    _drop(window.canvas, junk)
    assert window.canvas.source is None
    assert "not an image file" in window.last_error


def _paint_stroke(qtbot, canvas) -> None:
    viewport = canvas.viewport()
    start = canvas.mapFromScene(20, 20)
    end = canvas.mapFromScene(60, 50)
    QTest.mousePress(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    QTest.mouseMove(viewport, end)
    QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)


def test_painted_mask_makes_an_inpainting_job_with_undo(
    qtbot, window, tiny_model, init_image
) -> None:
    fill(window, tiny_model, steps=4)
    _drop(window.canvas, init_image)
    window.panel.strength.setValue(1.0)
    window.edit_toolbar.tool_actions["brush"].trigger()
    window.edit_toolbar.brush_size.setValue(10)
    _paint_stroke(qtbot, window.canvas)
    assert window.canvas.mask.has_paint()
    window.canvas.undo_stack.undo()
    assert not window.canvas.mask.has_paint()
    window.canvas.undo_stack.redo()
    mask = window.canvas.mask.to_pil()
    assert mask.getpixel((40, 35)) == 255 and mask.getpixel((75, 5)) == 0
    entry = _run_job(qtbot, window)
    assert entry.mode == "inpaint"
    with Image.open(entry.request.mask) as stored:
        assert stored.getpixel((40, 35)) == 255


def test_outpainting_makes_an_inpainting_job(qtbot, window, tiny_model, init_image) -> None:
    fill(window, tiny_model, steps=4)
    _drop(window.canvas, init_image)
    window.panel.strength.setValue(1.0)
    window.edit_toolbar.outpaint.trigger()
    dialog = window.edit_toolbar.outpaint_dialog
    dialog.spins["right"].setValue(128)
    dialog.accept()
    assert window.canvas.source.size == (80 + 128, 72)
    assert (window.panel.width_box.value(), window.panel.height_box.value()) == (208, 72)
    mask = window.canvas.mask.to_pil()
    assert mask.getpixel((200, 30)) == 255 and mask.getpixel((10, 30)) == 0
    entry = _run_job(qtbot, window)
    assert (entry.mode, entry.width, entry.height) == ("inpaint", 208, 72)
    window.edit_toolbar.source_view.trigger()  # the result is on show: back to the source
    window.edit_toolbar.undo.trigger()
    assert window.canvas.source.size == (80, 72)
    assert not window.canvas.mask.has_paint()


def test_app_starts_without_torch_and_quits_cleanly(sdstudio_home: Path) -> None:
    import importlib.util
    import json
    import subprocess
    import sys

    spec = importlib.util.spec_from_file_location(
        "gui_responsiveness", Path(__file__).parents[1] / "benchmarks" / "gui_responsiveness.py"
    )
    assert spec is not None and spec.loader is not None
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    STARTUP_CHILD = benchmark.STARTUP_CHILD
    done = subprocess.run(
        [sys.executable, "-c", STARTUP_CHILD], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["torch"] is False
    assert report["numpy"] is False  # a tenth of a second of start-up
    assert "QThread: Destroyed" not in done.stderr


def test_gallery_shows_new_images_and_reruns_them_exactly(qtbot, window, tiny_model) -> None:
    fill(window, tiny_model, steps=3, seed=-1)
    first = _run_job(qtbot, window)
    model = window.gallery.model
    qtbot.waitUntil(lambda: model.rowCount() == 1)
    assert model.entry_at(0).id == first.id
    entries = []
    window.controller.image_saved.connect(lambda job, entry: entries.append(entry))
    window.gallery.select_row(0)
    window.gallery.rerun_action.trigger()
    qtbot.waitUntil(lambda: len(entries) == 1, timeout=60_000)
    again = entries[0]
    assert again.seed == first.seed and again.id != first.id
    with Image.open(first.path) as a, Image.open(again.path) as b:
        assert a.tobytes() == b.tobytes()
    qtbot.waitUntil(lambda: model.rowCount() == 2)
    assert model.entry_at(0).id == again.id


def test_gallery_load_settings_restores_source_and_mask(
    qtbot, window, tiny_model, init_image, mask_image
) -> None:
    fill(window, tiny_model, steps=4)
    _drop(window.canvas, init_image)
    with Image.open(mask_image) as mask:
        window.canvas.mask.replace(mask_from_pil(mask))
    window.panel.strength.setValue(0.8)
    entry = _run_job(qtbot, window)
    assert entry.mode == "inpaint"
    window.edit_toolbar.clear_source.trigger()
    window.panel.prompt.setPlainText("something else")
    window.load_entry(entry)
    assert window.panel.prompt.toPlainText() == "a lighthouse"
    assert window.canvas.source is not None and window.canvas.source.size == (80, 72)
    assert window.canvas.mask.has_paint()
    assert window.panel.strength.value() == 0.8


def test_loading_an_only_masked_entry_keeps_its_size_and_inpaint_settings(
    qtbot, window, tiny_model, tmp_path
) -> None:
    from sdstudio.engine.request import InpaintArea

    big = tmp_path / "big.png"
    Image.new("RGB", (320, 240), (90, 120, 200)).save(big)
    mask = Image.new("L", (320, 240), 0)
    mask.paste(255, (100, 80, 160, 140))
    fill(window, tiny_model, steps=2)
    _drop(window.canvas, big)
    window.canvas.mask.replace(mask_from_pil(mask))
    advanced = window.panel.advanced
    advanced.inpaint_area.setCurrentIndex(advanced.inpaint_area.findData(InpaintArea.MASKED))
    advanced.mask_blur.setValue(6)
    window.panel.width_box.setValue(64)
    window.panel.height_box.setValue(64)
    entry = _run_job(qtbot, window)
    with Image.open(entry.path) as image:
        assert image.size == (320, 240)  # pasted back into the whole source
    assert (entry.request.width, entry.request.height) == (64, 64)
    window.edit_toolbar.clear_source.trigger()
    window.load_entry(entry)
    assert window.canvas.source is not None and window.canvas.source.size == (320, 240)
    assert (window.panel.width_box.value(), window.panel.height_box.value()) == (64, 64)
    assert window.panel.request().inpaint_area is InpaintArea.MASKED
    assert window.panel.request().mask_blur == 6


def test_a_crash_in_a_slot_is_logged_and_shown(qtbot, window, tmp_path) -> None:
    import logging
    import sys

    from sdstudio.app import install_excepthook

    previous = sys.excepthook
    log_file = tmp_path / "crash.log"
    handler = logging.FileHandler(log_file)
    logging.getLogger("sdstudio").addHandler(handler)
    try:
        install_excepthook(window, log_file)
        try:
            raise RuntimeError("boom in a slot")
        except RuntimeError:
            sys.excepthook(*sys.exc_info())
    finally:
        sys.excepthook = previous
        logging.getLogger("sdstudio").removeHandler(handler)
        handler.close()
    assert "RuntimeError: boom in a slot" in window.last_error
    assert str(log_file) in window.last_error
    assert "boom in a slot" in log_file.read_text()


def test_dark_theme_changes_the_palette(qapp) -> None:
    from PySide6.QtGui import QPalette

    from sdstudio.ui.theme import apply_theme

    original_style = qapp.style().name()
    original = qapp.palette()
    try:
        apply_theme(qapp, "dark")
        assert qapp.palette().color(QPalette.ColorRole.Window).lightness() < 80
        apply_theme(qapp, "light")
        assert qapp.palette().color(QPalette.ColorRole.Window).lightness() > 180
    finally:
        qapp.setPalette(original)
        qapp.setStyle(original_style)


def test_model_picker_lists_models_found_on_disk(qtbot, window, tiny_model, paths) -> None:
    import shutil

    from sdstudio.engine.settings import load_settings
    from sdstudio.ui.model_list import ModelListLoader

    shutil.copytree(tiny_model, paths.models_dir / "my-model")
    loader = ModelListLoader(paths, load_settings(paths))
    loader.loaded.connect(window.show_models)
    with qtbot.waitSignal(loader.loaded, timeout=30_000):
        loader.refresh()
    loader.shutdown()
    picker = window.panel.model
    index = picker.findText("my-model")
    assert index >= 0
    picker.setCurrentIndex(index)
    assert window.panel.model_path() == str(paths.models_dir / "my-model")
    assert "SD 1.x" in picker.itemData(index, Qt.ItemDataRole.ToolTipRole)
    assert window.panel.request().model == str(paths.models_dir / "my-model")
    window.panel.steps.setValue(50)
    picker.activated.emit(index)  # the user picks it: its defaults are offered, not forced
    assert (window.panel.steps.value(), window.panel.width_box.value()) == (50, 512)
    window.panel.recommendation.use_button.click()
    assert (window.panel.steps.value(), window.panel.width_box.value()) == (20, 512)


def test_comparing_from_the_gallery_opens_a_compare_window(qtbot, window) -> None:
    from sdstudio.engine.generation import GeneratedImage
    from sdstudio.engine.metadata import ImageRecord
    from sdstudio.ui.compare import CompareDialog

    entries = [
        window.library.save(
            GeneratedImage(
                Image.new("RGB", (64, 64), (seed * 90, 40, 40)),
                ImageRecord(GenerationRequest(model="m", prompt="a cat", seed=seed)),
            )
        )
        for seed in (1, 2)
    ]
    window.gallery.compare_requested.emit(entries[0], entries[1])
    dialog = window.findChild(CompareDialog)
    assert dialog is not None and dialog.isVisible()
    assert dialog.windowTitle() == f"Compare #{entries[0].id} and #{entries[1].id}"
    Path(entries[1].path).unlink()  # a file that is gone gets a message, not a crash
    window.gallery.compare_requested.emit(entries[0], entries[1])
