"""Launchers, raw clients and stand-in apps for the single-instance tests."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtNetwork import QLocalSocket

LAUNCHER = """
import sys
from sdstudio.ui.single_instance import hand_over
sys.exit(0 if hand_over(sys.argv[1], sys.argv[2:]) else 1)
"""


def private_runtime_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A fresh ``$XDG_RUNTIME_DIR`` (mode 0700, short enough for socket paths)."""
    folder = tmp_path_factory.mktemp("run")
    folder.chmod(0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    return folder


def hand_over_from_process(qtbot, name: str, files: list, cwd: Path | None = None) -> bool:
    """Run the launcher side in its own process, as a second launch does."""
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, name, *map(str, files)], cwd=cwd)
    qtbot.waitUntil(lambda: launcher.poll() is not None, timeout=20_000)
    return launcher.returncode == 0


def send_raw(name: str, data: bytes) -> QLocalSocket:
    """A client that writes raw bytes and leaves the connection open."""
    client = QLocalSocket()
    client.connectToServer(name)
    assert client.waitForConnected(1000)
    client.write(data)
    client.flush()
    return client


STAND_IN = """
import socket, sys
path, reply = sys.argv[1], bytes.fromhex(sys.argv[2])
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
listener.listen()
listener.settimeout(20)
print("ready", flush=True)
received = b""
try:
    connection, _ = listener.accept()
    connection.settimeout(20)
    while b"\\n" not in received:
        chunk = connection.recv(65536)
        if not chunk:
            break
        received += chunk
    else:
        connection.sendall(reply)
    connection.close()
except OSError:
    pass
print(received.hex(), flush=True)
"""


class StandInApp:
    """Another process listening on ``path``: it reads one line, answers ``reply``, and exits.

    It stands for whatever may answer on the socket (another user's listener,
    a broken app). After the ``with`` block, ``received`` holds what a
    launcher sent it.
    """

    def __init__(self, path: str, reply: bytes) -> None:
        self.path = path
        self.received = b""
        self.process = subprocess.Popen(
            [sys.executable, "-c", STAND_IN, path, reply.hex()],
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == b"ready\n"

    def __enter__(self) -> StandInApp:
        return self

    def __exit__(self, *exc_info: object) -> None:
        stdout, _ = self.process.communicate(timeout=30)
        self.received = bytes.fromhex(stdout.decode().strip())
        if os.path.exists(self.path):
            os.unlink(self.path)


HOLDER = """
import select, socket, sys
path, count, keep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = []
for _ in range(count):
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    held.append(client)
print("ready", flush=True)
still_open = list(held)
while len(still_open) > keep:
    readable, _, _ = select.select(still_open, [], [], 20)
    if not readable:
        break
    for client in readable:
        try:
            data = client.recv(1)
        except OSError:
            data = b""
        if not data:
            still_open.remove(client)
print("dropped", count - len(still_open), flush=True)
sys.stdin.read()
"""


def hold_connections(path: str, count: int, keep: int) -> subprocess.Popen:
    """A process with ``count`` idle connections to ``path``, kept until its stdin closes.

    Once the server has closed all but ``keep`` of them (or after 20 s of
    nothing), it prints ``dropped N``; see :func:`dropped_by_server`.
    """
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, path, str(count), str(keep)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == b"ready\n"
    return holder


def dropped_by_server(qtbot, holder: subprocess.Popen, timeout_ms: int = 10_000) -> int:
    """How many of the holder's connections the server closed, once it has closed enough."""
    assert holder.stdout is not None
    stdout = holder.stdout
    qtbot.waitUntil(lambda: bool(select.select([stdout], [], [], 0)[0]), timeout=timeout_ms)
    words = stdout.readline().split()
    assert words[:1] == [b"dropped"], words
    return int(words[1])
