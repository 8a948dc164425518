"""Re-running from the gallery uses the precision the image was made in, so an image
made in bfloat16 re-runs pixel-equal after the app's own choice became float32 (and a
plain generation afterwards is back in the app's choice)."""

from __future__ import annotations

import pytest
from PIL import Image

from sdstudio.engine.metadata.record import ImageRecord
from sdstudio.engine.request import GenerationRequest


def _generate(qtbot, window) -> object:
    entries: list = []
    window.controller.image_saved.connect(lambda job, entry: entries.append(entry))
    with qtbot.waitSignal(window.controller.finished, timeout=60_000):
        assert window.generate() is not None
    return entries[-1]


def _device(entry) -> str:
    return ImageRecord.from_json(entry.record_json).device


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_a_gallery_rerun_uses_the_recorded_precision(
    qtbot, window, tiny_model, monkeypatch
) -> None:
    request = GenerationRequest(
        model=str(tiny_model), prompt="a lighthouse", steps=3, width=64, height=64, seed=11
    )
    window.panel.load(request)
    monkeypatch.setenv("SDSTUDIO_SD_CPU_PRECISION", "bfloat16")
    first = _generate(qtbot, window)
    assert _device(first) == "cpu (bfloat16)"

    # The app's choice becomes float32 (as after a restart on another setting).
    monkeypatch.setenv("SDSTUDIO_SD_CPU_PRECISION", "float32")
    with qtbot.waitSignal(window.controller.memory_freed, timeout=30_000):
        window.controller.free_memory()
    plain = _generate(qtbot, window)
    assert _device(plain) == "cpu (float32)"

    entries: list = []
    window.controller.image_saved.connect(lambda job, entry: entries.append(entry))
    with qtbot.waitSignal(window.controller.finished, timeout=60_000):
        assert window.history_actions.rerun(first) is not None
    again = entries[-1]
    assert _device(again) == "cpu (bfloat16)"
    with Image.open(first.path) as a, Image.open(again.path) as b:
        assert a.tobytes() == b.tobytes()
    with Image.open(plain.path) as a, Image.open(again.path) as b:
        assert a.tobytes() != b.tobytes()
