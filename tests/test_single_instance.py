"""A second launch hands its files to the running app (local socket, offscreen)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from instance_helpers import hand_over_from_process, private_runtime_dir, send_raw
from PIL import Image
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from sdstudio.engine.paths import AppPaths
from sdstudio.single_instance_socket import MAX_SOCKET_PATH_BYTES
from sdstudio.ui.single_instance import (
    MAX_MESSAGE_BYTES,
    FileOpenEvents,
    InstanceServer,
    claim_instance,
    hand_over,
    server_name,
)


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    return private_runtime_dir(tmp_path_factory, monkeypatch)


@pytest.fixture
def server(qtbot, sdstudio_home: Path):
    instance = InstanceServer(server_name(AppPaths.default()))
    assert instance.listen()
    yield instance
    instance.close()


def test_name_depends_on_the_data_folder_and_stays_short(tmp_path: Path) -> None:
    first = server_name(AppPaths.under(tmp_path / "a"))
    second = server_name(AppPaths.under(tmp_path / "b" / ("x" * 200)))
    assert first != second
    assert first == server_name(AppPaths.under(tmp_path / "a"))
    assert second is not None and len(os.fsencode(second)) <= MAX_SOCKET_PATH_BYTES
    assert len(Path(second).name) < 40


def test_files_arrive_and_the_launcher_gets_an_answer(qtbot, server, tmp_path: Path) -> None:
    image = tmp_path / "a b.png"
    received: list[list[str]] = []
    server.files_received.connect(received.append)
    assert hand_over_from_process(qtbot, server.name, [image]) is True
    assert received == [[str(image)]]


def test_relative_paths_are_sent_as_absolute(qtbot, server, tmp_path) -> None:
    received: list[list[str]] = []
    server.files_received.connect(received.append)
    assert hand_over_from_process(qtbot, server.name, ["pic.png"], cwd=tmp_path)
    assert received == [[str(tmp_path / "pic.png")]]


def test_a_launch_without_files_still_activates(qtbot, server) -> None:
    received: list[list[str]] = []
    server.files_received.connect(received.append)
    assert hand_over_from_process(qtbot, server.name, [])
    assert received == [[]]


@pytest.mark.parametrize(
    "data",
    [
        b"not json\n",
        b'{"version": 99, "files": ["/a.png"]}\n',
        b'{"version": 1, "files": "/a.png"}\n',
        b'{"version": 1, "files": [3]}\n',
        b"\xff\xfe\n",
        b"[]\n",
        b'{"version": 1, "files": [["/a.png"]]}\n',
        b'{"version": 1, "files": [{"path": "/a.png"}]}\n',
        b'{"version": 1, "files": [""]}\n',
    ],
)
def test_malformed_messages_are_ignored(qtbot, server, data: bytes) -> None:
    received: list[list[str]] = []
    server.files_received.connect(received.append)
    client = send_raw(server.name, data)
    qtbot.waitUntil(lambda: client.state() == QLocalSocket.LocalSocketState.UnconnectedState)
    assert client.readAll().data() == b""
    assert received == []
    assert hand_over_from_process(qtbot, server.name, ["/x.png"])
    assert received == [["/x.png"]]


def test_one_message_per_connection(qtbot, server) -> None:
    received: list[list[str]] = []
    server.files_received.connect(received.append)
    line = b'{"version": 1, "files": ["/one.png"]}\n'
    client = send_raw(server.name, line + line)
    qtbot.waitUntil(lambda: client.state() == QLocalSocket.LocalSocketState.UnconnectedState)
    assert received == [["/one.png"]]
    assert client.readAll().data() == b'{"version": 1, "ok": true}\n'


def test_a_huge_message_is_cut_off(qtbot, server) -> None:
    received: list[list[str]] = []
    server.files_received.connect(received.append)
    client = send_raw(server.name, b"x" * (MAX_MESSAGE_BYTES + 10))
    qtbot.waitUntil(
        lambda: client.state() == QLocalSocket.LocalSocketState.UnconnectedState, timeout=10_000
    )
    assert received == []


def test_a_silent_client_does_not_block_others(qtbot, server) -> None:
    silent = send_raw(server.name, b'{"version": 1, "fil')
    received: list[list[str]] = []
    server.files_received.connect(received.append)
    assert hand_over_from_process(qtbot, server.name, ["/y.png"])
    assert received == [["/y.png"]]
    assert silent.state() == QLocalSocket.LocalSocketState.ConnectedState
    silent.abort()


def test_a_silent_client_is_dropped_after_a_while(qtbot, sdstudio_home, monkeypatch) -> None:
    monkeypatch.setattr("sdstudio.ui.single_instance.CLIENT_TIMEOUT_MS", 100)
    server = InstanceServer(server_name(AppPaths.default()))
    assert server.listen()
    silent = send_raw(server.name, b"{")
    qtbot.waitUntil(
        lambda: silent.state() == QLocalSocket.LocalSocketState.UnconnectedState, timeout=5_000
    )
    server.close()


def test_nobody_listening_means_no_hand_over(sdstudio_home) -> None:
    assert hand_over(server_name(AppPaths.default()), ["/a.png"]) is False


def test_the_launcher_gives_up_on_an_app_that_does_not_answer(qtbot, sdstudio_home) -> None:
    name = server_name(AppPaths.default())
    stuck = QLocalServer()
    assert stuck.listen(name)
    assert hand_over(name, ["/a.png"], timeout_ms=200) is False
    stuck.close()


@pytest.mark.skipif(sys.platform == "win32", reason="named pipes leave no file behind")
def test_a_socket_left_by_a_crash_is_replaced(qtbot, sdstudio_home) -> None:
    name = server_name(AppPaths.default())
    socket_file = Path(name)
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(str(socket_file))
    crashed.close()  # the file stays, as after a crash, but nobody accepts on it
    try:
        assert hand_over(name, ["/z.png"]) is False
        server = claim_instance(AppPaths.default(), [])
        assert server is not None and server.server.isListening()
        received: list[list[str]] = []
        server.files_received.connect(received.append)
        assert hand_over_from_process(qtbot, name, ["/z.png"])
        assert received == [["/z.png"]]
        server.close()
    finally:
        socket_file.unlink(missing_ok=True)


def test_different_data_folders_get_different_servers(qtbot, tmp_path) -> None:
    first = claim_instance(AppPaths.under(tmp_path / "one"), [])
    second = claim_instance(AppPaths.under(tmp_path / "two"), [])
    assert first is not None and second is not None
    assert first.server.isListening() and second.server.isListening()
    got_first: list[list[str]] = []
    got_second: list[list[str]] = []
    first.files_received.connect(got_first.append)
    second.files_received.connect(got_second.append)
    assert hand_over_from_process(qtbot, second.name, ["/two.png"])
    assert got_first == [] and got_second == [["/two.png"]]
    first.close()
    second.close()


@pytest.fixture
def window(qtbot, sdstudio_home: Path):
    from sdstudio.engine.history.library import ImageLibrary
    from sdstudio.ui.controller import GenerationController
    from sdstudio.ui.main_window import MainWindow
    from sdstudio.ui.worker import GenerationWorker

    paths = AppPaths.default()
    library = ImageLibrary.open(paths.data_dir / "window.sqlite3", paths.outputs_dir)
    controller = GenerationController(GenerationWorker(library, paths, "cpu"))
    main_window = MainWindow(controller, library, paths)
    qtbot.addWidget(main_window)
    yield main_window
    controller.shutdown()
    main_window.gallery.shutdown()
    library.close()


@pytest.mark.slow
@pytest.mark.qt_log_ignore("This plugin does not support raise")  # offscreen platform
def test_a_second_launch_hands_its_image_to_the_running_app(
    qtbot, server, window, sdstudio_home, tmp_path
) -> None:
    from sdstudio.app import open_handed_over

    server.files_received.connect(lambda files: open_handed_over(window, files))
    window.showMinimized()
    image = tmp_path / "opened.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(image)
    env = {**os.environ, "SDSTUDIO_HOME": str(sdstudio_home), "QT_QPA_PLATFORM": "offscreen"}
    with qtbot.waitSignal(server.files_received, timeout=60_000) as arrived:
        launch = subprocess.Popen(
            [sys.executable, "-m", "sdstudio", image.name],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    assert arrived.args == [[str(image)]]
    qtbot.waitUntil(lambda: launch.poll() is not None, timeout=10_000)
    _, stderr = launch.communicate()
    assert launch.returncode == 0, stderr.decode()[-2000:]
    assert window.canvas.has_image and window.stack.currentWidget() is window.canvas
    assert window.isVisible() and not window.isMinimized()
    log = (sdstudio_home / "logs" / "sdstudio.log").read_text("utf-8")
    assert "Handed 1 file(s) to the sdstudio already running" in log
    assert not (sdstudio_home / "data" / "history.sqlite3").exists()


def test_file_open_events_reach_the_running_app(qtbot, qapp, tmp_path: Path) -> None:
    """macOS delivers "Open With" on a running app as a FileOpen event."""
    from PySide6.QtCore import QCoreApplication
    from PySide6.QtGui import QFileOpenEvent

    events = FileOpenEvents()
    qapp.installEventFilter(events)
    try:
        image = str(tmp_path / "from-finder.png")
        with qtbot.waitSignal(events.files_received) as received:
            QCoreApplication.sendEvent(qapp, QFileOpenEvent(image))
        assert received.args == [[image]]
    finally:
        qapp.removeEventFilter(events)
