"""One window per user and data folder: a second launch hands its files to the first.

A file manager runs ``sdstudio IMAGE`` for every image the user opens with it.
The first launch listens on a local socket (a Unix socket the user alone can
use, or a named pipe on Windows); a later launch with the same data folder
connects, sends the absolute paths of its files, waits for the running app to
acknowledge them, and exits without building a window.

The protocol is one line of JSON each way::

    launcher -> app:  {"version": 1, "files": ["/abs/a.png", ...]}
    app -> launcher:  {"version": 1, "ok": true}

The server side is asynchronous (driven by ``readyRead``), so a client that
connects and sends nothing, or sends garbage, never blocks the GUI thread.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
from collections.abc import Iterable

from PySide6.QtCore import QEvent, QObject, QTimer, Signal
from PySide6.QtGui import QFileOpenEvent
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from sdstudio.engine.paths import AppPaths

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 1 << 20
"""Longer messages are refused: thousands of paths fit well under this."""
CONNECT_TIMEOUT_MS = 500
REPLY_TIMEOUT_MS = 5_000
"""How long a launcher waits for the running app to acknowledge its files."""
CLIENT_TIMEOUT_MS = 5_000
"""How long the running app keeps a connection that has not sent a whole message."""


def server_name(paths: AppPaths) -> str:
    """The local socket name for this user and data folder.

    Hashed, because Unix socket paths are limited to about 100 bytes; the user
    is part of it because Windows pipe names are shared by all users.
    """
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    digest = hashlib.sha256(f"{user}\0{paths.data_dir}".encode()).hexdigest()
    return f"sdstudio-{digest[:20]}"


def encode_message(payload: dict[str, object]) -> bytes:
    """One protocol line."""
    return json.dumps({"version": PROTOCOL_VERSION, **payload}).encode("utf-8") + b"\n"


def decode_files(line: bytes) -> list[str] | None:
    """The files of a launcher's message, or ``None`` when it is not a valid message."""
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(message, dict) or message.get("version") != PROTOCOL_VERSION:
        return None
    files = message.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        return None
    return files


def hand_over(name: str, files: Iterable[str], timeout_ms: int = REPLY_TIMEOUT_MS) -> bool:
    """Give ``files`` to the app already listening on ``name``; True once it acknowledges.

    Relative paths are made absolute here, against this process's working
    folder. Blocking, so it is meant for start-up, before any window exists.
    """
    message = encode_message({"files": [os.path.abspath(f) for f in files]})
    socket = QLocalSocket()
    socket.connectToServer(name)
    if not socket.waitForConnected(CONNECT_TIMEOUT_MS):
        return False
    try:
        socket.write(message)
        if not socket.waitForBytesWritten(timeout_ms):
            return False
        reply = bytearray()
        while b"\n" not in reply and len(reply) < 4096:
            if not socket.bytesAvailable() and not socket.waitForReadyRead(timeout_ms):
                break
            reply += socket.readAll().data()
        try:
            answer = json.loads(bytes(reply).split(b"\n", 1)[0].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return False
        return isinstance(answer, dict) and answer.get("ok") is True
    finally:
        socket.abort()


class _Connection(QObject):
    """One launcher talking to the server: buffers its line, with a deadline."""

    received = Signal(list)

    def __init__(self, socket: QLocalSocket, parent: QObject) -> None:
        super().__init__(parent)
        self.socket = socket
        self.buffer = bytearray()
        self.answered = False
        self.closed = False
        socket.setParent(self)
        socket.readyRead.connect(self._read)
        socket.disconnected.connect(self.close)
        self.timer = QTimer(self, singleShot=True, interval=CLIENT_TIMEOUT_MS)
        self.timer.timeout.connect(self.close)
        self.timer.start()

    def _read(self) -> None:
        if self.answered or self.closed:  # one message per connection
            return
        self.buffer += self.socket.readAll().data()
        end = self.buffer.find(b"\n")
        if end < 0:
            if len(self.buffer) > MAX_MESSAGE_BYTES:
                log.warning("Ignored an oversized message from another launch")
                self.close()
            return
        files = decode_files(bytes(self.buffer[:end])) if end <= MAX_MESSAGE_BYTES else None
        if files is None:
            log.warning("Ignored a malformed message from another launch")
            self.close()
            return
        self.answered = True
        self.timer.stop()
        self.socket.write(encode_message({"ok": True}))
        self.socket.flush()
        self.received.emit(files)
        self.socket.disconnectFromServer()

    def close(self) -> None:
        """Drop the connection and forget it."""
        if self.closed:
            return
        self.closed = True
        self.timer.stop()
        self.socket.abort()
        self.deleteLater()


class InstanceServer(QObject):
    """Listens for later launches and emits the files they hand over.

    ``files_received`` carries a list of absolute paths, possibly empty: an
    empty list still means "the user launched the app again, show the window".
    """

    files_received = Signal(list)

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.server = QLocalServer(self)
        self.server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self.server.newConnection.connect(self._accept)

    def listen(self) -> bool:
        """Start listening, replacing a socket left behind by a crashed app.

        Call only after :func:`hand_over` found nobody answering on the name.
        """
        QLocalServer.removeServer(self.name)
        if self.server.listen(self.name):
            log.info("Listening for other launches on %s", self.server.fullServerName())
            return True
        log.warning("Cannot listen for other launches: %s", self.server.errorString())
        return False

    def close(self) -> None:
        """Stop listening (and remove the socket file)."""
        self.server.close()

    def _accept(self) -> None:
        while self.server.hasPendingConnections():
            socket = self.server.nextPendingConnection()
            if socket is not None:
                connection = _Connection(socket, self)
                connection.received.connect(self._on_received)

    def _on_received(self, files: list[str]) -> None:
        log.info("Another launch handed over %d file(s)", len(files))
        self.files_received.emit(files)


class FileOpenEvents(QObject):
    """Files the system asks the running app to open (macOS Finder's "Open With").

    On macOS a file opened while the app runs arrives as a ``FileOpen`` event,
    not as a new launch. Install on the application with ``installEventFilter``.
    """

    files_received = Signal(list)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Emit ``files_received`` for a ``FileOpen`` event and consume it."""
        if event.type() == QEvent.Type.FileOpen and isinstance(event, QFileOpenEvent):
            path = event.file()
            if path:
                self.files_received.emit([path])
                return True
        return super().eventFilter(watched, event)


def claim_instance(paths: AppPaths, files: Iterable[str]) -> InstanceServer | None:
    """Hand ``files`` to a running app, or become the running app.

    Returns ``None`` when a running app took the files (this launch should
    exit), else a listening :class:`InstanceServer` (or one that could not
    listen, in which case the app simply runs on its own).
    """
    name = server_name(paths)
    if hand_over(name, files):
        return None
    server = InstanceServer(name)
    server.listen()
    return server
