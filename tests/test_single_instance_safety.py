"""The single-instance socket against other users and against floods of bad clients."""

from __future__ import annotations

import os
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from instance_helpers import (
    StandInApp,
    dropped_by_server,
    hand_over_from_process,
    hold_connections,
    private_runtime_dir,
    send_raw,
)
from PySide6.QtNetwork import QLocalSocket

from sdstudio.engine.paths import AppPaths
from sdstudio.single_instance_socket import (
    PRIVATE_FOLDER_NAME,
    foreign_peer,
    peer_uid,
    private_folder_problem,
    server_name,
)
from sdstudio.ui.single_instance import (
    MAX_CONNECTIONS,
    InstanceServer,
    claim_instance,
    decode_files,
    hand_over,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets and user ids")
linux_only = pytest.mark.skipif(
    not hasattr(socket, "SO_PEERCRED"), reason="the kernel names the peer on Linux only"
)
OK_REPLY = b'{"version": 1, "ok": true}\n'
UNCONNECTED = QLocalSocket.LocalSocketState.UnconnectedState


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    return private_runtime_dir(tmp_path_factory, monkeypatch)


@pytest.fixture
def server(qtbot, sdstudio_home: Path):
    instance = InstanceServer(server_name(AppPaths.default()))
    assert instance.listen()
    yield instance
    instance.close()


@contextmanager
def as_another_user() -> Iterator[None]:
    """Inside, this process believes it runs as another user than its peers and folders."""
    real = os.getuid()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "getuid", lambda: real + 1)
        yield


# Where the socket lives


def test_the_socket_lives_in_the_runtime_folder_and_only_its_user_may_use_it(
    server, runtime_dir: Path
) -> None:
    socket_file = Path(server.name)
    assert socket_file.parent == runtime_dir
    assert server.server.fullServerName() == str(socket_file)
    mode = socket_file.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) & 0o077 == 0


def test_without_a_runtime_folder_a_private_folder_in_the_cache_is_made(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    paths = AppPaths.under(tmp_path_factory.mktemp("h"))
    name = server_name(paths, environ={})
    assert name is not None
    folder = Path(name).parent
    assert folder == paths.cache_dir / PRIVATE_FOLDER_NAME
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_data_folder_too_deep_for_a_socket_path_uses_a_private_temporary_folder(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("t")))
    name = server_name(AppPaths.under(tmp_path / ("deep" * 30)), environ={})
    assert name is not None
    folder = Path(name).parent
    assert folder == Path(tempfile.tempdir) / f"sdstudio-{os.getuid()}"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_runtime_folder_others_may_enter_is_not_used(
    runtime_dir: Path, tmp_path_factory: pytest.TempPathFactory, caplog
) -> None:
    runtime_dir.chmod(0o755)
    paths = AppPaths.under(tmp_path_factory.mktemp("h"))
    name = server_name(paths)
    assert name is not None and Path(name).parent == paths.cache_dir / PRIVATE_FOLDER_NAME
    assert "others may use it (mode 755" in caplog.text


def test_folders_owned_by_someone_else_are_refused(
    qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    paths = AppPaths.under(tmp_path / "home")
    squatted = tmp_path / f"sdstudio-{os.getuid() + 1}"
    squatted.mkdir(mode=0o700)  # made before the app ever ran, by "another user"
    with as_another_user():
        assert server_name(paths) is None
        server = claim_instance(paths, ["/a.png"])
    assert "belongs to another user" in caplog.text
    assert hand_over(None, ["/a.png"]) is False
    assert server is not None and not server.server.isListening()  # a window of its own


@pytest.mark.parametrize("kind", ["link", "file", "open"])
def test_a_folder_that_is_not_private_is_refused(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "ipc"
    if kind == "link":
        target = tmp_path / "elsewhere"
        target.mkdir(mode=0o700)
        folder.symlink_to(target)
    elif kind == "file":
        folder.write_text("")
    else:
        folder.mkdir()
        folder.chmod(0o777)
    assert private_folder_problem(folder, create=True) is not None
    assert private_folder_problem(tmp_path / "fresh", create=True) is None


# Who is at the other end


@linux_only
def test_the_peer_of_a_socketpair_is_this_user() -> None:
    first, second = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with first, second:
        assert peer_uid(first.fileno()) == os.getuid()
        assert foreign_peer(first.fileno()) is None
        first.sendall(b"still open")  # the check leaves the descriptor alone
        assert second.recv(16) == b"still open"
    with open(__file__, "rb") as not_a_socket:
        assert peer_uid(not_a_socket.fileno()) is None
        assert foreign_peer(not_a_socket.fileno()) is not None
    assert peer_uid(-1) is None


@linux_only
def test_a_launch_gives_nothing_to_a_listener_of_another_user(
    qtbot, sdstudio_home: Path, caplog
) -> None:
    name = server_name(AppPaths.default())
    with StandInApp(name, OK_REPLY) as squatter, as_another_user():
        assert hand_over(name, ["/secret/holiday.png"]) is False
    assert squatter.received == b""
    assert "belongs to another user" in caplog.text


@linux_only
def test_the_app_drops_a_connection_from_another_user(qtbot, server, caplog) -> None:
    received: list[list[str]] = []
    server.files_received.connect(received.append)
    with as_another_user():
        client = send_raw(server.name, b'{"version": 1, "files": ["/planted.png"]}\n')
        qtbot.waitUntil(lambda: client.state() == UNCONNECTED)
    assert received == [] and client.readAll().data() == b""
    assert "Dropped a connection" in caplog.text
    assert hand_over_from_process(qtbot, server.name, ["/x.png"])
    assert received == [["/x.png"]]


# Floods and bad messages


def test_idle_connections_are_capped_and_a_launch_still_gets_through(
    qtbot, server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sdstudio.ui.single_instance.CLIENT_TIMEOUT_MS", 60_000)
    holder = hold_connections(server.name, 40, keep=MAX_CONNECTIONS)
    try:
        assert dropped_by_server(qtbot, holder) == 40 - MAX_CONNECTIONS
        received: list[list[str]] = []
        server.files_received.connect(received.append)
        assert hand_over_from_process(qtbot, server.name, ["/after-the-flood.png"])
        assert received == [["/after-the-flood.png"]]
    finally:
        holder.communicate()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc")
def test_the_app_listens_again_after_running_out_of_descriptors(
    qtbot, sdstudio_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import resource

    monkeypatch.setattr("sdstudio.ui.single_instance.RELISTEN_INTERVAL_MS", 100)
    server = InstanceServer(server_name(AppPaths.default()))
    assert server.listen()
    holder = hold_connections(server.name, 40, keep=10)  # in the backlog until accepted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 4, hard))
    try:
        # accept() fails with EMFILE after a few, and Qt closes the listening socket,
        # which resets the connections still waiting in its backlog
        assert dropped_by_server(qtbot, holder) >= 30
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        holder.communicate()
    try:
        qtbot.waitUntil(server.server.isListening, timeout=10_000)
        received: list[list[str]] = []
        server.files_received.connect(received.append)
        assert hand_over_from_process(qtbot, server.name, ["/later.png"])
        assert received == [["/later.png"]]
    finally:
        server.close()


def test_a_socket_another_process_answers_on_is_not_taken_over(
    qtbot, sdstudio_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sdstudio.ui.single_instance.RELISTEN_INTERVAL_MS", 50)
    name = server_name(AppPaths.default())
    assert name is not None
    late = InstanceServer(name)
    assert late.listen()
    late.server.close()  # as when the system closed it; meanwhile another app took the name
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(name)
    other.listen()
    inode = os.stat(name).st_ino
    try:
        assert InstanceServer(name).listen() is False
        qtbot.wait(300)  # several rounds of the late server trying to listen again
        assert os.stat(name).st_ino == inode and not late.server.isListening()
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(name)  # still the other app's socket
        client.close()
    finally:
        late.close()
        other.close()


def test_a_deeply_nested_message_is_dropped_without_an_exception(qtbot, server) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    assert decode_files(nested) is None
    received: list[list[str]] = []
    server.files_received.connect(received.append)
    with qtbot.capture_exceptions() as exceptions:
        client = send_raw(server.name, nested + b"\n")
        qtbot.waitUntil(lambda: client.state() == UNCONNECTED, timeout=10_000)
    assert exceptions == []
    assert received == [] and client.readAll().data() == b""
    assert hand_over_from_process(qtbot, server.name, ["/fine.png"])
    assert received == [["/fine.png"]]


def test_a_deeply_nested_reply_does_not_break_the_launch(sdstudio_home: Path) -> None:
    name = server_name(AppPaths.default())
    with StandInApp(name, b"[" * 2048 + b"]" * 2048 + b"\n"):
        assert hand_over(name, ["/a.png"]) is False
