"""Render ``resources/sdstudio.svg`` into the icon files that ship with sdstudio.

Writes, under ``resources/icons``:

- ``hicolor/<N>x<N>/apps/io.github.sdstudio.SdStudio.png`` for the usual sizes
  and ``hicolor/scalable/apps/io.github.sdstudio.SdStudio.svg`` (a copy), the
  freedesktop icon theme layout that ``sdstudio --install-desktop-entry`` copies;
- ``sdstudio.ico`` (Windows) and ``sdstudio.icns`` (macOS) for frozen builds.

The SVG is rendered by Qt offscreen; Pillow optimizes the PNGs and writes the
ICO and ICNS containers. Run it again after changing the SVG::

    python packaging/make_icons.py
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
from pathlib import Path

from PIL import Image

from sdstudio.desktop_entry import APP_ID, ICON_SIZES

ROOT = Path(__file__).resolve().parents[1]
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
ICNS_SIZES = (16, 32, 64, 128, 256, 512, 1024)


def render(svg: Path, size: int) -> Image.Image:
    """The SVG drawn on a transparent ``size`` x ``size`` square, as an RGBA image."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _ = QGuiApplication.instance() or QGuiApplication(["make_icons"])
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"Qt cannot read {svg}")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter)
    painter.end()
    rgba = image.convertToFormat(QImage.Format.Format_RGBA8888)
    pixels = bytes(rgba.constBits())
    return Image.frombytes("RGBA", (size, size), pixels, "raw", "RGBA", rgba.bytesPerLine())


def png_bytes(image: Image.Image) -> bytes:
    """The image as a small PNG: optimized, without any text chunks."""
    output = io.BytesIO()
    image.save(output, "PNG", optimize=True)
    return output.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--svg", type=Path, default=ROOT / "resources" / "sdstudio.svg")
    parser.add_argument("--out", type=Path, default=ROOT / "resources" / "icons")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    sizes = sorted({*ICON_SIZES, *ICO_SIZES, *ICNS_SIZES})
    images = {size: render(args.svg, size) for size in sizes}
    hicolor = args.out / "hicolor"
    for size in ICON_SIZES:
        target = hicolor / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png_bytes(images[size]))
    scalable = hicolor / "scalable" / "apps" / f"{APP_ID}.svg"
    scalable.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.svg, scalable)

    # Each size is rendered from the SVG, not scaled down from the largest one.
    largest = images[max(ICO_SIZES)]
    largest.save(
        args.out / "sdstudio.ico",
        sizes=[(size, size) for size in ICO_SIZES],
        append_images=[images[size] for size in ICO_SIZES if size != max(ICO_SIZES)],
    )
    images[max(ICNS_SIZES)].save(
        args.out / "sdstudio.icns",
        append_images=[images[size] for size in ICNS_SIZES if size != max(ICNS_SIZES)],
    )
    for path in sorted(args.out.rglob("*")):
        if path.is_file():
            print(f"{path.stat().st_size:>8}  {path.relative_to(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
