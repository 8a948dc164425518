"""Image files reaching the window (dropped, opened, thumbnailed, copied) are read like every
input: PNG, JPEG or WebP only, never a decoder started for another format, sizes bounded."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_images import (
    apng,
    eps_named_png,
    huge_png,
    record_decoding,
    record_ghostscript,
    text_chunk,
)
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from sdstudio.engine.errors import ImageInputError
from sdstudio.ui.canvas import load_qimage
from sdstudio.ui.thumbnails import make_thumbnail

EPS_MESSAGE = r"x\.png is not a PNG, JPEG or WebP image \(it is EPS\)"


def _drop(canvas, path: Path) -> None:
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


def test_an_eps_dropped_on_the_canvas_is_refused_without_ghostscript(
    window, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = record_ghostscript(monkeypatch)
    path = eps_named_png(tmp_path / "x.png")
    _drop(window.canvas, path)
    assert window.canvas.source is None and started == []
    assert "is not a PNG, JPEG or WebP image (it is EPS)" in window.last_error
    window.open_file(path)
    assert started == [] and "(it is EPS)" in window.last_error


def test_a_dropped_animation_with_settings_after_its_frames_decodes_one_frame(
    window, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = "a fox\nSteps: 7, Sampler: Euler a, CFG scale: 5, Seed: 9, Size: 64x64"
    path = apng(tmp_path / "anim.png", 300, side=64, after=text_chunk("parameters", settings))
    decoded = record_decoding(monkeypatch)
    _drop(window.canvas, path)
    assert window.canvas.source is not None and window.canvas.source.size == (64, 64)
    assert decoded == ["decoded PNG (64, 64)"]  # the first frame, once; the settings unread
    assert window.settings_box is not None and window.settings_box.isVisible()


def test_a_huge_dropped_image_is_refused_before_decoding(
    window, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = huge_png(tmp_path / "huge.png", 13000, 13000)
    decoded = record_decoding(monkeypatch)
    _drop(window.canvas, path)
    assert window.canvas.source is None and decoded == []
    assert "more than the 67 megapixels" in window.last_error


def test_thumbnails_never_start_ghostscript_or_decode_a_huge_image(
    qapp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = record_ghostscript(monkeypatch)
    eps = eps_named_png(tmp_path / "x.png")
    huge = huge_png(tmp_path / "huge.png", 13000, 13000)
    decoded = record_decoding(monkeypatch)
    assert make_thumbnail(str(eps), 160, tmp_path / "cache") is None
    assert make_thumbnail(str(huge), 160, tmp_path / "cache") is None
    assert started == [] and decoded == []


def test_a_large_jpeg_thumbnail_is_decoded_at_a_reduced_size(qapp, tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (4000, 3000), (20, 40, 60)).save(path, quality=80)
    thumbnail = make_thumbnail(str(path), 160)
    assert thumbnail is not None and thumbnail.size == (160, 120)


def test_load_qimage_reads_like_every_input(
    qapp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = record_ghostscript(monkeypatch)
    with pytest.raises(ImageInputError, match=EPS_MESSAGE):
        load_qimage(eps_named_png(tmp_path / "x.png"))
    assert started == []
    Image.new("RGB", (96, 64), (1, 2, 3)).save(tmp_path / "ok.png")
    image = load_qimage(tmp_path / "ok.png")
    assert (image.width(), image.height()) == (96, 64)
