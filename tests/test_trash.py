"""The desktop's trash: the freedesktop layout on Linux, and asking before a delete for good."""

from __future__ import annotations

import os
import stat
import sys
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from sdstudio.engine import trash
from sdstudio.engine.generation import GeneratedImage
from sdstudio.engine.history.library import ImageLibrary
from sdstudio.engine.metadata import ImageRecord
from sdstudio.engine.request import GenerationRequest

pytestmark = pytest.mark.skipif(not trash.FREEDESKTOP, reason="freedesktop trash only")

WHEN = datetime(2026, 3, 4, 5, 6, 7)


def info_text(root: Path, name: str) -> str:
    return (root / "info" / f"{name}.trashinfo").read_text("ascii")


@pytest.fixture
def drive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder that passes for the top of another filesystem (a data drive): its files
    have another device number than the home trash, and it is their mount point."""
    top = tmp_path / "drive"
    top.mkdir(exist_ok=True)
    real_device = trash.device_of

    def device_of(path: str | os.PathLike[str]) -> int:
        inside = Path(os.path.abspath(path)).is_relative_to(top)
        return real_device(path) + 1 if inside else real_device(path)

    monkeypatch.setattr(trash, "device_of", device_of)
    monkeypatch.setattr(trash, "mount_point", lambda path: top)
    return top


def test_a_file_on_the_home_filesystem_goes_to_the_home_trash(tmp_path: Path) -> None:
    home = Path(os.environ["XDG_DATA_HOME"]) / "Trash"
    file = tmp_path / "my image #1 ü.png"
    file.write_bytes(b"pixels")
    moved = trash.move_to_trash(file, WHEN)
    assert moved == home / "files" / file.name and moved.read_bytes() == b"pixels"
    assert not file.exists()
    encoded = str(file).replace(" ", "%20").replace("#", "%23").replace("ü", "%C3%BC")
    assert info_text(home, file.name) == (
        f"[Trash Info]\nPath={encoded}\nDeletionDate=2026-03-04T05:06:07\n"
    )
    assert stat.S_IMODE(os.stat(home / "info" / f"{file.name}.trashinfo").st_mode) == 0o600


def test_names_already_in_the_trash_are_not_overwritten(tmp_path: Path) -> None:
    home = Path(os.environ["XDG_DATA_HOME"]) / "Trash"
    names = []
    for content in (b"one", b"two", b"three"):
        file = tmp_path / "image.png"
        file.write_bytes(content)
        names.append(trash.move_to_trash(file).name)
    assert names == ["image.png", "image.2.png", "image.3.png"]
    assert (home / "files" / "image.3.png").read_bytes() == b"three"
    assert f"Path={tmp_path}/image.png\n" in info_text(home, "image.2.png")
    # A file in files/ without a record (left by some other tool) is not replaced either.
    (home / "files" / "image.4.png").write_bytes(b"orphan")
    file.write_bytes(b"four")
    assert trash.move_to_trash(file).name == "image.5.png"
    assert (home / "files" / "image.4.png").read_bytes() == b"orphan"
    assert not (home / "info" / "image.4.png.trashinfo").exists()


def test_another_filesystem_uses_its_own_per_user_trash(drive: Path) -> None:
    file = drive / "outputs" / "2026" / "image.png"
    file.parent.mkdir(parents=True)
    file.write_bytes(b"pixels")
    moved = trash.move_to_trash(file, WHEN)
    root = drive / f".Trash-{os.getuid()}"
    assert moved == root / "files" / "image.png" and not file.exists()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    # Relative to the drive's top, as the specification asks, so it survives remounting.
    assert "Path=outputs/2026/image.png\n" in info_text(root, "image.png")
    assert not (Path(os.environ["XDG_DATA_HOME"]) / "Trash" / "files" / "image.png").exists()


def test_an_administrators_sticky_trash_is_used(drive: Path) -> None:
    shared = drive / ".Trash"
    shared.mkdir()
    shared.chmod(0o1777)
    file = drive / "image.png"
    file.write_bytes(b"x")
    moved = trash.move_to_trash(file)
    assert moved == shared / str(os.getuid()) / "files" / "image.png"
    assert not (drive / f".Trash-{os.getuid()}").exists()


@pytest.mark.parametrize("kind", ["not sticky", "a link"])
def test_an_unsafe_shared_trash_is_skipped(drive: Path, tmp_path: Path, kind: str) -> None:
    if kind == "a link":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        elsewhere.chmod(0o1777)
        (drive / ".Trash").symlink_to(elsewhere)
    else:
        (drive / ".Trash").mkdir(mode=0o777)
    file = drive / "image.png"
    file.write_bytes(b"x")
    moved = trash.move_to_trash(file)
    assert moved == drive / f".Trash-{os.getuid()}" / "files" / "image.png"
    assert list(tmp_path.glob("elsewhere/**/*.png")) == []
    assert not (drive / ".Trash" / str(os.getuid())).exists()


def test_a_per_user_trash_that_is_a_link_is_refused(drive: Path, tmp_path: Path) -> None:
    (tmp_path / "trap").mkdir()
    (drive / f".Trash-{os.getuid()}").symlink_to(tmp_path / "trap")
    file = drive / "image.png"
    file.write_bytes(b"x")
    with pytest.raises(trash.TrashUnavailable, match="not a plain folder"):
        trash.move_to_trash(file)
    assert file.read_bytes() == b"x" and list((tmp_path / "trap").iterdir()) == []


@pytest.fixture
def read_only_top(drive: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The drive's top folder cannot be written to (as a drive's root owned by root):
    making a folder there fails, whoever runs the tests."""
    real_mkdir = os.mkdir

    def mkdir(path, mode=0o777, *args, **kwargs) -> None:
        if Path(path).parent == drive:
            raise PermissionError(13, "Permission denied", str(path))
        real_mkdir(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    return drive


def test_a_drive_without_a_usable_trash_is_refused_with_the_reason(read_only_top: Path) -> None:
    drive = read_only_top
    file = drive / "image.png"
    file.write_bytes(b"x")
    with pytest.raises(trash.TrashUnavailable) as raised:
        trash.move_to_trash(file)
    assert str(raised.value) == f"no trash folder can be made on {drive}: permission denied"
    assert file.read_bytes() == b"x"


def test_a_failed_move_leaves_no_record(tmp_path: Path, monkeypatch) -> None:
    home = Path(os.environ["XDG_DATA_HOME"]) / "Trash"
    file = tmp_path / "image.png"
    file.write_bytes(b"x")

    def refuse(source, target) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(trash.os, "rename", refuse)
    with pytest.raises(trash.TrashUnavailable, match="cannot be moved there"):
        trash.move_to_trash(file)
    assert file.exists() and list((home / "info").iterdir()) == []


def test_the_mount_point_is_where_the_device_changes(tmp_path: Path) -> None:
    top = trash.mount_point(tmp_path)
    assert tmp_path.resolve().is_relative_to(top)
    assert trash.device_of(top) == trash.device_of(tmp_path)
    assert top == Path("/") or trash.device_of(top.parent) != trash.device_of(top)


# The gallery: a delete for good only after asking.


def saved_image(library: ImageLibrary) -> str:
    request = GenerationRequest(model="m", prompt="a fox", seed=1, width=64, height=64)
    image = GeneratedImage(Image.new("RGB", (64, 64)), ImageRecord(request=request))
    return library.save(image).path


@pytest.fixture
def gallery(qtbot, tmp_path: Path):
    from sdstudio.ui.gallery import GalleryPanel

    outputs = tmp_path / "drive" / "outputs"
    outputs.mkdir(parents=True)
    library = ImageLibrary.open(tmp_path / "db.sqlite3", outputs)
    panel = GalleryPanel(library, tmp_path / "thumbnails")
    qtbot.addWidget(panel)
    yield panel
    panel.shutdown()
    library.close()


def test_the_gallery_asks_before_deleting_what_cannot_go_to_the_trash(
    gallery, read_only_top: Path
) -> None:
    drive = read_only_top
    path = saved_image(gallery.library)
    gallery.refresh()
    gallery.select_row(0)
    asked: list[tuple[str, str]] = []
    messages: list[str] = []
    gallery.message.connect(messages.append)
    gallery.confirm = lambda text: pytest.fail("asked to move to the trash")
    gallery.confirm_permanent = lambda reason, where: asked.append((reason, where)) or False
    gallery.delete_action.trigger()
    assert asked == [(f"no trash folder can be made on {drive}: permission denied", path)]
    assert Path(path).exists() and gallery.model.rowCount() == 1
    gallery.confirm_permanent = lambda reason, where: True
    gallery.delete_action.trigger()
    assert not Path(path).exists() and gallery.model.rowCount() == 0
    assert messages == [f"{Path(path).name} was deleted permanently."]


def test_the_gallery_moves_to_the_drives_trash(gallery, drive: Path) -> None:
    path = saved_image(gallery.library)
    gallery.refresh()
    gallery.select_row(0)
    gallery.confirm = lambda text: True
    gallery.confirm_permanent = lambda reason, where: pytest.fail("asked to delete for good")
    gallery.delete_action.trigger()
    assert (drive / f".Trash-{os.getuid()}" / "files" / Path(path).name).is_file()
    assert gallery.model.rowCount() == 0


def test_a_move_that_fails_late_still_asks(tmp_path: Path, monkeypatch) -> None:
    from sdstudio.ui.desktop_files import discard_file

    def refuse(path, now=None):
        raise trash.TrashUnavailable("the drive is read-only")

    monkeypatch.setattr(trash, "move_to_trash", refuse)
    file = tmp_path / "image.png"
    file.write_bytes(b"x")
    asked: list[str] = []
    outcome = discard_file(str(file), lambda reason: asked.append(reason) or False)
    assert outcome == "was kept: it cannot be moved to the trash (the drive is read-only)"
    assert asked == ["the drive is read-only"] and file.exists()
    assert discard_file(str(file)).startswith("was kept")  # never deletes without a yes
    assert discard_file(str(file), lambda reason: True) == "was deleted permanently"
    assert not file.exists()


def test_the_question_offers_delete_and_cancel(qtbot) -> None:
    from PySide6.QtWidgets import QMessageBox

    from sdstudio.ui.desktop_files import permanent_delete_box

    box = permanent_delete_box("the drive is read-only", "/data/image.png")
    qtbot.addWidget(box)
    assert box.text() == (
        "This image cannot be moved to the trash (the drive is read-only). Delete it permanently?"
    )
    assert box.informativeText() == "/data/image.png"
    assert [b.text() for b in box.buttons()].count("Delete") == 1
    assert box.defaultButton() is box.button(QMessageBox.StandardButton.Cancel)


@pytest.mark.skipif(sys.platform != "linux", reason="Linux")
def test_the_gallery_no_longer_uses_qts_trash(tmp_path: Path, monkeypatch) -> None:
    """Qt's trash was the one that deleted files on another filesystem; it is not asked."""
    from PySide6.QtCore import QFile

    from sdstudio.ui.desktop_files import discard_file

    monkeypatch.setattr(QFile, "moveToTrash", staticmethod(lambda path: pytest.fail("Qt asked")))
    file = tmp_path / "image.png"
    file.write_bytes(b"x")
    assert discard_file(str(file)) == "was moved to the trash"
