"""Shared fixtures: tiny models built once per session, a private data folder per test."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fake_hub
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The tiny Stable Diffusion models run in float32 as the tests' expected images were
# made, whatever this CPU has; tests of the CPU's bfloat16 choice unset it.
os.environ["SDSTUDIO_SD_CPU_PRECISION"] = "float32"


@pytest.fixture(autouse=True)
def sdstudio_home(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own SDSTUDIO_HOME (and XDG data folder, where the desktop's
    trash is, and a runtime folder for sockets), so nothing touches real user data."""
    home = tmp_path / "home"
    monkeypatch.setenv("SDSTUDIO_HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime_dir(tmp_path_factory)))
    return home


def runtime_dir(factory: pytest.TempPathFactory) -> Path:
    """A private runtime folder (0700, as the desktop session's) for the session's sockets."""
    folder = factory.getbasetemp() / "runtime"
    folder.mkdir(mode=0o700, exist_ok=True)
    folder.chmod(0o700)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SD 1.x model saved as a diffusers folder."""
    from sdstudio.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_inpainting_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random 9-channel inpainting model saved as a diffusers folder."""
    from sdstudio.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-inpaint", inpainting=True)


@pytest.fixture(scope="session")
def manager():
    """One pipeline manager for the session: loading is the slow part."""
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.pipelines import PipelineManager

    return PipelineManager(choose_device("cpu"))


@pytest.fixture
def engine(manager, tmp_path: Path):
    """An engine over the shared pipeline manager, with its own inputs folder."""
    from sdstudio.engine.generation import Engine

    return Engine(manager, tmp_path / "inputs")


@pytest.fixture
def init_image(tmp_path: Path) -> Path:
    """An 80x72 RGB image with a pattern."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (80, 72), (30, 90, 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, 60, 60), fill=(240, 200, 40))
    path = tmp_path / "init.png"
    image.save(path)
    return path


@pytest.fixture
def mask_image(tmp_path: Path) -> Path:
    """An 80x72 mask whose centre is white (repaint)."""
    from PIL import Image

    mask = Image.new("L", (80, 72), 0)
    mask.paste(255, (20, 16, 60, 56))
    path = tmp_path / "mask.png"
    mask.save(path)
    return path


@pytest.fixture
def paths(sdstudio_home: Path):
    """The app's folders under this test's SDSTUDIO_HOME."""
    from sdstudio.engine.paths import AppPaths

    return AppPaths.default()


@pytest.fixture
def window(qtbot, paths):
    """The main window over a real worker thread (stopped, and checked stopped, afterwards)."""
    from sdstudio.engine.history.library import ImageLibrary
    from sdstudio.ui.controller import GenerationController
    from sdstudio.ui.main_window import MainWindow
    from sdstudio.ui.worker import GenerationWorker

    library = ImageLibrary.open(paths.history_db, paths.outputs_dir)
    controller = GenerationController(GenerationWorker(library, paths, "cpu"))
    main_window = MainWindow(controller, library, paths)
    qtbot.addWidget(main_window)
    main_window.show()
    yield main_window
    controller.shutdown()
    main_window.gallery.shutdown()
    assert not controller.thread_running
    library.close()


# The fake Hugging Face Hub of the download tests.


@pytest.fixture(scope="module")
def repo_files(tiny_model: Path) -> dict[str, bytes]:
    """The tiny model's files, plus files a download must leave out."""
    folder = tiny_model
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
             if p.is_file()}  # fmt: skip
    files["unet/diffusion_pytorch_model.bin"] = b"pickle" * 10
    files["tiny_turbo.safetensors"] = b"single file" * 10
    files["README.md"] = b"# tiny"
    files.update(fake_hub.CODE_FILES)
    return files


@pytest.fixture
def hub(repo_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A running fake Hugging Face Hub (``fake_hub.py``) at ``endpoint``, http://127.0.0.1:PORT."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    state = fake_hub.FakeHub(dict(repo_files))
    server = fake_hub.QuietServer(("127.0.0.1", 0), fake_hub.handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.endpoint = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private Hugging Face cache."""
    folder = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    return folder
